"""The sweep's storage: a local or shared folder, or any URI pyarrow understands (s3://, gs://, hdfs://).

Layout under `<storage>/<sweep name>/`:

    sweep.json                 what the sweep is (dataset, data fingerprint, settings, grid points)
    trials/<identity>/         one folder per trial, addressed by its identity digest:
        checkpoint.pt          weights, optimizer, RNG, metric history (written every N epochs)
        best-<epoch>.pt        best-epoch weights, written only when they change
        final/                 report.json and the artifacts for MLflow, written once at the end
    tune-<n>/                  Ray Tune's own folder of the n-th driver run (logs, result.json)

A trial, whichever Tune experiment runs it, finds its own checkpoint here, so
resuming a killed sweep and growing it are the same operation.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def is_local(uri: str) -> bool:
    """A plain path or file:// URI (written with the standard library, atomically by rename)."""
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> Path:
    """The absolute local path of a local URI."""
    return Path(uri[len("file://"):] if uri.startswith("file://") else uri).resolve()


def absolute(uri: str) -> str:
    """Tune and pyarrow want an absolute path or a URI."""
    return str(local_path(uri)) if is_local(uri) else uri.rstrip("/")


class Storage:
    """A folder addressed by URI: read, write (atomically) and remove files under it."""

    def __init__(self, uri: str) -> None:
        self.uri = absolute(uri)
        if is_local(self.uri):
            self.fs, self.root = None, self.uri
        else:
            from pyarrow import fs

            self.fs, self.root = fs.FileSystem.from_uri(self.uri)

    def path(self, *parts: str) -> str:
        """The filesystem path of `parts` under this folder (for the filesystem in `self.fs`)."""
        return "/".join([self.root.rstrip("/"), *parts])

    def child(self, *parts: str) -> "Storage":
        """The storage of a subfolder."""
        return Storage("/".join([self.uri.rstrip("/"), *parts]))

    def exists(self, name: str) -> bool:
        """Whether a file or folder `name` exists under this folder ("": the folder itself)."""
        if self.fs is None:
            return Path(self.path(name) if name else self.root).exists()
        from pyarrow import fs

        return self.fs.get_file_info(self.path(name) if name else self.root).type != fs.FileType.NotFound

    def list(self, name: str = "") -> list[str]:
        """Names directly under `name` (empty when it does not exist)."""
        if self.fs is None:
            folder = Path(self.path(name)) if name else Path(self.root)
            return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        from pyarrow import fs

        infos = self.fs.get_file_info(fs.FileSelector(self.path(name) if name else self.root, allow_not_found=True))
        return sorted(Path(i.path).name for i in infos)

    def read_bytes(self, name: str) -> bytes:
        """The content of file `name`."""
        if self.fs is None:
            return Path(self.path(name)).read_bytes()
        with self.fs.open_input_stream(self.path(name)) as stream:
            return stream.read()

    def write_bytes(self, name: str, payload: bytes) -> None:
        """Readers see the old file or the whole new one, never half of one."""
        if self.fs is None:
            from segclass.files import atomic_write

            target = Path(self.path(name))
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, lambda temporary: temporary.write_bytes(payload))
            return
        self.fs.create_dir(self.path(*name.split("/")[:-1]) if "/" in name else self.root, recursive=True)
        with self.fs.open_output_stream(self.path(name)) as stream:  # object stores publish whole objects
            stream.write(payload)

    def create_exclusive(self, name: str, payload: bytes) -> bool:
        """Write `name` only where it does not exist; True when this call created it.

        On a local or shared (NFS) folder the whole file is written under a
        temporary name and hard-linked into place: the link fails when `name`
        exists, atomically, and a reader never sees half of it. On S3 (with
        boto3) and Google Cloud Storage (with google-cloud-storage) the object
        is written by a conditional write the store itself decides (S3
        `If-None-Match: *`, GCS `ifGenerationMatch=0`). Elsewhere, or without
        those libraries, the file is written when absent and read back after a
        pause: only the writer whose bytes are there wins, and two writers
        within the pause remain a window (said once, with the package to
        install; docs/sweep.md).
        """
        if self.fs is None:
            import os

            target = Path(self.path(name))
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            try:
                with os.fdopen(handle, "wb") as file:
                    file.write(payload)
                    file.flush()
                    os.fsync(file.fileno())
                os.link(temporary, target)
                return True
            except FileExistsError:
                return False
            finally:
                Path(temporary).unlink(missing_ok=True)
        import time

        created = self._create_exclusive_in_object_store(name, payload)
        if created is not None:
            return created
        if self.exists(name):
            return False
        self.write_bytes(name, payload)
        time.sleep(1.0)
        return self.exists(name) and self.read_bytes(name) == payload

    def _create_exclusive_in_object_store(self, name: str, payload: bytes) -> bool | None:
        """The store's own conditional write; None where this store or this machine has none."""
        scheme = self.uri.partition("://")[0]
        bucket, _, key = self.path(name).partition("/")
        if scheme == "s3":
            try:
                import boto3
                from botocore.exceptions import BotoCoreError, ClientError
            except ImportError:
                return _no_conditional_write(self.uri, "boto3")
            try:  # boto3 reads the same AWS_* settings (AWS_ENDPOINT_URL too) as pyarrow
                boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=payload, IfNoneMatch="*")
                return True
            except ClientError as error:  # 412: the object exists; 409: a concurrent conditional write won
                if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
                    return False
                raise OSError(f"{self.uri}/{name}: {error}") from error
            except BotoCoreError as error:  # no credentials, endpoint unreachable: the caller names the flag
                raise OSError(f"{self.uri}/{name}: {error}") from error
        if scheme in ("gs", "gcs"):
            try:
                from google.api_core.exceptions import GoogleAPIError, PreconditionFailed
                from google.auth.exceptions import GoogleAuthError
                from google.cloud import storage
            except ImportError:
                return _no_conditional_write(self.uri, "google-cloud-storage")
            try:
                storage.Client().bucket(bucket).blob(key).upload_from_string(payload, if_generation_match=0)
                return True
            except PreconditionFailed:
                return False
            except (GoogleAPIError, GoogleAuthError) as error:
                raise OSError(f"{self.uri}/{name}: {error}") from error
        return _no_conditional_write(self.uri, "")

    def rename_away(self, name: str, new_name: str) -> bool:
        """Move `name` to `new_name`; False when `name` was gone (someone else moved it first). Atomic locally."""
        if self.fs is None:
            import os

            try:
                os.rename(self.path(name), self.path(new_name))
                return True
            except FileNotFoundError:
                return False
        try:
            if not self.exists(name):
                return False
            self.fs.move(self.path(name), self.path(new_name))  # copy + delete on object stores
            return True
        except (FileNotFoundError, OSError):  # another driver moved it first
            return False

    def read_json(self, name: str) -> dict[str, Any] | None:
        """The JSON file `name`, or None when it does not exist."""
        return json.loads(self.read_bytes(name)) if self.exists(name) else None

    def write_json(self, name: str, value: dict[str, Any]) -> None:
        """Write `value` as JSON, atomically."""
        self.write_bytes(name, json.dumps(value, indent=1, sort_keys=True).encode())

    def delete(self, name: str) -> None:
        """Remove a file or a folder; missing is fine."""
        if self.fs is None:
            target = Path(self.path(name))
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
            return
        from pyarrow import fs

        info = self.fs.get_file_info(self.path(name))
        if info.type == fs.FileType.Directory:
            self.fs.delete_dir(self.path(name))
        elif info.type == fs.FileType.File:
            self.fs.delete_file(self.path(name))

    def download(self, name: str) -> Path:
        """A local folder holding `name` (the folder itself when storage is local). Caller removes copies."""
        if self.fs is None:
            return Path(self.path(name))
        from pyarrow import fs

        target = Path(tempfile.mkdtemp(prefix="segclass-download-"))
        fs.copy_files(self.path(name), str(target), source_filesystem=self.fs,
                      destination_filesystem=fs.LocalFileSystem())
        return target


_WARNED: set[str] = set()


def _no_conditional_write(uri: str, package: str) -> None:
    """Say once per storage that its exclusive creates fall back to write-then-read-back."""
    if uri not in _WARNED:
        _WARNED.add(uri)
        fix = (f"pip install {package} for the store's conditional write" if package
               else "use a shared folder, s3:// or gs://")
        log.warning("%s: no conditional write here; the sweep's lock is taken by write-then-read-back, which two "
                    "drivers starting within a second can both pass (%s)", uri, fix)
    return None
