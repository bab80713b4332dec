"""The contract every registered method keeps, checked on every model of the suite.

The cases come from ``prunekit.methods()`` (each pruning method once per pattern it declares),
so a newly registered method is tested here without an edit.
"""

from __future__ import annotations

import json

import pytest
import torch

import prunekit as pk
from prunekit.factorize import LowRankLayer
from prunekit.layout import as_matrix
from prunekit.surgery.swaps import swap_record
from prunekit.targets import select_layers
from tests.conformance.cases import (
    MODEL,
    MODELS,
    REFUSALS,
    Call,
    FaultAt,
    InjectedFault,
    Outcome,
    State,
    Variant,
    differences,
    first_run,
    outcome,
    outputs,
    state,
    torch_calls,
    variants,
)

VARIANTS = variants()
CASES = [(v, m.name) for v in VARIANTS for m in MODELS]
CASE_IDS = [f"{v.id}-{m}" for v, m in CASES]


def _ids(items: list[Variant]) -> list[str]:
    return [v.id for v in items]


# --------------------------------------------------------------------------- runs or refuses


@pytest.mark.parametrize(("variant", "model_name"), CASES, ids=CASE_IDS)
def test_runs_or_refuses_cleanly(variant: Variant, model_name: str) -> None:
    got = outcome(variant, model_name)
    if not got.ran:
        assert isinstance(got.error, REFUSALS)
        assert len(str(got.error)) > 20, f"an unhelpful refusal: {got.error!r}"
        assert differences(got.model, got.before) == []
        return
    out = outputs(got.model, MODEL[model_name].inputs())
    assert out.shape == got.out_before.shape
    assert torch.isfinite(out).all()
    KIND_CHECKS[variant.info.kind](variant, got)
    json.dumps(got.report.to_dict())


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids(VARIANTS))
def test_every_method_runs_on_some_model(variant: Variant) -> None:
    name, got = first_run(variant)
    assert got.ran and got.report is not None, name


def _check_prune(variant: Variant, got: Outcome) -> None:
    if variant.pattern in ("channel", "head"):
        _check_shrank(got)
        return
    layers = select_layers(got.model)
    for name in layers:  # otherwise a zero the method did not write would pass for pruned
        assert (got.before.tensors[f"{name}.weight"] != 0).all(), name
    weights = {id(m.weight): (n, m) for n, m in layers.items() if (m.weight == 0).any()}
    assert weights, "no layer was pruned"
    config = got.config
    for name, layer in weights.values():
        w = layer.weight.detach()
        if variant.pattern == "unstructured":
            assert int((w == 0).sum()) == round(config.sparsity * w.numel()), name
        else:
            n, m = config.nm.n, config.nm.m
            groups = as_matrix(layer, w).reshape(-1, m)
            assert ((groups == 0).sum(dim=1) >= n).all(), name


def _check_shrank(got: Outcome) -> None:
    """Channel/head pruning removes units: weights get physically smaller, none grows."""
    now = got.model.state_dict()
    shrank = []
    for key, before in got.before.tensors.items():
        if key.endswith(".weight") and key in now:
            after = now[key].shape
            assert all(a <= b for a, b in zip(after, before.shape, strict=True)), key
            if after != before.shape:
                shrank.append(key)
    assert shrank, "no layer got smaller"
    assert sum(p.numel() for p in got.model.parameters()) < got.before.params


def _check_swaps(variant: Variant, got: Outcome) -> None:
    """Quantizing and sharing swap layers for new kinds of modules, at the bits asked for."""
    record = swap_record(got.model)
    assert record, "no layer was swapped"
    modules = dict(got.model.named_modules())
    bits = {getattr(got.config, k, None) for k in ("bits", "conv_bits")} - {None}
    for entry in record:
        name = entry["module"]
        assert type(modules[name]) is not got.before.classes[name], name
        if bits and hasattr(modules[name], "bits"):
            assert modules[name].bits in bits, name
    json.dumps(record)


def _check_factorized(variant: Variant, got: Outcome) -> None:
    """Factorizing swaps layers for two-layer low-rank modules, and the model gets smaller."""
    _check_swaps(variant, got)
    modules = dict(got.model.named_modules())
    for entry in swap_record(got.model):
        assert isinstance(modules[entry["module"]], LowRankLayer), entry["module"]
    assert sum(p.numel() for p in got.model.parameters()) < got.before.params


def _check_trained(variant: Variant, got: Outcome) -> None:
    changed = differences(got.model, got.before)
    assert any(d.startswith("tensor") for d in changed), "distillation changed no weight"


KIND_CHECKS = {
    "prune": _check_prune,
    "quantize": _check_swaps,
    "share": _check_swaps,
    "factorize": _check_factorized,
    "distill": _check_trained,
}


def test_every_kind_has_its_checks() -> None:
    assert set(KIND_CHECKS) == set(pk.registry.KINDS)


# --------------------------------------------------------------------------- save and load


@pytest.mark.parametrize(("variant", "model_name"), CASES, ids=CASE_IDS)
def test_save_load_gives_identical_outputs(variant: Variant, model_name: str, tmp_path) -> None:
    got, kind = outcome(variant, model_name), MODEL[model_name]
    inputs = kind.inputs()
    expected = outputs(got.model, inputs)
    saved = state(got.model)
    path = pk.save(got.model, tmp_path / "artifact")
    assert differences(got.model, saved) == []
    fresh = kind.build(1)
    assert not torch.equal(outputs(fresh, inputs), expected)
    loaded = pk.load(path, model=fresh)
    assert torch.equal(outputs(loaded, inputs), expected)
    if kind.hf:  # a Hugging Face artifact also rebuilds its model by itself
        assert torch.equal(outputs(pk.load(path), inputs), expected)


# --------------------------------------------------------------------------- fault injection


@pytest.mark.parametrize("fraction", [1 / 3, 2 / 3], ids=["third", "two_thirds"])
@pytest.mark.parametrize(("variant", "model_name"), CASES, ids=CASE_IDS)
def test_a_fault_part_way_leaves_the_model_as_it_was(
    variant: Variant, model_name: str, fraction: float
) -> None:
    calls, ran = torch_calls(variant, model_name)
    assert ran == outcome(variant, model_name).ran  # counting alone changes nothing
    kind = MODEL[model_name]
    model, call = kind.build(0), Call.of(variant, kind)
    before = state(model)
    with pytest.raises(Exception) as raised, FaultAt(max(1, round(calls * fraction))):
        call(model)
    cause: BaseException | None = raised.value
    while cause is not None and not isinstance(cause, InjectedFault):
        cause = cause.__cause__ or cause.__context__
    assert cause is not None, f"the fault was replaced by {raised.value!r}"
    assert differences(model, before) == []
    assert torch.is_grad_enabled()


# --------------------------------------------------------------------------- reports and configs


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids(VARIANTS))
def test_report_names_method_and_config(variant: Variant) -> None:
    _, got = first_run(variant)
    report = json.loads(json.dumps(got.report.to_dict()))
    if variant.training:  # finetune_ reports the training run and, under prune, the method
        assert report["method"] == "finetune"
        report = report["prune"]
    assert report["method"] == variant.info.name
    assert variant.info.config.model_validate(report["config"]) == got.config


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids(VARIANTS))
def test_config_round_trips(variant: Variant) -> None:
    config, cls = variant.config(), variant.info.config
    assert cls(**config.model_dump()) == config
    assert cls.model_validate(json.loads(json.dumps(config.to_dict()))) == config
    assert cls.model_validate_json(config.model_dump_json()) == config
    assert variant.info.example_config() == cls(**variant.info.example)


# --------------------------------------------------------------------------- ignore

IGNORING = [v for v in VARIANTS if "ignore" in v.info.config.model_fields]
# Bugs these checks found that need more than a small fix: variant id -> the bug.
IGNORE_BUGS: dict[str, str] = {}


def _affected(variant: Variant, got: Outcome) -> list[str]:
    """The layers (modules with a weight) a run changed, in model order: swapped, or inside a
    swapped module, pruned (fewer units; new zeros) or rewritten."""
    now = dict(got.model.named_modules())
    tensors = got.model.state_dict()
    replaced = [n for n, cls in got.before.classes.items() if n and type(now.get(n)) is not cls]
    out = []
    for name in got.before.classes:
        key = f"{name}.weight"
        if not name or key not in got.before.tensors:
            continue
        before, after = got.before.tensors[key], tensors.get(key)
        inside = any(name == r or name.startswith(r + ".") for r in replaced)
        if inside or after is None or before.shape != after.shape:
            out.append(name)
        elif variant.training:  # training changes every weight: pruning adds zeros
            if int((after == 0).sum()) > int((before == 0).sum()):
                out.append(name)
        elif not torch.equal(before, after):
            out.append(name)
    return out


def _untouched(variant: Variant, model: torch.nn.Module, before: State, layer: str) -> list[str]:
    """What changed in ``layer``: its class, or its own tensors (for a method that trains, its
    weight may change, but it gains no zeros)."""
    module = dict(model.named_modules()).get(layer)
    wrong = []
    if module is not None and type(module) is not before.classes[layer]:
        wrong.append(f"{layer} became a {type(module).__name__}")
    now = model.state_dict()
    for key, old in before.tensors.items():
        if key.rpartition(".")[0] != layer:
            continue
        new = now.get(key)
        if new is None or new.shape != old.shape or new.dtype != old.dtype:
            wrong.append(f"{key} is gone or reshaped")
        elif variant.training:
            if int((new == 0).sum()) > int((old == 0).sum()):
                wrong.append(f"{key} was pruned")
        elif not torch.equal(new, old):
            wrong.append(f"{key} changed")
    return wrong


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(v, marks=pytest.mark.xfail(strict=True, reason=IGNORE_BUGS[v.id]))
        if v.id in IGNORE_BUGS
        else v
        for v in IGNORING
    ],
    ids=_ids(IGNORING),
)
def test_an_ignored_layer_is_left_untouched(variant: Variant) -> None:
    """On every model the method runs on, ignore the first layer it changed: that layer is left
    as it was (or the method refuses and leaves the whole model), and at least one model still
    compresses something else."""
    honoured = []
    for kind in MODELS:
        got = outcome(variant, kind.name)
        if not got.ran:
            continue
        layer = _affected(variant, got)[0]
        model, call = kind.build(0), Call.of(variant, kind, ignore=[layer])
        before = state(model)
        try:
            call(model)
        except REFUSALS:
            assert differences(model, before) == [], kind.name
            continue
        assert _untouched(variant, model, before, layer) == [], kind.name
        rerun = Outcome(call.config, before, got.out_before, model)
        if _affected(variant, rerun):
            honoured.append(kind.name)
    assert honoured, "ignoring one layer left nothing to compress on every model"
