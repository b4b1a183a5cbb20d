"""The shard cache: round trip, no-op rebuilds, atomic builds, checksums, versions, CLI."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from segclass.data.build import BuildParams, BuildReport, build_cache
from segclass.data.folder import load_synthetic
from segclass.data.shards import MANIFEST, CacheError, read_cache, verify_cache

RAW = BuildParams(stain_normalize=False)


def test_round_trip_equals_adapter_output(tiny_root, tmp_path):
    cache = build_cache("synthetic", tiny_root, tmp_path / "cache", RAW)
    data = read_cache(cache)
    raw = load_synthetic(tiny_root, RAW, BuildReport())
    assert np.array_equal(data.seg_images, raw.seg_images) and np.array_equal(data.seg_masks, raw.seg_masks)
    assert np.array_equal(data.cls_images, raw.cls_images) and np.array_equal(data.cls_labels, raw.cls_labels)
    assert [v.name for v in data.val] == [v.name for v in raw.val]
    assert np.array_equal(data.test[0].mask, raw.test[0].mask)
    assert data.seg_sources.tolist() == raw.seg_sources.tolist()
    with h5py.File(cache / "train-seg-00000.h5") as h5:
        assert h5["images"].dtype == np.uint8 and h5["images"].chunks[0] <= 16 and h5["images"].compression
        assert h5.attrs["kind"] == "seg" and h5.attrs["split"] == "train"
    manifest = json.loads((cache / MANIFEST).read_text())
    assert sum(manifest["counts"]["train"]["cls"].values()) == len(raw.cls_labels)
    assert all(len(entry["sha256"]) == 64 for entry in manifest["files"])


def test_same_inputs_rebuild_is_a_noop_and_changes_rebuild(tiny_root, tmp_path):
    cache = build_cache("synthetic", tiny_root, tmp_path / "cache", RAW)
    stamp = (cache / MANIFEST).stat().st_mtime_ns
    build_cache("synthetic", tiny_root, cache, RAW)
    assert (cache / MANIFEST).stat().st_mtime_ns == stamp
    build_cache("synthetic", tiny_root, cache, BuildParams(stain_normalize=False, min_foreground=0.5))
    assert json.loads((cache / MANIFEST).read_text())["build_params"]["min_foreground"] == 0.5


def test_failed_build_leaves_nothing_half_written(tiny_root, tmp_path):
    import shutil

    source = tmp_path / "source"
    shutil.copytree(tiny_root, source)
    cache = build_cache("synthetic", source, tmp_path / "cache", RAW)
    before = (cache / MANIFEST).read_text()
    broken = sorted((source / "cls" / "benign").glob("*.png"))[0]
    broken.write_bytes(b"not a png")
    from segclass.errors import DatasetError

    with pytest.raises(DatasetError, match=broken.name):
        build_cache("synthetic", source, cache, RAW)
    assert (cache / MANIFEST).read_text() == before  # the old cache is intact
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cache")]  # no staging left behind
    with pytest.raises(DatasetError):
        build_cache("synthetic", source, tmp_path / "fresh", RAW)
    assert not (tmp_path / "fresh").exists()


def test_tampered_and_truncated_shards_are_named(tiny_root, tmp_path):
    cache = build_cache("synthetic", tiny_root, tmp_path / "cache", RAW)
    shard = cache / "train-cls-00000.h5"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert any("train-cls-00000.h5" in problem for problem in verify_cache(cache))
    with pytest.raises(CacheError, match="train-cls-00000.h5 does not match its SHA-256"):
        read_cache(cache)
    (cache / "val.h5").write_bytes((cache / "val.h5").read_bytes()[:100])
    assert len(verify_cache(cache)) == 2


def test_incompatible_manifest_version(tiny_root, tmp_path):
    cache = build_cache("synthetic", tiny_root, tmp_path / "cache", RAW)
    manifest = json.loads((cache / MANIFEST).read_text())
    manifest["format_version"] = 99
    (cache / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match="format version 99.*rebuild"):
        read_cache(cache)
    with pytest.raises(CacheError, match="manifest.json is missing"):
        read_cache(tmp_path)


def test_build_info_verify_cli(tiny_root, tmp_path):
    out = tmp_path / "cache"
    run = lambda *args: subprocess.run([sys.executable, "-m", "segclass.data", *args],  # noqa: E731
                                       capture_output=True, text=True, timeout=600)
    built = run("build", "synthetic", "--root", str(tiny_root), "--out", str(out), "--no-stain-normalization")
    assert built.returncode == 0, built.stderr
    info = run("info", str(out))
    assert "invasive" in info.stdout and "seg patches" in info.stdout and "train-cls-00000.h5" in info.stdout
    assert run("verify", str(out)).returncode == 0
    (out / "test.h5").write_bytes(b"x")
    failed = run("verify", str(out))
    assert failed.returncode == 1 and "test.h5" in failed.stderr
    assert run("build", "--help").returncode == 0


def test_shard_reader_random_batches_across_shards(tiny_root, tmp_path, monkeypatch):
    import segclass.data.shards as shards

    monkeypatch.setattr(shards, "SHARD_ROWS", 5)  # several shards per kind
    cache = build_cache("synthetic", tiny_root, tmp_path / "cache", RAW)
    assert len(list(cache.glob("train-cls-*.h5"))) > 1
    data = read_cache(cache)
    indices = np.array([len(data.cls_labels) - 1, 0, 7, 7, 3])
    with shards.ShardReader(cache) as reader:
        assert reader.count("cls") == len(data.cls_labels)
        images, masks, labels = reader.batch("cls", indices)
        assert masks is None
        assert np.array_equal(images, data.cls_images[indices]) and np.array_equal(labels, data.cls_labels[indices])
        seg_index = np.arange(len(data.seg_labels))[::-1]
        images, masks, _ = reader.batch("seg", seg_index)
        assert np.array_equal(masks, data.seg_masks[seg_index])
        with pytest.raises(IndexError, match="outside the cache"):
            reader.batch("cls", [len(data.cls_labels)])
