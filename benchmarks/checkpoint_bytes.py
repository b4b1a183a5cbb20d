"""Bytes a trial writes per epoch for resume: the current checkpoint layout against the old one.

    python benchmarks/checkpoint_bytes.py [--epochs 10]

Trains one trial (S+C at s = 50% on a tiny synthetic dataset) with the real
trainer, and after every epoch adds up the bytes of the checkpoint files that
epoch wrote (checkpoint.pt always; best-<epoch>.pt only when the best epoch
changed). The old layout (segclass before trial identities) wrote, every
epoch, one checkpoint holding model, optimizer *and* a copy of the best
weights, and Tune then copied that folder into its storage: its per-epoch
bytes are computed here from the same trial's state, serialized the old way,
times two.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from segclass.cli_help import HelpFormatter  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/checkpoint_bytes.py", description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the trial")
    args = parser.parse_args(argv)

    import torch

    from segclass.checkpoint import load_checkpoint
    from segclass.config import TrainConfig
    from segclass.data import ensure_cache
    from segclass.data.shards import read_cache
    from segclass.synthetic import SyntheticConfig, generate
    from segclass.training_loop import train

    work = Path(tempfile.mkdtemp(prefix="segclass-ckpt-bytes-"))
    os.environ["SEGCLASS_DATA_CACHE"] = str(work / "cache")
    root = generate(work / "data", SyntheticConfig(seed=3, slide_size=320, train_slides=2, val_slides=1,
                                                   test_slides=1, cls_patients=4, cls_per_class=8))
    data = read_cache(ensure_cache("synthetic", root))
    run_dir = work / "trial"
    seen: dict[str, float] = {}
    rows = []

    def on_epoch(metrics):
        written = 0
        for path in run_dir.glob("*.pt"):
            stamp = path.stat().st_mtime_ns
            if seen.get(path.name) != stamp:
                seen[path.name] = stamp
                written += path.stat().st_size
        state = load_checkpoint(run_dir / "checkpoint.pt")
        best = load_checkpoint(run_dir / f"best-{state['best']['epoch']}.pt")["model"]
        old = io.BytesIO()
        torch.save({**state, "best": {**state["best"], "model": best}, "format_version": 1}, old)
        rows.append((int(metrics["epoch"]), written, 2 * len(old.getvalue()), state["best"]["epoch"]))

    config = TrainConfig(mode="S+C", seg_fraction=0.5, seed=1, epochs=args.epochs, batch_size=8, eval_stride=128)
    train(config, data, run_dir, on_epoch=on_epoch)
    mib = 1024 * 1024
    print(f"{'epoch':>5} {'best epoch':>10} {'now MiB':>8} {'old MiB':>8}")
    for epoch, now, old, best in rows:
        print(f"{epoch:>5} {best:>10} {now / mib:>8.1f} {old / mib:>8.1f}")
    now_mean = sum(r[1] for r in rows) / len(rows) / mib
    old_mean = sum(r[2] for r in rows) / len(rows) / mib
    print(f"mean per trial-epoch: now {now_mean:.1f} MiB, old {old_mean:.1f} MiB ({old_mean / now_mean:.2f}x less now)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
