"""Is the dataset held once per node? Memory growth of 4 concurrent trials reading it.

Each of 4 concurrent Ray tasks reads every byte of the synthetic dataset from
the object store (zero-copy, as sweep trials do), then again after copying it
(the naive baseline). Reported: the dataset's size and each task's growth in
anonymous (private) memory and in proportional set size.

    python benchmarks/object_store_memory.py [--repeat 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=8,
                        help="tile the classification patches this many times, for a larger dataset")
    parser.add_argument("--tasks", type=int, default=4, help="concurrent tasks")
    parser.add_argument("--data-root", default=None, help="synthetic source folder")
    args = parser.parse_args(argv)

    import ray

    from segclass.data import load_dataset
    from segclass.ray_sweep.memory import measure_sharing

    data = load_dataset("synthetic", args.data_root)
    if args.repeat > 1:
        data = dataclasses.replace(data, cls_images=np.concatenate([data.cls_images] * args.repeat),
                                   cls_labels=np.concatenate([data.cls_labels] * args.repeat))
    ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=args.tasks, log_to_driver=False)
    report = measure_sharing(data, args.tasks)
    ray.shutdown()
    mib = 1024 * 1024
    print(f"dataset: {report.dataset_bytes / mib:.1f} MiB, {report.tasks} concurrent tasks on one node\n")
    print("| per task | anonymous memory growth | vs dataset |")
    print("|---|---|---|")
    for label, values in (("object store, zero-copy (sweep trials)", report.shared_anonymous_growth),
                          ("private copy (baseline)", report.copied_anonymous_growth)):
        mean = np.mean(values)
        print(f"| {label} | {mean / mib:.1f} MiB | {mean / report.dataset_bytes:.2f}x |")
    print(f"\nzero-copy tasks' proportional set size growth: {np.mean(report.shared_pss_growth) / mib:.1f} MiB each "
          f"(the shared pages split {report.tasks} ways)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
