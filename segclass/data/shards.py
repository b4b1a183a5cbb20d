"""HDF5 patch shards with a checksummed JSON manifest.

Preprocessing a dataset (reading slides, extracting and normalizing patches)
is done once; every trial of a sweep then reads the same few files. Layout of
a cache folder:

    manifest.json              dataset, class names, counts, build parameters,
                               package version, SHA-256 per file, the source
                               fingerprint (is the cache current?) and the data
                               fingerprint (the content's identity, data_fingerprint)
    train-seg-00000.h5 ...     training patches of one kind, SHARD_ROWS rows each:
                               images (N,P,P,3) u1, masks (N,P,P) u1 (seg only),
                               labels (N,) i2, source (N,) str, coords (N,2) i4
                               (top, left at the working magnification); attrs split, kind
    val.h5, test.h5            whole evaluation images: one group per image with
                               rgb (H,W,3) u1, mask (H,W) u1 and tissue (h,w) u1 (the
                               foreground predict finds, on a thumbnail at attr
                               tissue_scale); attrs name, source (the file read)

Writing goes into a temporary sibling folder that is renamed into place at the
end, so an interrupted build never leaves a cache that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

import segclass
from segclass.data.arrays import DatasetArrays, EvalImage
from segclass.errors import DatasetError
from segclass.files import make_shareable
from segclass.preprocess.foreground import Foreground

#: 2: manifest records the preprocessing (stain reference) models need.
#: 3: evaluation images carry predict's tissue mask and predict's stain mapping.
#: 4: sources relative to the dataset folder; a data fingerprint from the shards' content.
FORMAT_VERSION = 4
MANIFEST = "manifest.json"
SHARD_ROWS = 1024
#: Rows per HDF5 chunk: one patch, so a random batch decompresses only its own rows.
CHUNK_ROWS = 1


class CacheError(DatasetError):
    """A shard cache is missing, incomplete, tampered with or from an incompatible version."""


def sha256_of(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------
def data_fingerprint(dataset: str, class_names: list[str], build_params: dict[str, Any],
                     files: list[dict[str, Any]]) -> str:
    """A cache's content identity: the shards' SHA-256 and the settings they were built with.

    Paths, mtimes, the build date and the package version are not in it:
    copying a cache (or rebuilding it from copied sources) keeps the identity
    of every trial trained on it, and a changed pixel changes it.
    """
    content = sorted((entry["file"], entry["sha256"]) for entry in files)
    record = [FORMAT_VERSION, dataset, list(class_names), build_params, content]
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def write_cache(arrays: DatasetArrays, out_dir: str | Path, build_params: dict[str, Any],
                source_fingerprint: str, extra: dict[str, Any] | None = None) -> Path:
    """Write `arrays` as shards plus manifest into `out_dir`, atomically."""
    import h5py

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    make_shareable(staging)
    try:
        files: list[dict[str, Any]] = []
        kinds = (("seg", arrays.seg_images, arrays.seg_masks, arrays.seg_labels, arrays.seg_sources, arrays.seg_coords),
                 ("cls", arrays.cls_images, None, arrays.cls_labels, arrays.cls_sources, arrays.cls_coords))
        for kind, images, masks, labels, sources, coords in kinds:
            for shard, start in enumerate(range(0, max(len(images), 1), SHARD_ROWS)):
                rows = slice(start, start + SHARD_ROWS)
                name = f"train-{kind}-{shard:05d}.h5"
                with h5py.File(staging / name, "w") as h5:
                    h5.attrs.update(split="train", kind=kind, format_version=FORMAT_VERSION)
                    _dataset(h5, "images", images[rows])
                    if masks is not None:
                        _dataset(h5, "masks", masks[rows])
                    h5.create_dataset("labels", data=labels[rows].astype(np.int16))
                    h5.create_dataset("source", data=np.asarray(_or_blank(sources, len(images))[rows], dtype=object),
                                      dtype=h5py.string_dtype())
                    h5.create_dataset("coords", data=_or_zeros(coords, len(images))[rows].astype(np.int32))
                files.append({"file": name, "split": "train", "kind": kind, "rows": int(len(images[rows]))})
        for split, items in (("val", arrays.val), ("test", arrays.test)):
            name = f"{split}.h5"
            with h5py.File(staging / name, "w") as h5:
                h5.attrs.update(split=split, kind="image", format_version=FORMAT_VERSION)
                for index, item in enumerate(items):
                    group = h5.create_group(f"{index:05d}")
                    group.attrs.update(name=item.name, source=item.source)
                    group.create_dataset("rgb", data=item.rgb, chunks=True, compression="lzf")
                    group.create_dataset("mask", data=item.mask, chunks=True, compression="lzf")
                    if item.tissue is not None:
                        group.attrs["tissue_scale"] = item.tissue.scale
                        group.create_dataset("tissue", data=item.tissue.mask.astype(np.uint8), chunks=True,
                                             compression="lzf")
            files.append({"file": name, "split": split, "kind": "image", "rows": len(items)})
        for entry in files:
            entry["sha256"] = sha256_of(staging / entry["file"])
        manifest = {
            "format_version": FORMAT_VERSION,
            "dataset": arrays.name,
            "class_names": list(arrays.class_names),
            "counts": counts_of(arrays),
            "build_params": build_params,
            "source_fingerprint": source_fingerprint,
            "data_fingerprint": data_fingerprint(arrays.name, list(arrays.class_names), build_params, files),
            "segclass_version": segclass.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files,
            **(extra or {}),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _dataset(h5, name: str, data: np.ndarray) -> None:
    chunks = (min(CHUNK_ROWS, max(1, len(data))),) + data.shape[1:] if len(data) else None
    h5.create_dataset(name, data=data, chunks=chunks, compression="lzf" if len(data) else None)


def _or_blank(values: np.ndarray | None, count: int) -> np.ndarray:
    return np.asarray(values, dtype=object) if values is not None else np.full(count, "", dtype=object)


def _or_zeros(values: np.ndarray | None, count: int) -> np.ndarray:
    return np.asarray(values) if values is not None else np.zeros((count, 2), np.int32)


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    """Replace out_dir by staging; the old cache is removed only after the rename."""
    if out_dir.exists():
        retired = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, retired)
        os.replace(staging, out_dir)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, out_dir)


def counts_of(arrays: DatasetArrays) -> dict[str, Any]:
    names = list(arrays.class_names)

    def per_class(labels: np.ndarray) -> dict[str, int]:
        counts = np.bincount(labels, minlength=len(names)) if len(labels) else np.zeros(len(names), int)
        return {name: int(n) for name, n in zip(names, counts)}

    def pixels(items: Iterable[EvalImage]) -> dict[str, int]:
        total = np.zeros(len(names), np.int64)
        for item in items:
            total += np.bincount(item.mask.ravel(), minlength=len(names))[: len(names)]
        return {name: int(n) for name, n in zip(names, total)}

    return {
        "train": {"seg": per_class(arrays.seg_labels), "cls": per_class(arrays.cls_labels)},
        "val": {"images": len(arrays.val), "pixels": pixels(arrays.val)},
        "test": {"images": len(arrays.test), "pixels": pixels(arrays.test)},
    }


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------
def read_manifest(cache_dir: str | Path) -> dict[str, Any]:
    cache_dir = Path(cache_dir)
    path = cache_dir / MANIFEST
    if not path.is_file():
        raise CacheError(f"{path} is missing: {cache_dir} is not a built cache; build it with "
                         f"`python -m segclass.data build DATASET --root SOURCE --out {cache_dir}`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CacheError(f"{path} is not valid JSON ({exc}); rebuild the cache") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CacheError(
            f"{path} has format version {manifest.get('format_version')} but this segclass "
            f"({segclass.__version__}) reads version {FORMAT_VERSION}; rebuild the cache"
        )
    return manifest


def verify_cache(cache_dir: str | Path) -> list[str]:
    """Problems found (missing files, checksum mismatches); empty when all is well."""
    cache_dir = Path(cache_dir)
    problems = []
    for entry in read_manifest(cache_dir)["files"]:
        path = cache_dir / entry["file"]
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif sha256_of(path) != entry["sha256"]:
            problems.append(f"{path} does not match its SHA-256 in the manifest (truncated or modified)")
    return problems


def read_cache(cache_dir: str | Path, verify: bool = True) -> DatasetArrays:
    """Load a cache into memory as DatasetArrays, checking checksums first."""
    import h5py

    cache_dir = Path(cache_dir)
    manifest = read_manifest(cache_dir)
    if verify:
        problems = verify_cache(cache_dir)
        if problems:
            raise CacheError("; ".join(problems) + f"; rebuild the cache in {cache_dir}")
    parts: dict[str, dict[str, list]] = {k: {"images": [], "masks": [], "labels": [], "source": [], "coords": []}
                                        for k in ("seg", "cls")}
    evaluation: dict[str, list[EvalImage]] = {"val": [], "test": []}
    for entry in manifest["files"]:
        path = cache_dir / entry["file"]
        try:
            with h5py.File(path, "r") as h5:
                if entry["kind"] == "image":
                    for key in sorted(h5):
                        evaluation[entry["split"]].append(_eval_image(h5[key]))
                    continue
                part = parts[entry["kind"]]
                for key in ("images", "masks", "labels", "coords"):
                    if key in h5:
                        part[key].append(h5[key][()])
                part["source"].append(h5["source"].asstr()[()])
        except (OSError, KeyError) as exc:
            raise CacheError(f"cannot read shard {path}: {exc}; rebuild the cache in {cache_dir}") from exc

    def joined(kind: str, key: str, empty: np.ndarray) -> np.ndarray:
        pieces = parts[kind][key]
        return np.concatenate(pieces) if pieces else empty

    patch = manifest["build_params"].get("patch_size", 128)
    no_images = np.zeros((0, patch, patch, 3), np.uint8)
    arrays = DatasetArrays(
        name=manifest["dataset"],
        class_names=tuple(manifest["class_names"]),
        seg_images=joined("seg", "images", no_images),
        seg_masks=joined("seg", "masks", np.zeros((0, patch, patch), np.uint8)),
        seg_labels=joined("seg", "labels", np.zeros(0, np.int16)).astype(np.int64),
        cls_images=joined("cls", "images", no_images),
        cls_labels=joined("cls", "labels", np.zeros(0, np.int16)).astype(np.int64),
        val=tuple(evaluation["val"]),
        test=tuple(evaluation["test"]),
        seg_sources=joined("seg", "source", np.zeros(0, object)),
        seg_coords=joined("seg", "coords", np.zeros((0, 2), np.int32)),
        cls_sources=joined("cls", "source", np.zeros(0, object)),
        cls_coords=joined("cls", "coords", np.zeros((0, 2), np.int32)),
        preprocessing=manifest.get("preprocessing", {}),
    )
    arrays.validate()
    return arrays


def _eval_image(group) -> EvalImage:
    tissue = None
    if "tissue" in group:
        tissue = Foreground(group["tissue"][()].astype(bool), float(group.attrs["tissue_scale"]))
    return EvalImage(str(group.attrs["name"]), group["rgb"][()], group["mask"][()], tissue,
                     str(group.attrs.get("source", "")))


class ShardReader:
    """Random access to training patches on disk, without loading the cache into memory.

    Rows are read one at a time: with one-row chunks, h5py's per-row reads are
    about 40x faster than its fancy indexing for a scattered batch.
    """

    def __init__(self, cache_dir: str | Path) -> None:
        import h5py

        self.cache_dir = Path(cache_dir)
        manifest = read_manifest(self.cache_dir)
        self._files: dict[str, list[tuple[int, Any]]] = {"seg": [], "cls": []}
        for entry in manifest["files"]:
            if entry["kind"] in self._files:
                offset = sum(len(h5["labels"]) for _, h5 in self._files[entry["kind"]])
                self._files[entry["kind"]].append((offset, h5py.File(self.cache_dir / entry["file"], "r")))

    def __len__(self) -> int:
        return sum(self.count(kind) for kind in self._files)

    def count(self, kind: str) -> int:
        return sum(len(h5["labels"]) for _, h5 in self._files[kind])

    def batch(self, kind: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(images, masks or None for classification patches, labels) of global row `indices`."""
        images, masks, labels = [], [], []
        for index in np.asarray(indices):
            offset, h5 = self._locate(kind, int(index))
            row = int(index) - offset
            images.append(h5["images"][row])
            labels.append(int(h5["labels"][row]))
            if "masks" in h5:
                masks.append(h5["masks"][row])
        return np.stack(images), (np.stack(masks) if masks else None), np.asarray(labels, dtype=np.int64)

    def _locate(self, kind: str, index: int) -> tuple[int, Any]:
        for offset, h5 in reversed(self._files[kind]):
            if index >= offset:
                if index - offset >= len(h5["labels"]):
                    break
                return offset, h5
        raise IndexError(f"{kind} row {index} is outside the cache in {self.cache_dir}")

    def close(self) -> None:
        for handles in self._files.values():
            for _, h5 in handles:
                h5.close()

    def __enter__(self) -> "ShardReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
