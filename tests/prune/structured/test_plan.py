"""Rounding kept counts, and a MACs target under round_to: as near as whole steps allow."""

import numpy as np
import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.models import VGGBN
from prunekit.prune.structured import analyze
from prunekit.prune.structured.graph import DependencyGraph
from prunekit.prune.structured.plan import Limits, keep_count, per_unit, unit_step
from tests import hf_zoo

ROUND_TO = 8


def _vgg() -> tuple[nn.Module, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    return VGGBN().eval(), (torch.randn(1, 1, 28, 28),)


MODELS = {"vgg-bn": _vgg, "gpt2": lambda: (hf_zoo.gpt2(), hf_zoo.text_inputs())}


def _removed(graph: DependencyGraph, plan: dict[str, dict[int, list[int]]]) -> dict:
    """The report's plan as a removal mask per group (a unit goes with its main member's slice)."""
    out = {}
    for g in graph.groups:
        main = g.members[0]
        out[g.id] = np.isin(main.index[:, 0], plan.get(main.param, {}).get(main.dim, []))
    return out


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize(("name", "target"), [("vgg-bn", 2.0), ("vgg-bn", 3.0), ("gpt2", 1.5)])
def test_a_macs_target_under_round_to_stops_within_one_step_of_one_group(name, target, scope):
    model, inputs = MODELS[name]()
    config = pk.MagnitudeConfig(
        pattern="channel", macs_reduction=target, round_to=ROUND_TO, scope=scope
    )
    report = pk.prune_(model, config, example_inputs=inputs, dry_run=True)
    assert report.macs_reduction >= target  # a target is a minimum

    graph = analyze(model, inputs)
    removed = _removed(graph, report.plan)
    goal = graph.count()[1] / target
    reached = graph.count(removed)[1]
    assert reached <= goal
    pruned = [g for g in graph.groups if removed[g.id].any()]
    assert pruned
    for g in pruned:
        kept = int((~removed[g.id]).sum())
        assert kept * per_unit(g) % ROUND_TO == 0, g.name
        # Putting back this group's next round_to channels would miss the target: the plan
        # removes no whole step that the target leaves room for.
        grown = removed[g.id].copy()
        grown[np.flatnonzero(grown)[: unit_step(g, Limits(round_to=ROUND_TO))]] = False
        assert graph.count({**removed, g.id: grown})[1] > goal, g.name


def test_kept_counts_round_up_or_to_the_nearest_step():
    model = nn.Sequential(
        nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 2)
    )
    wide, narrow = analyze(model, torch.randn(2, 4)).groups  # 64 and 12 neurons
    up, nearest = Limits(round_to=8), Limits(round_to=8, nearest=True)
    assert keep_count(wide, 0.6, up) == 32  # 26 kept → the next multiple of 8
    assert keep_count(wide, 0.6, nearest) == 24  # 26 is nearer 24
    assert keep_count(wide, 0.55, nearest) == 32  # 29 is nearer 32
    assert keep_count(wide, 0.6, Limits(30, 8, nearest=True)) == 32  # 24 < min_channels
    assert keep_count(narrow, 1 / 12, nearest) == 12  # 11: the whole group is nearer than 8
    assert keep_count(narrow, 0.25, nearest) == 8  # 9
    for limits in (Limits(), Limits(nearest=True)):
        assert keep_count(wide, 0.6, limits) == 26  # round_to=1: nothing to round
