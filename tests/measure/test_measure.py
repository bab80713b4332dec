"""Measurement: exact counts, MACs against hand formulas, latency, accuracy, reports."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.measure import (
    compare,
    count_macs,
    count_nonzeros,
    count_params,
    latency,
    measure,
    per_layer_sparsity,
    time_models,
    top1_accuracy,
)
from prunekit.measure.counting import dense_bytes
from tests.zoo import SmallCNNBN as CNNBN

FAST = {"min_run_time": 0.02, "batch_sizes": (1, 4)}


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(10, 20)
        self.fc2 = nn.Linear(20, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class DictModel(nn.Module):
    """Takes keyword tensors and returns an object with ``.logits``, as Hugging Face models do."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(16, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        h = (self.embed(input_ids) * attention_mask[..., None]).mean(dim=1)
        return SimpleNamespace(logits=self.head(h))


class FakeClock:
    """Stands in for the ``time`` module of the latency code; only ``Ticking`` models move it."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class Ticking(nn.Module):
    """Takes exactly ``ms`` milliseconds of a fake clock per call."""

    def __init__(self, clock: FakeClock, ms: float) -> None:
        super().__init__()
        self.clock, self.ms = clock, ms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.now += self.ms / 1000
        return x


def _cnn_data(n_batches: int = 2, batch: int = 6) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(batch, 1, 8, 8, generator=g), torch.randint(0, 10, (batch,), generator=g))
        for _ in range(n_batches)
    ]


def _no_hooks(model: nn.Module) -> bool:
    return (
        all(
            not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
            for m in model.modules()
        )
        and not nn.modules.module._global_forward_hooks
        and not (nn.modules.module._global_forward_pre_hooks)
    )


def test_params_and_nonzeros_are_exact() -> None:
    torch.manual_seed(0)
    model = MLP()
    with torch.no_grad():
        model.fc1.weight[:, :5] = 0  # 20 x 5 = 100 of fc1's 200 weights
        model.fc2.bias.zero_()  # 5 more zeros, outside any prunable weight
    assert count_params(model) == 10 * 20 + 20 + 20 * 5 + 5 == 325
    assert count_nonzeros(model) == 325 - 105
    assert dense_bytes(model) == 4 * 325
    assert per_layer_sparsity(model) == {"fc1": 0.5, "fc2": 0.0}


def test_tied_weight_counts_once() -> None:
    model = nn.Sequential(nn.Embedding(12, 6), nn.Linear(6, 12, bias=False))
    model[1].weight = model[0].weight
    assert count_params(model) == 72


def test_linear_macs_at_batch_one() -> None:
    layer = nn.Linear(20, 30)
    assert count_macs(layer, torch.randn(1, 20)).dense == 600
    assert count_macs(layer, torch.randn(4, 20)).dense == 4 * 600


@pytest.mark.parametrize(
    ("conv", "shape", "hand"),
    [
        # MACs = C_out * H_out * W_out * (C_in / groups) * kH * kW
        (nn.Conv2d(3, 8, 3, padding=1), (1, 3, 10, 10), 8 * 10 * 10 * 3 * 3 * 3),
        (nn.Conv2d(3, 6, 5, stride=2), (1, 3, 13, 13), 6 * 5 * 5 * 3 * 5 * 5),
        (nn.Conv2d(4, 4, 3, groups=4), (1, 4, 8, 8), 4 * 6 * 6 * 1 * 3 * 3),
        (nn.Conv1d(2, 5, 3), (1, 2, 10), 5 * 8 * 2 * 3),
    ],
)
def test_conv_macs_match_hand_formula(conv: nn.Module, shape: tuple[int, ...], hand: int) -> None:
    model = nn.Sequential(conv, nn.ReLU())
    macs = count_macs(model, torch.randn(shape))
    assert macs.dense == hand
    assert macs.per_module["0"] == hand and macs.per_module["1"] == 0


def test_effective_macs_halve_with_half_the_weights_zero() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(20, 30)
    with torch.no_grad():
        layer.weight[:, ::2] = 0
    macs = count_macs(layer, torch.randn(1, 20))
    assert (macs.dense, macs.effective) == (600, 300)

    model = nn.Sequential(layer, nn.ReLU(), nn.Linear(30, 20))
    with torch.no_grad():
        model[2].weight.fill_(1.0)
    macs = count_macs(model, torch.randn(1, 20))
    assert macs.per_module == {"": 1200, "0": 600, "1": 0, "2": 600}
    assert (macs.dense, macs.effective) == (1200, 900)


def test_latency_medians_are_positive_and_attributed_to_each_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A clock only the models advance: exact medians, whatever the machine's load.
    clock = FakeClock()
    monkeypatch.setattr(latency, "time", clock)
    fast, slow = Ticking(clock, 1.0), Ticking(clock, 3.0)
    results = time_models([fast, slow], torch.randn(2, 8), batch_sizes=(1, 3), min_run_time=0.02)
    assert len(results) == 2
    for r in results:
        assert set(r.median_ms) == {1, 3}
        assert r.threads == torch.get_num_threads()
        assert all(n >= 5 for n in r.rounds.values())
        assert "interleaved" in r.method
    assert results[0].median_ms == pytest.approx({1: 1.0, 3: 1.0})
    assert results[1].median_ms == pytest.approx({1: 3.0, 3: 3.0})


def test_timing_a_conv_net_leaves_it_trainable_in_its_own_layout() -> None:
    # Conv nets are timed in channels_last; the layout change must not turn the user's weights
    # into inference tensors (they could no longer be trained) nor leave the layout changed.
    model = CNNBN()
    time_models([model], torch.randn(2, 1, 8, 8), batch_sizes=(1,), min_run_time=0.01)
    assert not any(t.is_inference() for t in [*model.parameters(), *model.buffers()])
    assert all(p.is_contiguous() for p in model.parameters())
    model.train()
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_latency_rejects_bad_batch_sizes() -> None:
    with pytest.raises(PrunekitError, match="batch_sizes"):
        time_models([nn.Linear(2, 2)], torch.randn(1, 2), batch_sizes=(0,))


def test_accuracy_counts_arg_max_hits_and_restores_mode() -> None:
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    labels = torch.tensor([1, 0, 0, 0])
    model = nn.Identity().train()
    assert top1_accuracy(model, [(logits, labels)]) == (0.75, 4)
    assert model.training
    assert top1_accuracy(model, [(logits, labels), (logits, labels)], num_samples=4) == (0.75, 4)
    assert top1_accuracy(model, [logits]) is None


def test_accuracy_on_dict_batches_with_labels() -> None:
    torch.manual_seed(0)
    model = DictModel()
    ids = torch.randint(0, 16, (6, 5))
    mask = torch.ones(6, 5)
    with torch.no_grad():
        labels = model(ids, mask).logits.argmax(-1)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    assert top1_accuracy(model, [batch]) == (1.0, 6)


def test_measure_leaves_model_untouched() -> None:
    torch.manual_seed(0)
    model = CNNBN().train()
    model.bn.eval()  # a frozen part inside a training model must stay frozen
    state = {k: v.clone() for k, v in model.state_dict().items()}
    m = measure(model, _cnn_data(), **FAST)
    assert model.training and not model.bn.training and model.conv.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert _no_hooks(model)

    params = count_params(model)
    assert (m.params, m.nonzeros, m.dense_bytes) == (params, count_nonzeros(model), 4 * params)
    assert m.macs == count_macs(model, torch.randn(1, 1, 8, 8)).dense
    assert m.effective_macs == m.macs
    assert m.accuracy is not None and 0 <= m.accuracy <= 1 and m.accuracy_samples == 12
    assert m.artifact_bytes is not None and m.artifact_bytes > m.dense_bytes
    assert set(m.latency_ms) == {1, 4} and m.threads == torch.get_num_threads()
    assert json.loads(json.dumps(m.to_dict()))["latency_ms"].keys() == {"1", "4"}
    assert "MACs effective" in str(m) and "| latency b=4 (ms) |" in m.to_markdown()


def test_measure_without_labels_or_data() -> None:
    torch.manual_seed(0)
    model = MLP()
    m = measure(model, [torch.randn(3, 10)], latency=False, artifact=False)
    assert m.accuracy is None and m.latency_ms is None and m.artifact_bytes is None
    assert m.macs == 10 * 20 + 20 * 5
    bare = measure(model, latency=False, artifact=False)
    assert bare.macs is None and bare.params == count_params(model)


def test_measure_dict_example_inputs() -> None:
    torch.manual_seed(0)
    model = DictModel()
    inputs = {"input_ids": torch.randint(0, 16, (2, 5)), "attention_mask": torch.ones(2, 5)}
    m = measure(model, example_inputs=inputs, artifact=False, **FAST)
    assert m.macs == 8 * 3  # only the head multiplies; the embedding is a lookup
    assert all(ms > 0 for ms in m.latency_ms.values())


def test_measure_rejects_one_shot_iterators() -> None:
    batches = (b for b in _cnn_data())
    with pytest.raises(PrunekitError, match="one-shot iterator"):
        measure(CNNBN(), batches, latency=False, artifact=False)


def test_compare_ratios_equal_after_over_before() -> None:
    torch.manual_seed(0)
    dense = CNNBN()
    sparse = copy.deepcopy(dense)
    with torch.no_grad():
        sparse.head.weight[:, ::2] = 0
    c = compare(dense, sparse, _cnn_data(), **FAST)
    b, a = c.before, c.after

    for f in ("params", "nonzeros", "dense_bytes", "artifact_bytes", "macs", "effective_macs"):
        assert c.ratios[f] == getattr(a, f) / getattr(b, f), f
    for size in (1, 4):
        assert c.ratios[f"latency_b{size}_ms"] == a.latency_ms[size] / b.latency_ms[size]
    assert c.deltas["accuracy"] == a.accuracy - b.accuracy
    assert c.deltas["prunable_sparsity"] == pytest.approx(
        (4 * 8 * 8 * 10 / 2) / (4 * 9 + 4 * 8 * 8 * 10)
    )
    assert a.macs == b.macs and a.effective_macs < b.effective_macs
    head_macs = 4 * 8 * 8 * 10
    assert b.effective_macs - a.effective_macs == head_macs // 2
    assert json.loads(json.dumps(c.to_dict()))["ratios"]["params"] == 1.0


def test_comparison_renders_every_row() -> None:
    torch.manual_seed(0)
    model = CNNBN()
    c = compare(model, copy.deepcopy(model), _cnn_data(), min_run_time=0.02)
    rows = [
        "accuracy (%)",
        "parameters",
        "non-zeros",
        "sparsity",
        "dense fp32 bytes",
        "artifact bytes",
        "MACs dense",
        "MACs effective",
        "latency b=1 (ms)",
        "latency b=64 (ms)",
    ]
    text, markdown = str(c), c.to_markdown()
    for row in rows:
        assert row in text and f"| {row}" in markdown, row
    assert f"{torch.get_num_threads()} threads" in text
    assert "interleaved" in text
    assert "1.000×" in text  # identical models: params ratio


@pytest.mark.parametrize("method", ["int8-dynamic", "int8-static"])
def test_int8_layers_count_the_macs_of_the_layers_they_replace(method) -> None:
    # fbgemm's int8 kernels are unknown to FlopCounterMode; a quantized model is not cheaper
    # in MACs than the float one (only each MAC is), and its zeros still count as skipped.
    import prunekit as pk
    from tests.zoo import build

    model, batches = build("cnn-bn" if method == "int8-static" else "mlp")
    x = batches[0][0]
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.5))
    before = count_macs(model, x)
    config = (
        pk.Int8StaticConfig(num_samples=16)
        if method == "int8-static"
        else pk.Int8DynamicConfig(min_features=0)
    )
    pk.quantize_(model, config, data=batches)
    after = count_macs(model, x)
    assert (after.dense, after.effective) == (before.dense, before.effective)
    assert after.effective < after.dense
