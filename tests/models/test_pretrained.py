"""Builtins train on first use, cache as safetensors + JSON, and load from the cache after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prunekit.data import load_data
from prunekit.measure.accuracy import top1_accuracy
from prunekit.models import (
    build,
    cache_files,
    cached_record,
    default_cache_dir,
    model_info,
    pretrained,
)
from prunekit.models import cache as model_cache


def test_cache_dir_honours_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    assert cache_files("lenet5")[0] == tmp_path / "models" / "lenet5.safetensors"


def test_unusable_cache_is_retrained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    weights, record = cache_files("digits-cnn", tmp_path)
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"not safetensors")
    # A record with the current recipe, so only the broken weights force retraining.
    record.write_text(json.dumps({"recipe": model_info("digits-cnn").recipe.to_dict()}))
    trained = []

    def fake_train(info, *_args):
        trained.append(info.name)
        return build(info.name)

    monkeypatch.setattr(model_cache, "_train_and_cache", fake_train)
    model = pretrained("digits-cnn", cache_dir=tmp_path, progress=False)
    assert trained == ["digits-cnn"] and not model.training


@pytest.mark.slow
def test_digits_cnn_trains_once_then_loads_from_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model = pretrained("digits-cnn", cache_dir=tmp_path, progress=False)
    assert not model.training
    accuracy, _ = top1_accuracy(model, load_data("digits").loader("test", batch_size=256))
    assert accuracy >= 0.95

    record = cached_record("digits-cnn", tmp_path)
    assert record is not None and record["accuracy"] == pytest.approx(accuracy)
    assert record["dataset"] == "digits" and record["epochs"] >= 1 and record["seconds"] > 0
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [
        "digits-cnn.json",
        "digits-cnn.safetensors",
    ]  # no temporary files left behind

    def no_training(info, *_args):
        raise AssertionError(f"builtin:{info.name} retrained although it is cached")

    monkeypatch.setattr(model_cache, "_train_and_cache", no_training)
    again = pretrained("digits-cnn", cache_dir=tmp_path, progress=False)
    for (name, a), (_, b) in zip(
        model.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
        assert b.is_contiguous(), name


@pytest.mark.slow
def test_training_is_deterministic(tmp_path: Path) -> None:
    a = pretrained("digits-cnn", cache_dir=tmp_path / "a", progress=False)
    b = pretrained("digits-cnn", cache_dir=tmp_path / "b", progress=False)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


@pytest.mark.slow
def test_builtin_spec_uses_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from prunekit.specs import load_model

    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path))
    model, source = load_model("builtin:digits-cnn")
    assert source["name"] == "digits-cnn" and source["dataset"] == "digits"
    assert cache_files("digits-cnn")[0].is_file()
    assert torch.equal(
        model.state_dict()["fc2.weight"],
        pretrained("digits-cnn", progress=False).state_dict()["fc2.weight"],
    )
