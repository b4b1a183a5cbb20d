"""`sweeps/full_grid.py` with instrumentation injected into every trial: for tests and the chaos benchmark.

    python benchmarks/hooked_sweep.py [--slow-epoch S] [--fault-once DIR] [--ledger FILE] -- FULL_GRID_ARGS...

- `--slow-epoch S`: each trial sleeps S seconds after every epoch (widens windows for kills).
- `--fault-once DIR`: each trial raises once after its first epoch (a marker file per grid point in DIR).
- `--ledger FILE`: each trial appends "<grid key> <epoch> <Ray node id>" after every epoch it trained, so a
  checker can count the epochs actually trained (a replayed or resumed epoch is not trained again and not
  written) and see, while the sweep runs, where each trial is training (Tune's result files are buffered).

Production sweeps run none of this: the hook is a function this script hands to `run_sweep`; it is
defined in `__main__`, so Ray ships it to the workers by value.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "sweeps"))
from segclass.cli_help import HelpFormatter  # noqa: E402


def make_hook(slow_epoch: float, fault_dir: str | None, ledger: str | None):
    def epoch_hook(point, epoch: int) -> None:
        if ledger:
            import ray

            with open(ledger, "a") as file:
                file.write(f"{point.key} {epoch} {ray.get_runtime_context().get_node_id()}\n")
        if slow_epoch:
            time.sleep(slow_epoch)
        if fault_dir:
            marker = Path(fault_dir) / point.key.replace("|", "_").replace("=", "")
            if not marker.exists():
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
                raise RuntimeError(f"fault injected after epoch {epoch} of {point.run_name}")

    return epoch_hook


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="python benchmarks/hooked_sweep.py", description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--slow-epoch", type=float, default=0.0, help="seconds each trial sleeps after an epoch")
    parser.add_argument("--fault-once", default=None, help="folder of markers: each trial fails once after epoch 1")
    parser.add_argument("--ledger", default=None, help="file each trial appends '<grid key> <epoch> <node id>' to per epoch")
    args = parser.parse_args(argv[:split])
    import full_grid

    return full_grid.main(argv[split + 1:], epoch_hook=make_hook(args.slow_epoch, args.fault_once, args.ledger))


if __name__ == "__main__":
    sys.exit(main())
