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
from prunekit.data.text import TextSplits, load_text, with_more_text
from prunekit.data.wordnet import write_gloss_text

__all__ = [
    "DataSplits",
    "DatasetInfo",
    "TextSplits",
    "accepted_forms",
    "datasets",
    "load_data",
    "load_digits_splits",
    "load_fashion_mnist",
    "load_text",
    "parse_idx",
    "read_idx",
    "register_dataset",
    "with_more_text",
    "write_gloss_text",
]
