"""Spatial SVD (k×k -> k×1 then 1×k) and ranks chosen from a MACs or parameter budget."""

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.factorize import LowRankConv2d, LowRankLayer, factorize_, spectrum
from prunekit.factorize.budget import LayerCost, allocate
from prunekit.factorize.layers import low_rank_like, matrix
from prunekit.factorize.svd import choose_rank
from prunekit.measure import count_macs, count_params
from tests.factorize.helpers import accuracy as _accuracy
from tests.factorize.helpers import same as _same
from tests.factorize.helpers import state as _state


def _example(digits):
    return next(iter(digits.loader("test", batch_size=16)))[0]


# --------------------------------------------------------------------------- spatial split


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel_size": 3, "padding": 1},
        {"kernel_size": (3, 5), "stride": (2, 1), "padding": (2, 1), "dilation": (2, 1)},
        {"kernel_size": 3, "stride": 2, "padding": 1, "padding_mode": "reflect"},
        {"kernel_size": (5, 3), "padding": "same", "bias": False},
        {"kernel_size": 3, "padding": 1, "padding_mode": "circular", "stride": (1, 2)},
    ],
    ids=["square", "asymmetric", "reflect", "same", "circular"],
)
def test_a_spatial_split_at_full_rank_reproduces_the_conv(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, **kwargs)
    spec = spectrum(matrix(conv, spatial=True))
    new = low_rank_like(conv, *spec.factors(spec.full_rank), spec.full_rank, spatial=True)
    x = torch.randn(2, 3, 11, 10)
    assert isinstance(new, LowRankConv2d) and new.spatial
    kh, kw = conv.kernel_size
    assert new.first.kernel_size == (kh, 1) and new.second.kernel_size == (1, kw)
    with torch.no_grad():
        torch.testing.assert_close(new(x), conv(x), rtol=1e-4, atol=1e-5)


def test_a_separable_filter_bank_is_exact_at_its_spatial_rank_and_not_by_channel():
    # w[o, i, y, x] = sum_r h[o, r, x] v[r, i, y]: rank 2 spatially; by channel it is not.
    torch.manual_seed(0)
    v, h = torch.randn(2, 6, 3), torch.randn(16, 2, 3)
    conv = nn.Conv2d(6, 16, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.einsum("orx,riy->oiyx", h, v))
    spatial = spectrum(matrix(conv, spatial=True))
    channel = spectrum(matrix(conv))
    assert spatial.error(2) < 1e-6 and channel.error(2) > 0.1
    new = low_rank_like(conv, *spatial.factors(2), 2, spatial=True)
    x = torch.randn(1, 6, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(new(x), conv(x), rtol=1e-4, atol=1e-5)


def test_spatial_factorize_keeps_accuracy_and_round_trips_through_save(trained, digits, tmp_path):
    model = trained()
    test = digits.loader("test", batch_size=512)
    before = _accuracy(model, test)
    report = factorize_(model, pk.LowRankConfig(energy=0.85, decomposition="spatial"))
    convs = {n for n, m in model.named_modules() if isinstance(m, LowRankConv2d)}
    assert convs and all(model.get_submodule(n).spatial for n in convs)
    assert {r.kind for r in report.layers} >= {"Conv2d spatial", "Linear"}
    assert _accuracy(model, test) >= before - 0.02
    x = _example(digits)
    with torch.no_grad():
        expected = model.eval()(x)
    loaded = pk.load(pk.save(model, tmp_path / "spatial"))
    assert all(loaded.get_submodule(n).spatial for n in convs)
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)


# --------------------------------------------------------------------------- budgets


@pytest.mark.parametrize("decomposition", ["channel", "spatial"])
def test_macs_reduction_reaches_the_budget_counted_like_measure(trained, digits, decomposition):
    model = trained()
    x = _example(digits)
    dense = count_macs(model, x).dense
    config = pk.LowRankConfig(macs_reduction=2.0, decomposition=decomposition)
    report = factorize_(model, config, example_inputs=(x,))
    after = count_macs(model, x).dense
    # The search's own cost model agrees with PyTorch's FLOP counter on the rebuilt model.
    assert report.budget["before"] == dense and report.budget["after"] == after
    assert dense / after >= 2.0
    # The highest energy that fits: one step more would break the budget, so it is not far over.
    assert dense / after < 2.6
    assert any(isinstance(m, LowRankLayer) for m in model.modules())


def test_a_tighter_budget_keeps_less_and_costs_accuracy_in_order(trained, digits):
    test = digits.loader("test", batch_size=512)
    x = _example(digits)
    energies, accuracies = [], []
    for reduction in (1.5, 3.0):
        model = trained()
        report = factorize_(model, pk.LowRankConfig(macs_reduction=reduction), data=[(x, None)])
        energies.append(report.budget["energy"])
        accuracies.append(_accuracy(model, test))
    assert energies[0] > energies[1]
    assert accuracies[0] >= accuracies[1] and accuracies[0] > 0.9


def test_params_reduction_counts_the_whole_model(trained):
    model = trained()
    before = count_params(model)
    report = factorize_(model, pk.LowRankConfig(params_reduction=3.0))
    assert before / count_params(model) >= 3.0
    assert count_params(model) == sum(p.numel() for p in model.parameters())
    assert report.budget["kind"] == "params" and report.budget["after"] == count_params(model)


def test_an_unreachable_budget_says_what_is_reachable_and_changes_nothing(trained, digits):
    model = trained()
    before = _state(model)
    with pytest.raises(pk.PrunekitError, match=r"macs_reduction: 500× is out of reach.*gives"):
        factorize_(model, pk.LowRankConfig(macs_reduction=500), example_inputs=_example(digits))
    assert _same(model, before)


def test_macs_reduction_without_inputs_is_refused(trained):
    model = trained()
    before = _state(model)
    with pytest.raises(pk.PrunekitError, match="pass example_inputs"):
        factorize_(model, pk.LowRankConfig(macs_reduction=2.0))
    assert _same(model, before)


def test_allocation_takes_rank_from_the_layer_whose_spectrum_falls_off_fast():
    steep = spectrum(torch.diag(torch.tensor([10.0, 1.0, 0.1, 0.01] + [0.001] * 12)))
    flat = spectrum(torch.eye(16))
    spectra = {"steep": steep, "flat": flat}
    costs = {name: LayerCost(dense=256, per_rank=32) for name in spectra}

    def choose(spec, energy):
        return choose_rank(spec, energy=energy)

    # 512 / 1.5 = 341 allowed: the steep layer at rank 2 (99.99 % of its energy) is enough;
    # the flat one at that energy would cost more factorized than whole.
    found = allocate(spectra, costs, total=512, reduction=1.5, choose=choose, what="params")
    assert found.ranks == {"steep": 2} and found.total_after == 512 - 256 + 2 * 32
    # 512 / 1.7 = 301: rank 1 is the only way, at a lower energy.
    tighter = allocate(spectra, costs, total=512, reduction=1.7, choose=choose, what="params")
    assert tighter.ranks == {"steep": 1} and tighter.energy < found.energy
    with pytest.raises(pk.PrunekitError, match="out of reach"):
        allocate(spectra, costs, total=512, reduction=10, choose=choose, what="params")


def test_bad_budget_values_are_refused():
    with pytest.raises(ValueError, match="macs_reduction"):
        pk.LowRankConfig(macs_reduction=1.0)
    with pytest.raises(ValueError, match="not several"):
        pk.LowRankConfig(macs_reduction=2.0, params_reduction=2.0)
    with pytest.raises(ValueError, match="decomposition"):
        pk.LowRankConfig(decomposition="tucker")
    config = pk.LowRankConfig(macs_reduction=2.0, decomposition="spatial")
    assert pk.LowRankConfig(**config.to_dict()) == config


# --------------------------------------------------------------------------- composition


@pytest.mark.parametrize(
    ("config", "kind"),
    [
        (pk.Int8DynamicConfig(min_features=0), "Int8Linear"),
        (pk.RTNConfig(bits=4), "WeightOnlyLinear"),
    ],
    ids=["int8-dynamic", "rtn-4bit"],
)
def test_factorized_then_pruned_then_quantized_reloads_exactly(
    trained, digits, tmp_path, config, kind
):
    model = trained()
    factorize_(model, pk.LowRankConfig(rank_ratio=0.75, decomposition="spatial"))
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.3))
    pk.quantize_(model, config)
    assert type(model.fc1.first).__name__ == kind and type(model.fc1.second).__name__ == kind
    x = _example(digits)
    with torch.no_grad():
        expected = model.eval()(x)
    loaded = pk.load(pk.save(model, tmp_path / "m"))
    assert type(loaded.fc1.first).__name__ == kind
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)
    assert _accuracy(loaded, digits.loader("test", batch_size=512)) > 0.9
