"""latency_reduction: the removal is searched for by timing; the search itself is checked with
a deterministic timer (no wall-clock assertion), the call end to end for what it records."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import numpy as np
import pytest

import prunekit as pk
from prunekit.errors import PrunekitError
from prunekit.prune.structured.latency import MAX_RATIO, search_latency
from tests import zoo


def _search(target: float, speed_of_ratio):
    def plan_at(ratio: float):
        return {0: np.array([ratio])}

    def timer(removed):
        return speed_of_ratio(float(removed[0][0])), 1.0

    return search_latency(plan_at, timer, target, batch=4)


def test_the_least_removal_measured_at_least_the_target_is_kept():
    removed, search = _search(2.0, lambda r: 1 / (1 - r))  # 2× needs half the units gone
    chosen = float(removed[0][0])
    assert 0.5 <= chosen < 0.5 + MAX_RATIO / 2**6 + 1e-9
    assert all(s < 2.0 for r, s in search.tried if r < chosen)  # every lighter try was slower
    assert search.tried[0] == (MAX_RATIO, pytest.approx(20.0)) and search.batch == 4


def test_a_target_the_smallest_model_cannot_reach_is_refused():
    with pytest.raises(PrunekitError, match=r"latency_reduction=30: .* measured only 20.00×"):
        _search(30.0, lambda r: 1 / (1 - r))


def _time_by_params(models, example_inputs, batch_sizes, min_run_time):
    # A deterministic stand-in for the wall clock: milliseconds proportional to parameters, so
    # the test checks what is recorded, not how loaded the machine is.
    return [
        SimpleNamespace(
            median_ms={b: sum(p.numel() for p in m.parameters()) / 1e3 for b in batch_sizes}
        )
        for m in models
    ]


def test_prune_to_a_latency_shrinks_the_model_and_reports_what_it_measured(monkeypatch):
    # by module object: prunekit.measure.latency, as an attribute path, is the function
    monkeypatch.setattr(
        importlib.import_module("prunekit.measure.latency"), "time_models", _time_by_params
    )
    model, batches = zoo.build("cnn-bn")
    x = batches[0][0]
    config = pk.MagnitudeConfig(pattern="channel", latency_reduction=1.2)
    report = pk.prune_(model, config, example_inputs=x)
    assert report.applied and report.params_after < report.params_before
    assert report.latency_batch == len(x) and len(report.latency_tried) == 7
    dense_ms, pruned_ms = report.latency_ms
    assert dense_ms > 0 and pruned_ms > 0 and report.speedup == dense_ms / pruned_ms
    assert any("latency in PyTorch at batch" in n for n in report.notes())
    assert report.to_dict()["speedup"] == report.speedup


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"latency_reduction": 2.0, "macs_reduction": 2.0}, "leave macs_reduction unset"),
        ({"latency_reduction": 2.0, "sparsity": 0.5}, "leave sparsity unset"),
        ({"latency_reduction": 2.0, "pattern": "unstructured"}, "structured pruning only"),
        ({"latency_reduction": 1.0}, "greater than 1"),
    ],
)
def test_bad_latency_configs_are_refused_when_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pk.MagnitudeConfig(**{"pattern": "channel", **kwargs})


def test_a_gradual_schedule_refuses_latency_reduction_before_training():
    model, batches = zoo.build("cnn-bn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = pk.MagnitudeConfig(pattern="channel", latency_reduction=1.5)
    with pytest.raises(PrunekitError, match="latency_reduction is measured on the finished"):
        pk.finetune_(model, batches, epochs=1, prune=config, example_inputs=batches[0][0])
    assert all((v == before[k]).all() for k, v in model.state_dict().items())
