"""Groups found, plans honoured, criteria, and bad input: the structured-pruning contract."""

import copy

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.measure.counting import count_params
from prunekit.prune.structured import analyze
from prunekit.prune.structured.api import prune_structured_
from tests import zoo


def _group_with(graph, param, dim):
    return next(g for g in graph.groups if any((m.param, m.dim) == (param, dim) for m in g.members))


def test_couplings_are_found():
    model, batches = zoo.build("cnn-bn")
    g = analyze(model, batches[0][0])
    first = _group_with(g, "features.0.weight", 0)
    coupled = {(m.param, m.dim) for m in first.members}
    assert {("features.1.weight", 0), ("features.1.running_mean", 0),
            ("features.3.weight", 1)} <= coupled  # fmt: skip
    # flatten: each conv channel owns the 16 spatial columns of the linear head
    second = _group_with(g, "features.3.weight", 0)
    head = next(m for m in second.members if m.param == "head.weight")
    assert head.index.shape == (16, 16)
    assert head.index[1].tolist() == list(range(16, 32))

    model, batches = zoo.build("residual")
    g = analyze(model, batches[0][0])
    stream = _group_with(g, "stem.weight", 0)
    assert ("branch.2.weight", 0) in {(m.param, m.dim) for m in stream.members}

    model, batches = zoo.build("head-attention")
    g = analyze(model, batches[0][0])
    heads = _group_with(g, "q.weight", 0)
    assert heads.kind == "head" and heads.size == 2  # a kv head with its 2 query heads
    shape = {(m.param, m.dim): m.index.shape[1] for m in heads.members}
    assert shape == {("q.weight", 0): 16, ("k.weight", 0): 8, ("v.weight", 0): 8,
                     ("o.weight", 1): 16}  # fmt: skip
    reasons = {b.reason for b in g.blocked if b.param == "embed.weight"}
    assert any("index" in r for r in reasons)  # vocabulary rows never go


def test_unknown_ops_block_their_inputs():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 4)

        def forward(self, x):
            return self.b(torch.special.i0(self.a(x)))  # no coupling rule for i0

    g = analyze(Odd(), torch.randn(2, 8))
    assert g.groups == []
    assert any("i0" in b.reason for b in g.blocked)


def test_rounding_minimum_and_layer_ratios():
    model, batches = zoo.build("cnn-bn")
    x = batches[0][0]
    report = pk.prune_(
        model,
        pk.MagnitudeConfig(
            sparsity=0.9,
            pattern="channel",
            round_to=4,
            min_channels=2,
            layer_sparsity={"features.3": 0.25},
        ),
        example_inputs=x,
    )
    conv1, conv2 = model.features[0], model.features[3]
    assert conv1.out_channels == 4  # 10% of 8 is 0.8 → 1, rounded up to a multiple of 4
    assert conv2.out_channels == 12  # its own ratio
    assert model.features[1].num_features == 4 and conv2.in_channels == 4
    assert model.head.in_features == 12 * 16
    assert report.params[1] == count_params(model)


def test_macs_reduction_is_reached():
    model, batches = zoo.build("cnn-bn")
    report = pk.prune_(
        model, pk.MagnitudeConfig(pattern="channel", macs_reduction=3.0),
        example_inputs=batches[0][0],
    )  # fmt: skip
    assert 3.0 <= report.macs_reduction < 4.5


@pytest.mark.parametrize("round_to", [1, 8])
def test_rounding_past_the_macs_target_is_reported(round_to, caplog):
    model, batches = zoo.build("cnn-bn")  # 8- and 16-wide: whole multiples of 8 overshoot
    config = pk.MagnitudeConfig(pattern="channel", macs_reduction=1.2, round_to=round_to)
    with caplog.at_level("WARNING", logger="prunekit"):
        report = pk.prune_(model, config, example_inputs=batches[0][0])
    overshot = report.macs_reduction > 1.2 * 1.05
    assert overshot == (round_to == 8)  # one channel at a time stops near the target
    assert (report.overshoot is not None) == overshot
    assert any("past the target" in n for n in report.notes()) == overshot
    assert ("past the target" in caplog.text) == overshot
    if overshot:
        assert f"reached {report.macs_reduction:.2f}× fewer MACs" in report.overshoot


@pytest.mark.parametrize(
    "config",
    [
        pk.MagnitudeConfig(sparsity=0.5, pattern="channel", norm="l2"),
        pk.MagnitudeConfig(sparsity=0.5, pattern="channel", scope="global"),
        pk.BNScaleConfig(sparsity=0.5),
        pk.TaylorConfig(sparsity=0.5, pattern="channel", num_samples=32),
        pk.RandomConfig(sparsity=0.5, pattern="channel", seed=3),
    ],
    ids=["l2", "global", "bn-scale", "taylor", "random"],
)
def test_every_criterion_prunes_and_stays_equivalent(config):
    model, batches = zoo.build("cnn-bn")
    report = pk.prune_(model, config, data=batches)
    assert report.applied and report.max_diff is not None and report.max_diff < 1e-4
    assert report.params[1] < report.params[0]


def test_criteria_rank_by_their_signal():
    model, batches = zoo.build("cnn-bn")
    with torch.no_grad():
        model.features[1].weight[:] = torch.tensor([1.0, 0.01, 1, 1, 0.02, 1, 1, 1])
    pk.prune_(model, pk.BNScaleConfig(layer_sparsity={"features.0": 0.25}, sparsity=0.0),
              example_inputs=batches[0][0])  # fmt: skip
    assert model.features[1].weight.detach().tolist() == [1.0] * 6


def test_dry_run_leaves_the_model_alone():
    model, batches = zoo.build("cnn-bn")
    before = copy.deepcopy(model.state_dict())
    report = prune_structured_(
        model, pk.MagnitudeConfig(sparsity=0.5, pattern="channel"), batches, dry_run=True
    )
    assert not report.applied and report.params[1] < report.params[0]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert "would remove" in str(report)


def test_head_pattern_prunes_heads_only():
    model, batches = zoo.build("head-attention")
    report = pk.prune_(model, pk.MagnitudeConfig(sparsity=0.5, pattern="head"),
                       example_inputs=batches[0][0])  # fmt: skip
    assert [g.kind for g in report.groups] == ["head"]
    assert model.q.out_features == 16 and model.k.out_features == 8
    assert model.gate.out_features == 64


def _untouched(model, reference):
    a, b = model.state_dict(), reference.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_input_is_a_clear_error_and_the_model_is_untouched():
    model, batches = zoo.build("cnn-bn")
    reference = copy.deepcopy(model)
    config = pk.MagnitudeConfig(sparsity=0.5, pattern="channel")
    with pytest.raises(pk.PrunekitError, match="example_inputs"):
        pk.prune_(model, config, example_inputs=torch.randn(2, 3, 8, 8))
    with pytest.raises(pk.PrunekitError, match="example_inputs"):
        pk.prune_(model, config)
    with pytest.raises(pk.PrunekitError, match="head"):
        pk.prune_(model, pk.MagnitudeConfig(pattern="head"), example_inputs=batches[0][0])
    with pytest.raises(ValueError, match="wanda supports pattern 'unstructured' or 'N:M'"):
        pk.WandaConfig(pattern="channel")
    with pytest.raises(ValueError, match="round_to applies to structured"):
        pk.MagnitudeConfig(round_to=8)
    assert _untouched(model, reference)


def test_a_module_that_reads_stale_attributes_is_rolled_back():
    class Stale(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 16), nn.Linear(16, 4)
            self.width = 16

        def forward(self, x):
            h = torch.relu(self.a(x))
            return self.b(h.reshape(-1, self.width))  # the width comes from an attribute

    model = Stale()
    reference = copy.deepcopy(model)
    with pytest.raises(pk.PrunekitError, match="rolled back"):
        pk.prune_(model, pk.MagnitudeConfig(pattern="channel"), example_inputs=torch.randn(2, 8))
    assert _untouched(model, reference) and model.a.out_features == 16


def test_values_read_outside_torch_are_caught_by_verification():
    class ReadsNumpy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            h = self.a(x)
            scale = float(h.detach().numpy().std())  # invisible to the trace
            return self.b(torch.relu(h) * scale)

    model = ReadsNumpy()
    reference = copy.deepcopy(model)
    with pytest.raises(pk.PrunekitError, match="outside PyTorch"):
        pk.prune_(model, pk.MagnitudeConfig(pattern="channel"), example_inputs=torch.randn(3, 4))
    assert _untouched(model, reference)


def test_a_layer_ratio_that_would_empty_a_layer_is_refused():
    model, batches = zoo.build("cnn-bn")
    config = pk.MagnitudeConfig(pattern="channel", min_channels=4,
                                layer_sparsity={"features.0": 0.75})  # fmt: skip
    with pytest.raises(pk.PrunekitError, match=r"features\.0's 8 channels .* min_channels=4"):
        pk.prune_(model, config, example_inputs=batches[0][0])


def test_pruned_model_fine_tunes():
    model, batches = zoo.build("residual")
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.5, pattern="channel"), data=batches)
    report = pk.finetune_(model, batches, epochs=1, lr=1e-2)
    assert report.steps == len(batches)
    with torch.no_grad():
        assert torch.isfinite(model(batches[0][0])).all()


@pytest.mark.parametrize("schedule", ["iterative", "agp"])
def test_structured_pruning_while_training(schedule):
    model, batches = zoo.build("cnn-bn")
    dense_macs = pk.prune_(
        copy.deepcopy(model), pk.MagnitudeConfig(sparsity=0.0, pattern="channel"), data=batches
    ).macs[0]
    config = pk.TaylorConfig(pattern="channel", macs_reduction=2.0, num_samples=32)
    report = pk.finetune_(model, batches * 3, epochs=2, lr=1e-2, prune=config, schedule=schedule)
    assert len(report.pruning) >= 2  # several small steps with training between
    steps = [p["macs"] for p in report.pruning]
    assert steps == sorted(steps, reverse=True)
    assert dense_macs / steps[-1] >= 2.0
    with torch.no_grad():
        assert torch.isfinite(model(batches[0][0])).all()


def test_failed_structured_training_rolls_back():
    model, batches = zoo.build("cnn-bn")
    reference = copy.deepcopy(model)
    bad = [*batches[:2], (batches[0][0], torch.full((16,), 99))]  # label out of range
    with pytest.raises(IndexError):
        pk.finetune_(model, bad, epochs=1, prune=pk.MagnitudeConfig(sparsity=0.5,
                     pattern="channel"), schedule="iterative")  # fmt: skip
    assert _untouched(model, reference) and model.features[0].out_channels == 8


def test_verification_allows_low_precision_rounding_but_not_a_wrong_model():
    """A shrunk bf16 model rounds differently from the masked one (narrower matmuls): a dozen
    LLaMA blocks moved the logits by 1.1 % of their scale, which the float32 tolerance refused;
    a missed coupling moves them by about the scale, in any dtype."""
    from prunekit.prune.structured.api import _compare

    reference = torch.randn(4, 64, generator=torch.Generator().manual_seed(0)) * 3
    scale = float(reference.abs().max())
    rounded = reference.clone()
    rounded[0, 0] += 0.011 * scale
    wrong = reference.clone()
    wrong[0, 0] += 0.5 * scale
    assert _compare([rounded.bfloat16()], [reference.bfloat16()]) > 0
    with pytest.raises(pk.PrunekitError, match="differs from the masked model"):
        _compare([wrong.bfloat16()], [reference.bfloat16()])
    with pytest.raises(pk.PrunekitError, match="differs from the masked model"):
        _compare([rounded], [reference])


def test_verification_in_chunks_finds_what_the_whole_outputs_show(monkeypatch):
    """The outputs are compared a chunk at a time (float64 copies of a language model's whole
    logits were a third of its bf16 weights): the largest difference, the scale and a NaN are
    found wherever they lie."""
    from prunekit.prune.structured import api

    monkeypatch.setattr(api, "COMPARE_CHUNK", 7)
    g = torch.Generator().manual_seed(0)
    reference = torch.randn(4, 64, generator=g)
    reference[3, 60] = 1000.0  # the scale, in the last chunk: tolerance 0.1 instead of 1e-4
    out = reference + torch.randn(4, 64, generator=g) * 1e-3
    whole = float((out.double() - reference.double()).abs().max())
    assert 1e-4 < api._compare([out], [reference]) == whole
    out[3, 63] = float("nan")
    with pytest.raises(pk.PrunekitError, match="differs from the masked model"):
        api._compare([out], [reference])
