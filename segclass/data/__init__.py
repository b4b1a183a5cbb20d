"""Datasets as plain numpy arrays: what the trainer, the shards and the object store share.

`load_dataset(name, root)` returns a `DatasetArrays`; adapters for each dataset's
on-disk layout live in their own modules.
"""

from segclass.data.arrays import DatasetArrays, EvalImage
from segclass.data.registry import DATASETS, default_root, load_dataset

__all__ = ["DATASETS", "DatasetArrays", "EvalImage", "default_root", "load_dataset"]
