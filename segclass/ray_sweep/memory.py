"""Measure what a trial pays in memory for the shared dataset (Linux /proc accounting).

Trials get the dataset from the Ray object store: numpy buffers are mapped
from shared memory, not copied, so a trial's *anonymous* (private heap)
memory should not grow by the dataset's size however many trials a node runs.
The `copy=True` arm is the baseline a naive loader would pay.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def memory_counters() -> dict[str, int]:
    """Rss, Pss and Anonymous bytes of this process from /proc/self/smaps_rollup."""
    counters = {}
    with open("/proc/self/smaps_rollup") as file:
        for line in file:
            parts = line.split()
            if len(parts) >= 3 and parts[0].rstrip(":") in ("Rss", "Pss", "Anonymous"):
                counters[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return counters


def dataset_bytes(data) -> int:
    arrays = [data.seg_images, data.seg_masks, data.cls_images, data.cls_labels]
    arrays += [item.rgb for item in data.val + data.test] + [item.mask for item in data.val + data.test]
    return int(sum(a.nbytes for a in arrays))


def touch_dataset(data, copy: bool) -> dict[str, int]:
    """Read every byte of the dataset (as training would) and report the memory growth."""
    before = memory_counters()
    arrays = [data.seg_images, data.seg_masks, data.cls_images]
    arrays += [item.rgb for item in data.val + data.test]
    if copy:
        arrays = [np.array(a, copy=True) for a in arrays]
    checksum = int(sum(int(a.sum(dtype=np.uint64)) for a in arrays))
    after = memory_counters()
    return {f"{key}_growth": after[key] - before[key] for key in before} | {"checksum": checksum}


@dataclass
class SharingReport:
    dataset_bytes: int
    tasks: int
    shared_anonymous_growth: list[int]
    copied_anonymous_growth: list[int]
    shared_pss_growth: list[int]


def measure_sharing(data, tasks: int = 4) -> SharingReport:
    """Run `tasks` concurrent Ray tasks on the dataset, zero-copy and then copying."""
    import ray

    reference = ray.put(data)

    @ray.remote(num_cpus=1)
    def probe(shared, copy: bool, barrier_seconds: float) -> dict[str, int]:
        import time

        result = touch_dataset(shared, copy)
        time.sleep(barrier_seconds)  # stay alive so the tasks overlap in time
        return result

    shared = ray.get([probe.remote(reference, False, 1.0) for _ in range(tasks)])
    copied = ray.get([probe.remote(reference, True, 1.0) for _ in range(tasks)])
    return SharingReport(dataset_bytes(data), tasks, [r["Anonymous_growth"] for r in shared],
                         [r["Anonymous_growth"] for r in copied], [r["Pss_growth"] for r in shared])
