"""split/chunk: equal parts are pruned at the same positions so they stay equal; unequal
parts cannot follow a pruned width and are blocked."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunekit as pk
from prunekit.prune.structured import analyze
from prunekit.prune.structured.trace import run_model
from tests import zoo
from tests.prune.structured.test_equivalence import masked_reference


class FusedSwiGLU(nn.Module):
    """A Phi-3 style MLP: one gate_up projection chunked into the gate and up halves."""

    def __init__(self, dim: int = 16, hidden: int = 24):
        super().__init__()
        self.inp = nn.Linear(8, dim)
        self.gate_up = nn.Linear(dim, 2 * hidden)
        self.down = nn.Linear(hidden, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(self.inp(x)).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Parts(nn.Module):
    """A projection split into two parts that feed separate layers."""

    def __init__(self, sizes: int | list[int]):
        super().__init__()
        self.sizes = sizes
        self.proj = nn.Linear(8, 16)
        self.a, self.b = nn.LazyLinear(4), nn.LazyLinear(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, *rest = self.proj(x).split(self.sizes, dim=-1)
        return self.a(first) + self.b(torch.cat(rest, dim=-1))


def _prune_and_compare(model, inputs, **config):
    dense = copy.deepcopy(model)
    report = pk.prune_(
        model, pk.MagnitudeConfig(pattern="channel", verify=False, **config), example_inputs=inputs
    )
    assert report.applied and report.plan
    with torch.no_grad():
        outputs = run_model(model, inputs)
    for out, ref in zip(outputs, masked_reference(dense, report.plan, inputs), strict=True):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    return report


@pytest.mark.parametrize(
    "config",
    [dict(sparsity=0.2, scope="global"), dict(macs_reduction=1.3, round_to=2)],
    ids=["global", "macs"],
)
def test_chunked_halves_keep_equal_widths(config):
    model, batches = zoo.build("split-norms")
    model.eval()
    report = _prune_and_compare(model, batches[0][0], **config)
    half = model.gn.num_channels
    assert model.stem.out_channels == 2 * half < 16
    assert model.dw.in_channels == model.dw.groups == half
    assert report.params[1] < report.params[0]


def test_the_halves_of_a_chunk_are_one_unit():
    model, batches = zoo.build("split-norms")
    graph = analyze(model.eval(), batches[0][0])
    group = next(
        g for g in graph.groups if any(m.param == "stem.weight" and m.dim == 0 for m in g.members)
    )
    stem = next(m for m in group.members if m.param == "stem.weight")
    # a GroupNorm group (2 channels of the first half) with the same positions of the second
    assert sorted(stem.index[0].tolist()) == [0, 1, 8, 9]


def test_fused_gate_up_prunes_gate_and_up_together():
    torch.manual_seed(0)
    model = FusedSwiGLU().eval()
    _prune_and_compare(model, torch.randn(4, 8), sparsity=0.3, scope="global")
    assert model.gate_up.out_features == 2 * model.down.in_features < 48


@pytest.mark.parametrize("sizes", [[6, 10], 6], ids=["sizes", "remainder"])
def test_unequal_parts_are_blocked(sizes):
    torch.manual_seed(0)
    model = Parts(sizes)
    inputs = torch.randn(4, 8)
    model(inputs)
    graph = analyze(model.eval(), inputs)
    assert not any(m.param == "proj.weight" for g in graph.groups for m in g.members)
    reasons = {b.reason for b in graph.blocked if b.param == "proj.weight"}
    assert any("unequal sizes" in r for r in reasons)


def test_equal_parts_of_a_literal_split_are_pruned_together():
    torch.manual_seed(0)
    model = Parts(8)
    inputs = torch.randn(4, 8)
    model(inputs)
    graph = analyze(model.eval(), inputs)
    group = next(
        g for g in graph.groups if any(m.param == "proj.weight" and m.dim == 0 for m in g.members)
    )
    proj = next(m for m in group.members if m.param == "proj.weight")
    assert proj.index.shape[1] == 2
    assert (proj.index[:, 1] - proj.index[:, 0]).tolist() == [8] * 8
