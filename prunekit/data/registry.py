"""Datasets registered by name and the data SPEC parser (``digits``, ``fashion-mnist:DIR``,
``text:FILE``, …)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from prunekit.data.digits import load_digits_splits
from prunekit.data.fashion_mnist import load_fashion_mnist
from prunekit.data.pyfile import load_py_function
from prunekit.data.splits import DataSplits
from prunekit.data.text import TextSplits, load_text
from prunekit.errors import PrunekitError


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: ``load(arg, **options)`` gets the text after ``NAME:`` or None.

    ``arg`` names that text in help (``"DIR"``, ``"FILE"``); ``arg_required`` forbids bare NAME.
    ``options`` are the keyword options ``load_data`` may pass on (e.g. ``tokenizer``).
    """

    name: str
    load: Callable[..., DataSplits | TextSplits]
    summary: str
    arg: str | None = None
    arg_required: bool = False
    options: tuple[str, ...] = ()

    @property
    def forms(self) -> list[str]:
        bare = [] if self.arg_required else [self.name]
        return bare + ([f"{self.name}:{self.arg}"] if self.arg else [])


_DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo) -> None:
    """Make ``info.name`` (and ``info.name:ARG``) a valid data SPEC."""
    if info.name in _DATASETS or info.name == "py":
        raise RuntimeError(f"dataset {info.name!r} is registered twice")
    _DATASETS[info.name] = info


def datasets() -> list[str]:
    """Names of the registered datasets, sorted."""
    return sorted(_DATASETS)


def accepted_forms() -> list[str]:
    """Every accepted form of data SPEC, for help and error messages."""
    forms = [form for name in datasets() for form in _DATASETS[name].forms]
    return [*forms, "py:FILE.py:FUNCTION"]


def load_data(spec: str, **options: Any) -> DataSplits | TextSplits:
    """Load the dataset a data SPEC names.

    ``py:FILE.py:FUNCTION`` calls ``FUNCTION()``, which returns a DataSplits or a ``(train,
    test)`` pair of torch Datasets whose samples are ``(inputs, label)``. ``text:FILE`` returns
    ``TextSplits`` and takes ``tokenizer=``, ``seq_len=``, ``mode=`` (``stream``/``lines``) and
    ``eval_fraction=`` (see ``prunekit.data.text.load_text``); other datasets take no options.
    """
    if not isinstance(spec, str) or not spec:
        raise PrunekitError(f"data spec must be a non-empty string; got {spec!r}")
    if spec.startswith("py:"):
        _check_options(spec, options, ())
        return _from_py(spec)
    name, sep, arg = spec.partition(":")
    info = _DATASETS.get(name)
    if (
        info is None
        or (sep and not info.arg)
        or (not sep and info.arg_required)
        or (sep and not arg)
    ):
        raise PrunekitError(
            f"data spec {spec!r} is not recognised; use one of: {', '.join(accepted_forms())}"
        )
    _check_options(spec, options, info.options)
    return info.load(arg or None, **options)


def _check_options(spec: str, options: dict[str, Any], accepted: tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = f"takes only {', '.join(accepted)}" if accepted else "takes no options"
        raise PrunekitError(f"data spec {spec!r} {takes}; got {', '.join(unknown)}")


def _from_py(spec: str) -> DataSplits:
    result = load_py_function(spec, "data")()
    if isinstance(result, DataSplits):
        return result
    if (
        isinstance(result, (tuple, list))
        and len(result) == 2
        and all(isinstance(d, Dataset) for d in result)
    ):
        train, test = result
        return DataSplits(
            name=spec,
            train=train,
            test=test,
            num_classes=_num_classes(train),
            input_shape=_input_shape(train, spec),
        )
    raise PrunekitError(
        f"data: {spec} returned {type(result).__name__}; it must return a "
        f"prunekit.data.DataSplits or a (train, test) pair of torch.utils.data.Dataset"
    )


def _input_shape(dataset: Dataset, spec: str) -> tuple[int, ...]:
    try:
        sample = dataset[0]
    except Exception as err:
        raise PrunekitError(f"data: {spec}: reading train[0] failed: {err}") from err
    inputs = sample[0] if isinstance(sample, (tuple, list)) else sample
    if not isinstance(inputs, torch.Tensor):
        raise PrunekitError(
            f"data: {spec}: a sample must be a tensor or an (inputs, label) tuple of tensors; "
            f"got {type(inputs).__name__}"
        )
    return tuple(inputs.shape)


def _num_classes(dataset: Dataset) -> int | None:
    # Only cheap to know for tensor datasets; other datasets would need a full pass.
    tensors = getattr(dataset, "tensors", None)
    if tensors is None or len(tensors) < 2:
        return None
    labels = tensors[1]
    if labels.dtype.is_floating_point or labels.numel() == 0:
        return None
    return int(labels.max()) + 1


register_dataset(
    DatasetInfo("digits", lambda _: load_digits_splits(), "scikit-learn's 8×8 digits, 10 classes")
)
register_dataset(
    DatasetInfo(
        "fashion-mnist",
        load_fashion_mnist,
        "28×28 clothing images, 10 classes (Debian dataset-fashion-mnist or a folder)",
        arg="DIR",
    )
)
register_dataset(
    DatasetInfo(
        "text",
        load_text,
        "a text file, one sample per line; last 10% of lines held out (needs tokenizer=)",
        arg="FILE",
        arg_required=True,
        options=("tokenizer", "seq_len", "mode", "eval_fraction"),
    )
)
