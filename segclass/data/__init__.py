"""Datasets as plain numpy arrays: what the trainer, the shards and the object store share.

`load_dataset(name, root)` builds the dataset's HDF5 shard cache on first use
(`segclass.data.build`) and reads it back as `DatasetArrays`. Adapters for
each dataset's on-disk layout live in their own modules.
"""

from segclass.data.arrays import DatasetArrays, EvalImage
from segclass.data.registry import default_source, ensure_cache, load_dataset

__all__ = ["DatasetArrays", "EvalImage", "default_source", "ensure_cache", "load_dataset"]
