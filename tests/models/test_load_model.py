"""Model SPECs: py: factories with safetensors weights, saved directories, builtins, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import torch

from prunekit.artifact import io
from prunekit.errors import PrunekitError
from prunekit.models import build
from prunekit.specs import load_model

FACTORY = """
import torch
from torch import nn

def make():
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

def not_a_model():
    return 42
"""


@pytest.fixture
def factory_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_models.py"
    path.write_text(FACTORY)
    return path


def test_py_spec_calls_the_factory(factory_file: Path) -> None:
    model, source = load_model(f"py:{factory_file}:make")
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert not model.training
    assert source["kind"] == "py" and source["function"] == "make"
    assert source["file"] == str(factory_file.resolve()) and source["weights"] is None


def test_py_spec_loads_safetensors_weights(factory_file: Path, tmp_path: Path) -> None:
    trained, _ = load_model(f"py:{factory_file}:make")
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)
    weights = tmp_path / "w.safetensors"
    safetensors.torch.save_model(trained, str(weights))

    model, source = load_model(f"py:{factory_file}:make", weights=str(weights))
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(model(x), trained(x))
    assert source["weights"] == str(weights.resolve())


def test_weights_that_do_not_fit_are_rejected(factory_file: Path, tmp_path: Path) -> None:
    weights = tmp_path / "lenet.safetensors"
    safetensors.torch.save_model(build("lenet300"), str(weights))
    with pytest.raises(PrunekitError, match="does not fit"):
        load_model(f"py:{factory_file}:make", weights=weights)
    with pytest.raises(PrunekitError, match=r"\.safetensors"):
        load_model(f"py:{factory_file}:make", weights=tmp_path / "missing.safetensors")


def test_factory_must_return_a_module(factory_file: Path) -> None:
    with pytest.raises(PrunekitError, match=r"returned int.*nn\.Module"):
        load_model(f"py:{factory_file}:not_a_model")


def test_builtin_with_weights_skips_training(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = build("lenet5")
    weights = tmp_path / "lenet5.safetensors"
    safetensors.torch.save_model(reference, str(weights))
    model, source = load_model("builtin:lenet5", weights=weights)
    assert source == {"kind": "builtin", "name": "lenet5", "kwargs": {}, "dataset": "fashion-mnist"}
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(model(x), reference.eval()(x))


def test_saved_directory_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build("digits-cnn").eval()
    source = {"kind": "builtin", "name": "digits-cnn", "kwargs": {}, "dataset": "digits"}
    io.save(model, tmp_path / "saved", source=source)

    loaded, got_source = load_model(str(tmp_path / "saved"))
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(loaded(x), model(x))
    assert got_source == source
    with pytest.raises(PrunekitError, match="carries its own weights"):
        load_model(str(tmp_path / "saved"), weights="w.safetensors")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("hf:bert-base", "is not a folder.*nothing is downloaded"),
        ("builtin:resnet50", "lenet300"),
        ("lenet5", "did you mean builtin:lenet5"),
        ("/nonexistent/dir", "builtin:NAME"),
        ("", "non-empty"),
    ],
)
def test_bad_specs_say_what_to_use(spec: str, match: str) -> None:
    with pytest.raises(PrunekitError, match=match):
        load_model(spec)
