"""Run the paper's experimental grid as a Ray Tune sweep, logged to MLflow, resumable.

With no arguments: start a local Ray on 127.0.0.1, build the synthetic data
cache if missing, run the `quick` preset, log to results/mlflow.db.

    python sweeps/full_grid.py                                   # quick preset, local
    python sweeps/full_grid.py --preset smoke                    # a first try, a few minutes
    python sweeps/full_grid.py --preset quick --pretrained imagenet   # with the paper's ImageNet init
    python sweeps/full_grid.py --address auto --preset paper --dataset bach --data-root /shared/BACH \\
        --storage /shared/segclass/tune --mlflow-uri http://HEAD_IP:5000    # on a cluster (see docs/sweep.md)
    python sweeps/full_grid.py                                   # rerun: resumes, skipping finished trials
    python sweeps/full_grid.py --seeds 1 2 3 --grow              # add grid points to the same sweep
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from segclass.cli_help import counted  # noqa: E402
from segclass.config import BUDGETS, MODES, PRECISIONS, VARIANTS, variants_help  # noqa: E402
from segclass.grid import PRESETS, STUDIES, get_preset, narrow  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python sweeps/full_grid.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    presets = "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values()).replace("%", "%%")
    parser.add_argument("--preset", default="quick", choices=list(PRESETS), help=f"which grid to run ({presets})")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join: 'auto' finds the one `ray start --head` started on this machine, "
                             "or give HOST:PORT; segclass's code is shipped to the nodes. Default: a private "
                             "local Ray on 127.0.0.1 that joins no other cluster")
    parser.add_argument("--dataset", default=None,
                        help="dataset of every trial (synthetic, folder, bach, gleason2019, digestpath2019); "
                             "default: the preset's (synthetic)")
    parser.add_argument("--data-root", default=None, help="the dataset's files; its shard cache is built on first use")
    parser.add_argument("--study", default=None, choices=[*STUDIES, "both"],
                        help="segmentation (modes S, S+C, S+C*), classification (S2+C2, S2+C2*, S2*+C2) or both; "
                             "default: the preset's")
    parser.add_argument("--modes", nargs="+", default=None, choices=MODES,
                        help="only these modes (the preset's extra arms too)")
    parser.add_argument("--fractions", nargs="+", type=float, default=None,
                        help="only these s values (segmentation study) and c values (classification study) in "
                             "percent, 0-100 (c at most 50), e.g. 1 2.5 5 100; the preset's extra arms too")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds, e.g. 1 2 3 4 5")
    parser.add_argument("--variants", nargs="+", default=None, choices=VARIANTS,
                        help="classification heads to cross with the grid (default: the preset's); only these in "
                             f"extra arms. {variants_help()}")
    parser.add_argument("--budgets", nargs="+", default=None, choices=BUDGETS,
                        help="training budgets to cross with the grid (default: the preset's: "
                             + ", ".join(f"{p.name} {'/'.join(p.budgets)}" for p in PRESETS.values())
                             + "); only these in extra arms")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial (default: the preset's)")
    parser.add_argument("--gpus-per-trial", type=float, default=None,
                        help="GPU share of one trial, e.g. 0.25 packs 4 trials per GPU; default 0.125 (8 per GPU, "
                             "the fastest packing measured on an H200) when the cluster has GPUs, else 0 (CPU)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="arithmetic trials train and evaluate in: bf16 autocast or float32; 'auto' = bf16 when "
                             "trials get a GPU share, else fp32. Part of every trial's identity and MLflow params")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPU cores reserved per trial (default: 1)")
    parser.add_argument("--storage", default=None,
                        help="sweep storage (trial checkpoints by identity, Tune's logs; default: RESULTS/tune): a "
                             "folder every node can read and write on a cluster, or any URI pyarrow understands "
                             "(s3://, gs://, ...)")
    parser.add_argument("--mlflow-uri", default=None,
                        help="MLflow tracking URI; default: sqlite:///RESULTS/mlflow.db (one machine). On a cluster "
                             "use an MLflow tracking server (http://HOST:PORT), not SQLite on a shared disk")
    parser.add_argument("--results", default="results",
                        help="folder for the default MLflow store, its artifacts and the sweep's storage "
                             "(RESULTS/tune unless --storage says otherwise) (default: results)")
    parser.add_argument("--name", default=None,
                        help="sweep name (default: PRESET-DATASET). Rerunning a name resumes it: trials with a "
                             "finished run are skipped, the others continue from their checkpoints. A name never "
                             "mixes datasets or training settings")
    parser.add_argument("--grow", action="store_true",
                        help="allow this run to add grid points (more seeds, s values, modes) to the sweep --name")
    parser.add_argument("--resume", action="store_true",
                        help="insist that the sweep --name exists (a plain rerun resumes too, but also starts a "
                             "new sweep when there is none)")
    parser.add_argument("--max-failures", type=int, default=2,
                        help="retries of a failing trial, from its checkpoint (default: 2)")
    parser.add_argument("--checkpoint-every", type=int, default=None,
                        help="write a trial checkpoint every N epochs (about 34 MB each); a killed sweep loses at "
                             "most N-1 epochs per running trial (default: the preset's: "
                             + ", ".join(f"{p.name} {p.checkpoint_every}" for p in PRESETS.values()) + ")")
    parser.add_argument("--validate-every", type=int, default=None,
                        help="validate every N epochs and at the last; the best epoch (test_best_*) is chosen among "
                             "the validated ones. Part of each trial's identity (default: the preset's: "
                             + ", ".join(f"{p.name} {p.validate_every}" for p in PRESETS.values()) + ")")
    parser.add_argument("--keep-trial-files", action="store_true",
                        help="keep each finished trial's checkpoint in the storage (default: removed once its "
                             "MLflow run is finished)")
    parser.add_argument("--pretrained", default=None, metavar="imagenet|none|PATH",
                        help="encoder init of every trial, overriding the preset's (paper: imagenet; quick, smoke: "
                             "none): 'imagenet' = torchvision's ImageNet ResNet-18 weights (IMAGENET1K_V1, as the "
                             "paper; downloaded once into torch's hub cache; offline, the error says where to put the "
                             "file), 'none' = random init, or PATH of a local torchvision resnet18 state dict. "
                             "Resolved once by the driver before Ray starts and sent to the workers; part of each "
                             "trial's identity (the file's content hash)")
    parser.add_argument("--verbose", action="store_true",
                        help="also print Ray's and Tune's own console output (Tune's trial table and result boxes, "
                             "Ray's start-up lines, MLflow's info lines); by default segclass's progress lines and "
                             "Ray's warnings (such as its token-authentication notice)")
    parser.add_argument("--num-cpus", type=int, default=None, help="local Ray only: CPUs to offer (default: all)")
    parser.add_argument("--num-gpus", type=float, default=None,
                        help="local Ray only: logical GPUs to offer (default: detected)")
    return parser


def _shortest(path: str | Path) -> str:
    """`path` relative to the current folder when it lies below it, else absolute: as a user would type it."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def _python() -> str:
    """This interpreter (a venv's python, usually), so printed commands run as printed."""
    return _shortest(sys.executable)


def _tool(name: str) -> str:
    """A console script installed beside this interpreter (mlflow, ray)."""
    return _shortest(Path(sys.executable).with_name(name))


def _script(relative: str) -> str:
    """A script of this repository."""
    return _shortest(Path(__file__).resolve().parents[1] / relative)


def _without_name(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--name":
            skip = True
        elif not arg.startswith("--name="):
            out.append(arg)
    return out


def _demo_test_slides(options) -> tuple[str, str]:
    """The synthetic dataset's own test slides and masks, to predict on; others name their slides."""
    from segclass.data.registry import default_source

    if options.preset.dataset == "synthetic" and options.data_root is None:
        source = default_source("synthetic")
        return str(source / "test" / "images"), f"--mask {source / 'test' / 'masks'} "
    return "SLIDE...", ""


def main(argv: list[str] | None = None, epoch_hook: Callable[..., None] | None = None) -> int:
    """`epoch_hook` runs in every trial after each epoch; tests and the chaos benchmark pass one."""
    from segclass.errors import naming_root_flag

    args = build_parser().parse_args(argv)
    with naming_root_flag("--data-root"):  # the data layer's messages name this command's flag
        return _run(args, sys.argv[1:] if argv is None else argv, epoch_hook)


def _run(args: argparse.Namespace, argv: list[str], epoch_hook: Callable[..., None] | None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # MLflow's store set-up lines say nothing a user acts on (read when mlflow is imported)
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    from segclass.errors import SegclassError
    from segclass.ray_sweep.driver import SweepOptions, run_sweep

    studies = None if args.study is None else (STUDIES if args.study == "both" else (args.study,))

    try:
        preset = narrow(
            get_preset(args.preset), dataset=args.dataset, studies=studies,
            modes=tuple(args.modes) if args.modes else None,
            fractions=tuple(f / 100 for f in args.fractions) if args.fractions else None,
            seeds=tuple(args.seeds) if args.seeds else None, variants=tuple(args.variants) if args.variants else None,
            budgets=tuple(args.budgets) if args.budgets else None, epochs=args.epochs,
            validate_every=args.validate_every)
        options = SweepOptions(
            preset=preset, name=args.name or f"{preset.name}-{preset.dataset}", data_root=args.data_root,
            address=args.address, storage=args.storage, mlflow_uri=args.mlflow_uri, results=args.results,
            gpus_per_trial=args.gpus_per_trial, cpus_per_trial=args.cpus_per_trial, max_failures=args.max_failures,
            checkpoint_every=args.checkpoint_every, grow=args.grow, resume=args.resume,
            keep_trial_files=args.keep_trial_files, pretrained=args.pretrained, num_cpus=args.num_cpus,
            num_gpus=args.num_gpus, verbose=args.verbose, precision=args.precision)
        summary = run_sweep(options, epoch_hook=epoch_hook)
    except SegclassError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\n{counted(summary.planned, 'grid point')}: {len(summary.ran)} ran to the end now, "
          f"{len(summary.skipped)} skipped (finished before), {len(summary.failed)} failed or unfinished")
    for key in summary.failed:
        print(f"  not finished: {key}")
    for key in summary.elsewhere:
        print(f"  left to the sweep training it now: {key}")
    for error in summary.tracking_errors:
        print(f"  MLflow write failed: {error}")
    print(f"Tune experiments: {', '.join(summary.experiments)}" if summary.experiments
          else "Tune experiments: none started (nothing left to run)")
    print(f"MLflow runs: {summary.mlflow_uri}")
    if summary.mlflow_uri.startswith(("http://", "https://")):
        print(f"Compare trials in the MLflow UI: open {summary.mlflow_uri}")
    else:
        print(f"Compare trials in the MLflow UI: {_tool('mlflow')} ui --backend-store-uri {summary.mlflow_uri} "
              "--host 127.0.0.1")
    rerun = shlex.join(["--name", options.name, *_without_name(argv)])
    print(f"Resume this sweep (finished trials are skipped): {_python()} {_script('sweeps/full_grid.py')} {rerun}")
    print("Grow it: the same command with more --seeds / --fractions / --modes and --grow")
    uri_flag = f" --mlflow-uri {args.mlflow_uri}" if args.mlflow_uri else ""
    print(f"Rebuild the paper's tables and figures: {_python()} {_script('analysis/report.py')} --results "
          f"{shlex.quote(args.results)}{uri_flag} --sweep {shlex.quote(options.name)}")
    slides, masks = _demo_test_slides(options)
    print(f"Predict slides with a trial's model (a run id from the MLflow UI): {_python()} -m segclass.predict "
          f"--checkpoint RUN_ID --tracking-uri {summary.mlflow_uri} {slides} {masks}--out predictions/")
    return 1 if summary.failed or summary.tracking_errors else 0


if __name__ == "__main__":
    sys.exit(main())
