"""Where a trained model comes from: a file, a trial folder, or an MLflow run.

`--checkpoint` takes a `model.pt` / `checkpoint.pt` file, a folder holding one
(a Tune checkpoint folder), an MLflow run id, or a `runs:/<run id>[/path]` URI.
A run id alone means that run's `model.pt` artifact, which every finished
sweep trial logs.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from segclass.errors import CheckpointError

MODEL_FILES = ("model.pt", "checkpoint.pt")
_RUN_ID = re.compile(r"[0-9a-f]{32}")


@contextmanager
def checkpoint_file(spec: str, tracking_uri: str | None = None) -> Iterator[tuple[Path, str]]:
    """(a local file holding the model that `spec` names, where it came from), for the `with` block.

    An MLflow artifact is downloaded into a temporary folder that is removed
    when the block ends (load the model inside it); its origin reads
    `runs:/<run id>/model.pt in <tracking URI>`, which predictions record.
    """
    path = Path(spec)
    if path.is_dir():
        for name in MODEL_FILES:
            if (path / name).is_file():
                yield path / name, str(path / name)
                return
        raise CheckpointError(f"folder {path} holds neither {' nor '.join(MODEL_FILES)}")
    if path.is_file():
        yield path, str(path)
        return
    if spec.startswith("runs:/") or _RUN_ID.fullmatch(spec):
        folder = tempfile.mkdtemp(prefix="segclass-model-")
        try:
            yield _download(spec if spec.startswith("runs:/") else f"runs:/{spec}", tracking_uri, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    raise CheckpointError(
        f"checkpoint {spec} is neither a file, a folder, an MLflow run id nor a runs:/ URI; pass the trial's "
        "model.pt or checkpoint.pt, or the run id shown in the MLflow UI"
    )


def _download(uri: str, tracking_uri: str | None, folder: str) -> tuple[Path, str]:
    import mlflow
    from mlflow.artifacts import download_artifacts

    from segclass.schema import default_tracking_uri

    run_and_path = uri[len("runs:/"):].strip("/")
    if "/" not in run_and_path:  # a run alone: its model.pt
        uri = f"runs:/{run_and_path}/{MODEL_FILES[0]}"
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(Path("results"))
    mlflow.set_tracking_uri(tracking_uri)
    try:
        local = Path(download_artifacts(artifact_uri=uri, dst_path=folder))
    except Exception as exc:  # MLflow raises several unrelated types for a missing run or artifact
        raise CheckpointError(
            f"cannot fetch {uri} from the MLflow store {tracking_uri}: {exc}; check the run id (MLflow UI) and "
            "--tracking-uri; runs logged before model.pt existed need --checkpoint <trial folder>/checkpoint.pt"
        ) from exc
    return local, f"{uri} in {_without_credentials(tracking_uri)}"


def _without_credentials(uri: str) -> str:
    """The tracking URI as predictions record it: `scheme://user:password@host` loses `user:password@`."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1", uri)

