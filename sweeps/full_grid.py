"""Run the paper's experimental grid as a Ray Tune sweep, logged to MLflow, resumable.

With no arguments: start a local Ray on 127.0.0.1, build the synthetic data
cache if missing, run the `quick` preset, log to results/mlflow.db.

    python sweeps/full_grid.py                                   # quick preset, local
    python sweeps/full_grid.py --preset smoke                    # a first try, a few minutes
    python sweeps/full_grid.py --address auto --preset paper --dataset bach --data-root /data/BACH \\
        --storage /shared/tune --mlflow-uri sqlite:////shared/mlflow.db     # on a cluster
    python sweeps/full_grid.py --name quick --resume             # continue an interrupted sweep
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from segclass.config import BUDGETS, MODES, VARIANTS  # noqa: E402
from segclass.grid import PRESETS, STUDIES, customise, get_preset  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python sweeps/full_grid.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    presets = "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values()).replace("%", "%%")
    parser.add_argument("--preset", default="quick", choices=list(PRESETS), help=f"which grid to run ({presets})")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join: 'auto' finds the one `ray start --head` started on this machine, "
                             "or give HOST:PORT; default: start a private local Ray on 127.0.0.1")
    parser.add_argument("--dataset", default=None,
                        help="dataset of every trial (synthetic, folder, bach, gleason2019, digestpath2019); "
                             "default: the preset's (synthetic)")
    parser.add_argument("--data-root", default=None, help="the dataset's files; its shard cache is built on first use")
    parser.add_argument("--study", default=None, choices=[*STUDIES, "both"],
                        help="segmentation (modes S, S+C, S+C*), classification (S2+C2, S2+C2*, S2*+C2) or both; "
                             "default: the preset's")
    parser.add_argument("--modes", nargs="+", default=None, choices=MODES, help="only these modes")
    parser.add_argument("--fractions", nargs="+", type=float, default=None,
                        help="s values (segmentation study) and c values (classification study) in percent, "
                             "e.g. 1 2.5 5 100")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds, e.g. 1 2 3 4 5")
    parser.add_argument("--variants", nargs="+", default=None, choices=VARIANTS,
                        help="model variants to cross with the grid (default: paper)")
    parser.add_argument("--budgets", nargs="+", default=None, choices=BUDGETS,
                        help="training budgets to cross with the grid (default: paper)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial (default: the preset's)")
    parser.add_argument("--gpus-per-trial", type=float, default=None,
                        help="GPU share of one trial, e.g. 0.25 packs 4 trials per GPU; default 0.25 when the "
                             "cluster has GPUs, else 0 (CPU)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPU cores reserved per trial")
    parser.add_argument("--storage", default="results/tune",
                        help="Tune storage (checkpoints, experiment state): a folder, shared by all nodes on a "
                             "cluster, or any URI pyarrow understands (s3://, gs://, ...)")
    parser.add_argument("--mlflow-uri", default=None,
                        help="MLflow tracking URI; default: sqlite:///results/mlflow.db in the project folder")
    parser.add_argument("--results", default="results", help="folder for the default MLflow store and artifacts")
    parser.add_argument("--name", default=None,
                        help="experiment name (default: the preset's name); rerunning with the same name resumes it")
    parser.add_argument("--resume", action="store_true",
                        help="continue the experiment --name: finished trials are kept, unfinished and errored "
                             "ones continue from their checkpoints, grid points added since then are run")
    parser.add_argument("--max-failures", type=int, default=2, help="retries of a failing trial, from its checkpoint")
    parser.add_argument("--checkpoint-every", type=int, default=1, help="save a Tune checkpoint every N epochs")
    parser.add_argument("--pretrained", default=None, help="local torchvision resnet18 state dict for every trial")
    parser.add_argument("--num-cpus", type=int, default=None, help="local Ray only: CPUs to offer (default: all)")
    parser.add_argument("--num-gpus", type=float, default=None,
                        help="local Ray only: logical GPUs to offer (default: detected)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from segclass.errors import SegclassError
    from segclass.sweep.tune_runner import SweepOptions, run_sweep

    preset = get_preset(args.preset)
    studies = None if args.study is None else (STUDIES if args.study == "both" else (args.study,))
    fractions = tuple(f / 100 for f in args.fractions) if args.fractions else None
    seg_modes = tuple(m for m in args.modes if "2" not in m) if args.modes else None
    cls_modes = tuple(m for m in args.modes if "2" in m) if args.modes else None
    preset = customise(preset, dataset=args.dataset, studies=studies, seg_modes=seg_modes, cls_modes=cls_modes,
                       seg_fractions=fractions, cls_fractions=fractions, seeds=tuple(args.seeds) if args.seeds else None,
                       variants=tuple(args.variants) if args.variants else None,
                       budgets=tuple(args.budgets) if args.budgets else None, epochs=args.epochs)
    options = SweepOptions(
        preset=preset, name=args.name or preset.name, data_root=args.data_root, address=args.address,
        storage=args.storage, mlflow_uri=args.mlflow_uri, results=args.results, gpus_per_trial=args.gpus_per_trial,
        cpus_per_trial=args.cpus_per_trial, max_failures=args.max_failures, checkpoint_every=args.checkpoint_every,
        resume=args.resume, pretrained=args.pretrained, num_cpus=args.num_cpus, num_gpus=args.num_gpus,
    )
    try:
        summary = run_sweep(options)
    except SegclassError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\n{len(summary.ran)} trials ran, {len(summary.skipped)} skipped (already finished), "
          f"{len(summary.errored)} errored")
    print(f"Tune experiments: {', '.join(summary.experiments) or '-'}")
    print(f"MLflow runs: {summary.mlflow_uri}")
    print(f"Compare trials in the MLflow UI: mlflow ui --backend-store-uri {summary.mlflow_uri} --host 127.0.0.1")
    print(f"Resume or grow this sweep: python sweeps/full_grid.py --name {options.name} --resume [...]")
    uri_flag = f" --mlflow-uri {args.mlflow_uri}" if args.mlflow_uri else ""
    print(f"Rebuild the paper's tables and figures: python analysis/report.py --results {args.results}{uri_flag}")
    print(f"Predict your own slides with a trial's model: python -m segclass.predict --checkpoint <MLflow run id> "
          f"--tracking-uri {summary.mlflow_uri} SLIDE... --out predictions/")
    return 1 if summary.errored else 0


if __name__ == "__main__":
    sys.exit(main())
