"""Built-in datasets (registered by name, loaded from a data SPEC) and the batch conventions."""

from prunekit.data.digits import load_digits_splits
from prunekit.data.fashion_mnist import load_fashion_mnist, parse_idx, read_idx
from prunekit.data.registry import (
    DatasetInfo,
    accepted_forms,
    datasets,
    load_data,
    register_dataset,
)
from prunekit.data.splits import DataSplits

__all__ = [
    "DataSplits",
    "DatasetInfo",
    "accepted_forms",
    "datasets",
    "load_data",
    "load_digits_splits",
    "load_fashion_mnist",
    "parse_idx",
    "read_idx",
    "register_dataset",
]
