"""accelerate_: kernel choice (fake timer, no wall-clock assertions), tolerance, save/load."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.accelerate import CSRLinear
from prunekit.accelerate.choose import Measured, choose
from prunekit.artifact.io import artifact_bytes
from prunekit.quantize.layers import Int8Linear


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
    )


def pruned(ignore: list[str] | None = None) -> nn.Sequential:
    model = mlp()
    config = pk.MagnitudeConfig(sparsity=0.95, scope="global", ignore=ignore or [])
    pk.prune_(model, config)
    return model.eval()


def timer_from(seconds: dict[str, float]):
    """A fake timer: each kernel takes a fixed time, whatever it runs (``"csr"``: both CSR
    implementations, unless one is named)."""
    return lambda kernel, call, number: seconds.get(kernel, seconds.get(kernel.split("/")[0]))


CSR_FAST = timer_from({"dense": 4.0, "csr": 1.0, "int8": 8.0})
X = torch.randn(8, 64, generator=torch.Generator().manual_seed(1))


def test_sparse_layers_swap_to_csr_within_tolerance():
    model = pruned()
    before = model(X)
    report = pk.accelerate_(model, (X,), batch_sizes=[1, 8], timer=CSR_FAST)
    swapped = {n for n, m in model.named_modules() if isinstance(m, CSRLinear)}
    assert swapped and set(report.swapped) == swapped
    assert set(report.swapped.values()) == {"csr/mkl"}  # the first of two equally fast
    torch.testing.assert_close(model(X), before, rtol=1e-5, atol=1e-6)
    for row in report.layers:
        if row.kernel != "dense":
            assert row.speedup == {1: 4.0, 8: 4.0}
            assert row.errors["csr/mkl"] < 1e-5 and row.errors["csr/bag"] < 1e-5
            assert set(row.microseconds) == {"dense", "csr/mkl", "csr/bag", "int8"}
    json.dumps(report.to_dict())
    assert "csr" in report.to_markdown()


def test_dense_layer_stays_dense_and_says_why():
    model = pruned(ignore=["4"])  # the last layer keeps all its weights
    report = pk.accelerate_(model, X, kernels=["dense", "csr"], timer=CSR_FAST)
    assert isinstance(model[4], nn.Linear)
    row = next(r for r in report.layers if r.name == "4")
    assert row.kernel == "dense" and row.sparsity == 0.0
    assert "min_sparsity" in row.reason and report.skipped["4"] == row.reason


def test_slower_kernel_keeps_dense():
    model = pruned()
    slow = timer_from({"dense": 1.0, "csr": 1.05, "int8": 3.0})
    report = pk.accelerate_(model, X, timer=slow)
    assert not report.swapped
    assert all(isinstance(m, nn.Linear) for m in (model[0], model[2], model[4]))
    assert any("slower" in why for why in report.skipped.values())


def test_a_kernel_must_win_at_every_batch_size():
    measured = Measured(
        seconds={"dense": {1: 1.0, 64: 10.0}, "csr": {1: 2.0, 64: 2.0}}, errors={"csr": 0.0}
    )
    kernel, why = choose(measured, ["dense", "csr"], rtol=1e-3, min_speedup=1.1)
    assert kernel == "dense" and "0.50× at batch 1" in why
    measured.seconds["csr"][1] = 0.5
    assert choose(measured, ["dense", "csr"], rtol=1e-3, min_speedup=1.1) == ("csr", None)


def test_save_load_gives_identical_outputs_and_a_smaller_folder(tmp_path):
    model = pruned()
    pk.accelerate_(model, X, timer=CSR_FAST)
    out = model(X)
    pk.save(model, tmp_path / "csr")
    pk.save(mlp(), tmp_path / "dense")
    manifest = json.loads((tmp_path / "csr" / "manifest.json").read_text())
    assert {e["kind"] for e in manifest["swaps"]} == {"csr"}
    assert not any(name.endswith("weight") for name in manifest["tensors"])
    loaded = pk.load(tmp_path / "csr", model=mlp())
    assert isinstance(loaded[0], CSRLinear)
    assert torch.equal(loaded(X), out)
    assert artifact_bytes(tmp_path / "csr") < artifact_bytes(tmp_path / "dense") / 3


def test_embedding_bag_csr_is_chosen_when_faster_and_loads(tmp_path):
    model = pruned()
    before = model(X)
    bag_fast = timer_from({"dense": 4.0, "csr/mkl": 2.0, "csr/bag": 1.0, "int8": 8.0})
    report = pk.accelerate_(model, X, timer=bag_fast)
    assert set(report.swapped.values()) == {"csr/bag"} and model[0].impl == "bag"
    torch.testing.assert_close(model(X), before, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model(X[0]), before[0], rtol=1e-5, atol=1e-6)  # no batch dim
    pk.save(model, tmp_path / "m")
    loaded = pk.load(tmp_path / "m", model=mlp())
    assert loaded[0].impl == "bag" and torch.equal(loaded(X), model(X))


def test_int8_is_chosen_when_faster_and_loads(tmp_path):
    model = pruned()
    int8_fast = timer_from({"dense": 4.0, "csr": 8.0, "int8": 1.0})
    report = pk.accelerate_(model, X, kernels=["dense", "int8"], rtol=0.5, timer=int8_fast)
    assert set(report.swapped.values()) == {"int8"}
    assert isinstance(model[0], Int8Linear)
    out = model(X)
    pk.save(model, tmp_path / "m")
    assert torch.equal(pk.load(tmp_path / "m", model=mlp())(X), out)


def test_forced_kernel_beyond_tolerance_keeps_dense():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 256))
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.6))
    x = torch.randn(16, 512)
    before = model(x)
    # 200 products per output summed in another order than the dense kernel's: float32
    # rounding differences, far above 1e-12.
    report = pk.accelerate_(model, x, kernels=["csr"], rtol=1e-12, timer=CSR_FAST)
    assert not report.swapped and isinstance(model[0], nn.Linear)
    assert "outputs off by" in report.skipped["0"] and "rtol 1e-12" in report.skipped["0"]
    assert torch.equal(model(x), before)


def test_forced_kernel_swaps_however_slow():
    model = pruned()
    slow = timer_from({"dense": 1.0, "csr": 5.0, "int8": 5.0})
    report = pk.accelerate_(model, X, kernels=["csr"], timer=slow)
    assert report.swapped and set(report.swapped.values()) == {"csr/mkl"}


@pytest.mark.parametrize(
    "inputs, match",
    [(None, "example_inputs"), (torch.randn(4, 10), "example_inputs"), ("x", "example_inputs")],
)
def test_bad_inputs_leave_the_model_unchanged(inputs, match):
    model = pruned()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(pk.PrunekitError, match=match):
        pk.accelerate_(model, inputs, timer=CSR_FAST)
    assert all(type(m) in (nn.Linear, nn.ReLU) for m in model)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks for m in model.modules())
    assert not model.__dict__.get("_prunekit_swaps")


def test_bad_options():
    model = pruned()
    with pytest.raises(ValueError, match="kernels"):
        pk.accelerate_(model, X, kernels=["dense"])
    with pytest.raises(ValueError, match="kernels"):
        pk.accelerate_(model, X, kernels=["cuda-magic"])
    with pytest.raises(pk.PrunekitError, match="not both"):
        pk.accelerate_(model, X, pk.AccelerateConfig(), rtol=0.1)
    with pytest.raises(pk.PrunekitError, match="targets"):
        pk.accelerate_(model, X, targets=["nope"])


def test_targets_and_ignore():
    model = pruned()
    report = pk.accelerate_(model, X, targets=["Linear"], ignore=["0"], timer=CSR_FAST)
    assert "0" not in {r.name for r in report.layers}
    assert isinstance(model[0], nn.Linear)


def test_corrupt_csr_indices_are_refused():
    layer = CSRLinear.from_layer(pruned()[0])
    state = layer.state_dict()
    assert layer.state_problem(state) is None
    bad = dict(state, col_indices=state["col_indices"].clone().fill_(64))
    assert "col_indices" in layer.state_problem(bad)
    bad = dict(state, crow_indices=state["crow_indices"].flip(0))
    assert layer.state_problem(bad)


@pytest.mark.parametrize("impl", ["mkl", "bag"])
def test_csr_layer_matches_dense_on_any_leading_shape(impl):
    dense = pruned()[0]
    layer = CSRLinear.from_layer(dense, impl)
    for x in (torch.randn(64), torch.randn(3, 5, 64), torch.randn(600, 64)):  # 600: 3 blocks
        torch.testing.assert_close(layer(x), dense(x), rtol=1e-5, atol=1e-5)
