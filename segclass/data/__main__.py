"""Build, inspect and verify shard caches.

    python -m segclass.data build DATASET --root PATH [--out data_cache/DATASET/shards]   (builds, prints, verifies)
    python -m segclass.data info PATH
    python -m segclass.data verify PATH
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from segclass.errors import ConfigError, SegclassError
from segclass.cli_help import HelpFormatter


def build_parser() -> argparse.ArgumentParser:
    from segclass.data.build import DATASET_NAMES, BuildParams

    defaults = BuildParams()
    parser = argparse.ArgumentParser(prog="python -m segclass.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build a dataset's HDF5 shards (a no-op when already current)",
                           formatter_class=HelpFormatter)
    build.add_argument("dataset", choices=DATASET_NAMES, help="which adapter reads --root")
    build.add_argument("--root", default=None,
                       help="the dataset's folder as unzipped (bach: ICIAR2018_BACH_Challenge/, digestpath2019: "
                            "Colonoscopy_tissue_segment_dataset/, gleason2019: the folder holding 'Train Imgs/' and "
                            "Maps1_T/; a folder above it is found; docs/data.md); synthetic: generated here if "
                            "missing, default data_cache/synthetic/source")
    build.add_argument("--out", default=None, help="cache folder (default data_cache/DATASET/shards)")
    build.add_argument("--patch-size", type=int, default=defaults.patch_size, help="patch side in pixels")
    build.add_argument("--magnification", type=float, default=defaults.magnification,
                       help="objective magnification slides are read at")
    build.add_argument("--min-foreground", type=float, default=defaults.min_foreground,
                       help="drop patches with less tissue than this share (0 keeps all)")
    build.add_argument("--no-stain-normalization", action="store_true",
                       help="skip Macenko normalization to the training reference")
    build.add_argument("--resize-long-side", type=int, default=defaults.resize_long_side,
                       help="Gleason2019/DigestPath2019: resize images to this long side (0 keeps native)")
    build.add_argument("--annotator", type=int, default=defaults.annotator,
                       help="Gleason2019: use the maps of this annotator (Maps<K>_T)")
    build.add_argument("--split-seed", type=int, default=defaults.split_seed,
                       help="seed of the 50/25/25 split by image")
    build.add_argument("--train-slides", default=",".join(defaults.train_slides),
                       help="BACH: comma-separated training WSIs")
    build.add_argument("--val-slides", default="",
                       help="BACH: validation WSIs (default: first other WSI holding all four classes)")
    build.add_argument("--test-slides", default="", help="BACH: test WSIs (default: all remaining)")
    build.add_argument("--class-map", default=None,
                       help="Gleason2019: JSON file {map value: class id} replacing the default table")
    info = sub.add_parser("info", help="print a cache's manifest as a table")
    info.add_argument("path", help="cache folder (holding manifest.json)")
    verify = sub.add_parser("verify", help="check every shard against its SHA-256 in the manifest")
    verify.add_argument("path", help="cache folder (holding manifest.json)")
    return parser


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _build(args: argparse.Namespace) -> int:
    from segclass.data.build import BuildParams
    from segclass.data.registry import ensure_cache

    class_map = ()
    if args.class_map:
        try:
            class_map = tuple(sorted((int(k), int(v)) for k, v in json.loads(Path(args.class_map).read_text()).items()))
        except (OSError, ValueError, AttributeError) as exc:
            raise ConfigError(f"--class-map {args.class_map}: {exc}; give a JSON file mapping each map value to a "
                              'class id, e.g. {"0": 0, "1": 1, "6": 1, "3": 2, "4": 3, "5": 4}') from exc
    params = BuildParams(
        patch_size=args.patch_size, magnification=args.magnification, min_foreground=args.min_foreground,
        stain_normalize=not args.no_stain_normalization, resize_long_side=args.resize_long_side,
        annotator=args.annotator, split_seed=args.split_seed, train_slides=_names(args.train_slides),
        val_slides=_names(args.val_slides), test_slides=_names(args.test_slides), class_map=class_map,
    )
    out = ensure_cache(args.dataset, args.root, args.out, params)
    print(out)
    _info(out)
    return _verify(out)


def _info(path: str | Path) -> int:
    from segclass.data.shards import read_manifest

    manifest = read_manifest(path)
    counts = manifest["counts"]
    names = manifest["class_names"]
    width = max(len(n) for n in names + ["class"])
    print(f"dataset {manifest['dataset']}  (segclass {manifest['segclass_version']}, built {manifest['created']}, "
          f"data fingerprint {manifest['data_fingerprint'][:12]})")
    print(f"{'class':{width}}  {'seg patches':>11}  {'cls patches':>11}  {'val pixels':>11}  {'test pixels':>11}")
    for name in names:
        print(f"{name:{width}}  {counts['train']['seg'][name]:>11}  {counts['train']['cls'][name]:>11}  "
              f"{counts['val']['pixels'][name]:>11}  {counts['test']['pixels'][name]:>11}")
    print(f"{'total':{width}}  {sum(counts['train']['seg'].values()):>11}  {sum(counts['train']['cls'].values()):>11}"
          f"  {counts['val']['images']:>7} img  {counts['test']['images']:>7} img")
    report = manifest.get("report", {})
    if report.get("stain"):
        stain = report["stain"]
        print(f"stain normalization: reference {stain['reference']}, {stain['failures']} of {stain['attempts']} failed")
    for fact in report.get("facts", []):
        print(f"info: {fact}")
    for note in report.get("notes", []):
        print(f"note: {note}")
    print("build: " + ", ".join(f"{k}={v}" for k, v in manifest["build_params"].items()))
    for entry in manifest["files"]:
        print(f"  {entry['file']:24} {entry['rows']:>6} rows  sha256 {entry['sha256'][:16]}...")
    return 0


def _verify(path: str | Path) -> int:
    from segclass.data.shards import verify_cache

    problems = verify_cache(path)
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    if not problems:
        print(f"ok: every shard in {path} matches its checksum")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        if args.command == "build":
            return _build(args)
        if args.command == "info":
            return _info(args.path)
        return _verify(args.path)
    except SegclassError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
