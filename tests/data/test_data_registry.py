"""Data SPECs, the dataset registry and deterministic loaders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from prunekit.data import DatasetInfo, DataSplits, accepted_forms, datasets, load_data
from prunekit.data import registry as data_registry
from prunekit.errors import PrunekitError


def labels_of(loader: torch.utils.data.DataLoader) -> list[int]:
    return [int(v) for _, y in loader for v in y]


def test_builtin_names_are_registered() -> None:
    assert {"digits", "fashion-mnist"} <= set(datasets())
    assert "fashion-mnist:DIR" in accepted_forms() and "py:FILE.py:FUNCTION" in accepted_forms()


@pytest.mark.parametrize("spec", ["mnist", "digits:extra", "fashion-mnist:", "mnist:/data"])
def test_unknown_spec_lists_the_accepted_forms(spec: str) -> None:
    with pytest.raises(PrunekitError) as err:
        load_data(spec)
    for form in ("digits", "fashion-mnist:DIR", "py:FILE.py:FUNCTION"):
        assert form in str(err.value)


@pytest.mark.parametrize(
    ("spec", "match"), [("", "non-empty"), ("py:nofunction", "expected py:FILE.py:FUNCTION")]
)
def test_malformed_spec(spec: str, match: str) -> None:
    with pytest.raises(PrunekitError, match=match):
        load_data(spec)


def test_loader_is_deterministic_under_a_seed() -> None:
    data = load_data("digits")
    first = labels_of(data.loader("train", batch_size=64, seed=3))
    assert first == labels_of(data.loader("train", batch_size=64, seed=3))
    assert first != labels_of(data.loader("train", batch_size=64, seed=4))
    assert sorted(first) == sorted(data.train.tensors[1].tolist())


def test_loader_defaults_shuffle_train_only() -> None:
    data = load_data("digits")
    assert labels_of(data.loader("test")) == data.test.tensors[1].tolist()
    assert labels_of(data.loader("train")) != data.train.tensors[1].tolist()
    assert labels_of(data.loader("train", shuffle=False)) == data.train.tensors[1].tolist()


def test_loader_batches_and_num_samples() -> None:
    data = load_data("digits")
    x, y = next(iter(data.loader("test", batch_size=32)))
    assert x.shape == (32, 1, 8, 8) and y.shape == (32,)
    limited = data.loader("train", batch_size=40, num_samples=100, shuffle=False)
    assert [len(y) for _, y in limited] == [40, 40, 20]
    assert labels_of(limited) == data.train.tensors[1][:100].tolist()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "val"}, "split"),
        ({"batch_size": 0}, "batch_size"),
        ({"num_samples": 0}, "num_samples"),
    ],
)
def test_loader_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"split": "train", **kwargs}
    with pytest.raises(PrunekitError, match=match):
        load_data("digits").loader(**args)


PY_DATA = """
import torch
from torch.utils.data import TensorDataset
from prunekit.data import DataSplits

def pair():
    x = torch.randn(20, 3, 4)
    y = torch.arange(20) % 5
    return TensorDataset(x[:15], y[:15]), TensorDataset(x[15:], y[15:])

def splits():
    train, test = pair()
    return DataSplits("mine", train, test, num_classes=5, input_shape=(3, 4))

def wrong():
    return [1, 2, 3]
"""


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_data.py"
    path.write_text(PY_DATA)
    return path


def test_py_spec_returning_a_pair(data_file: Path) -> None:
    data = load_data(f"py:{data_file}:pair")
    assert (len(data.train), len(data.test)) == (15, 5)
    assert data.num_classes == 5 and data.input_shape == (3, 4)
    x, y = next(iter(data.loader("train", batch_size=4)))
    assert x.shape == (4, 3, 4) and y.shape == (4,)


def test_py_spec_returning_data_splits(data_file: Path) -> None:
    data = load_data(f"py:{data_file}:splits")
    assert isinstance(data, DataSplits) and data.name == "mine"


@pytest.mark.parametrize(
    ("suffix", "match"),
    [(":wrong", "must return"), (":absent", "no function 'absent'"), ("x:pair", "not found")],
)
def test_py_spec_errors(data_file: Path, suffix: str, match: str) -> None:
    with pytest.raises(PrunekitError, match=match):
        load_data(f"py:{data_file}{suffix}")


def test_py_spec_with_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("def f(:\n")
    with pytest.raises(PrunekitError, match="SyntaxError"):
        load_data(f"py:{path}:f")


def test_registering_a_dataset_makes_its_spec_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def load(arg: str | None) -> DataSplits:
        seen.append(arg)
        toy = TensorDataset(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
        return DataSplits("toy", toy, toy, num_classes=1, input_shape=(3,))

    monkeypatch.setattr(data_registry, "_DATASETS", dict(data_registry._DATASETS))
    data_registry.register_dataset(
        DatasetInfo("toy", load, "a toy set", arg="FILE", arg_required=True)
    )
    assert "toy" in datasets() and "toy:FILE" in accepted_forms()
    assert load_data("toy:corpus.txt").name == "toy"
    assert seen == ["corpus.txt"]
    with pytest.raises(PrunekitError, match="toy:FILE"):
        load_data("toy")
