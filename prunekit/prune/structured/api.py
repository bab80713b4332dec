"""Structured pruning, end to end: analyze → score → plan → verify and shrink.

Everything up to the plan only reads the model. Surgery is logged; the rebuilt model is run on
the example input and compared with the unpruned model whose removed units are zeroed (the two
must agree: removing a unit whose every slice is zero changes nothing). With ``reconstruct``,
the layers reading removed channels are then refit on calibration data (reconstruct.py). Any
failure rolls the model back to exactly what it was.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.calibrate import LossFn
from prunekit.config import PruneConfig
from prunekit.data.batches import first_batch, split_batch
from prunekit.errors import PrunekitError
from prunekit.prune.structured.graph import DependencyGraph, Group, analyze
from prunekit.prune.structured.hidden import (
    activation_scores,
    config_kept,
    match_tied,
    no_hidden_error,
    remap,
    shrink_hidden_,
    tie_to_hidden,
    with_unused,
)
from prunekit.prune.structured.latency import search_latency
from prunekit.prune.structured.plan import (
    Limits,
    give_back,
    per_unit,
    plan_global,
    plan_layer,
    search_macs,
)
from prunekit.prune.structured.reconstruct import reconstruct_
from prunekit.prune.structured.report import GroupRow, StructuredReport
from prunekit.prune.structured.rules import HEAD, HIDDEN
from prunekit.prune.structured.trace import run_model, split_inputs
from prunekit.registry import method_for_config
from prunekit.surgery.shrink import shrink_
from prunekit.surgery.transaction import transaction
from prunekit.targets import check_selectors, matches

log = logging.getLogger(__name__)

# Seconds each model is timed per candidate of the latency search, and for the figure reported.
SEARCH_RUN_TIME = 0.3
FINAL_RUN_TIME = 1.0


def prune_structured_(
    model: nn.Module,
    config: PruneConfig,
    data: Iterable[Any] | None = None,
    *,
    example_inputs: Any = None,
    loss_fn: LossFn | None = None,
    dry_run: bool = False,
) -> StructuredReport:
    """Remove whole units (``config.pattern`` ``channel`` or ``head``) and rebuild the layers.

    example_inputs: traced to find the coupled groups; by default the inputs of the first batch
        of ``data``. dry_run: plan and report only; the model is not touched.
    """
    start = time.perf_counter()
    info = method_for_config(config)
    method = info.name
    # Configs refuse patterns their method does not support, so a structured config's method
    # always registered group scores.
    assert info.group_scores is not None, method
    if config.reconstruct and data is None:
        raise PrunekitError(
            "data: reconstruct=True refits the layers after the removed channels on calibration "
            "inputs; pass data=[batches] (a few hundred samples) or set reconstruct=False"
        )
    if example_inputs is None:
        if data is None:
            raise PrunekitError(
                f"pattern={config.pattern!r} traces the model: pass example_inputs=(x,) (or a "
                "dict of keyword inputs), or data whose first batch can be used"
            )
        example_inputs, _ = split_batch(first_batch(data))
    check_selectors(config.ignore, "ignore")
    if config.targets is not None:
        check_selectors(config.targets, "targets")
    graph = analyze(model, example_inputs, hidden=config.prune_hidden)
    if config.prune_hidden and not any(g.kind == HIDDEN for g in graph.groups):
        raise no_hidden_error(model, graph)
    candidates, skipped = _candidates(model, graph, config)
    tied = tie_to_hidden(model, graph, candidates, config.ignore) if config.prune_hidden else {}
    candidates += [graph.groups[i] for i in tied if graph.groups[i] not in candidates]
    hidden = [g for g in candidates if g.kind == HIDDEN]
    others = [g for g in candidates if g.kind != HIDDEN]
    scores = info.group_scores(model, others, config, data, loss_fn) if others else {}
    if hidden:
        # The stream's channels are ranked by the signal they carry, whatever the method.
        calib = data if data is not None else [example_inputs]
        scores.update(activation_scores(model, hidden, calib))
    for g in list(candidates):
        score = scores.get(g.id)
        # A scorer gives None, or the reason as a string, for a group it cannot rank.
        if score is None or isinstance(score, str):
            candidates.remove(g)
            skipped[g.name] = score or f"no BatchNorm scale to rank its {g.kind}s by"
    if not candidates:
        why = next(iter(skipped.values()), "")
        raise PrunekitError(
            f"method {method!r} can rank none of the prunable groups ({why}); use magnitude or "
            "taylor for this model"
        )
    search = None
    if config.latency_reduction is not None:
        by_ratio = config.model_copy(update={"latency_reduction": None})
        removed, search = search_latency(
            lambda ratio: _plan(
                model, graph, candidates, scores, by_ratio.with_sparsity(ratio), tied
            ),
            lambda removed: _time_shrunk(model, graph, removed, example_inputs),
            config.latency_reduction,
            _batch(example_inputs),
        )
    else:
        removed = _plan(model, graph, candidates, scores, config, tied)
    # MACs per sample, as measure() reports them; the graph counted the example batch.
    per = _batch(example_inputs)
    before = graph.count()
    after = graph.count(removed)
    before, after = (before[0], before[1] // per), (after[0], after[1] // per)
    report = StructuredReport(
        method=method,
        config=config.to_dict(),
        groups=[
            GroupRow(g.name, g.kind, _members(g), g.size, g.size - int(removed[g.id].sum()))
            for g in candidates
        ],
        params=(before[0], after[0]),
        macs=(before[1], after[1]),
        applied=False,
        skipped=skipped,
        blocked=_blocked_summary(graph),
    )
    if report.overshoot:
        log.warning("%s", report.overshoot)
    if search is not None:
        report.latency_batch = search.batch
        report.latency_tried = search.tried
        report.latency_ms = _time_shrunk(model, graph, removed, example_inputs, FINAL_RUN_TIME)
    kinds = {g.id: g.kind for g in graph.groups}
    narrowed = {i: m for i, m in removed.items() if kinds[i] == HIDDEN and m.any()}
    plan, head_fraction = removal_plan(
        graph, {i: m for i, m in removed.items() if i not in narrowed}
    )
    hidden_plan = with_unused(graph, narrowed, removal_plan(graph, narrowed)[0])
    report.plan = {
        p: {d: np.union1d(plan.get(p, {}).get(d, []), hidden_plan.get(p, {}).get(d, []))
            .astype(int).tolist() for d in {**plan.get(p, {}), **hidden_plan.get(p, {})}}
        for p in {**plan, **hidden_plan}
    }  # fmt: skip
    if not dry_run and (plan or hidden_plan):
        # The refit needs the unpruned layer outputs as its targets.
        dense = copy.deepcopy(model) if config.reconstruct else None
        with config_kept(model), transaction(model) as tx:
            if plan:
                report.max_diff = apply_plan_(
                    model, plan, head_fraction, example_inputs, verify=config.verify
                )
            if dense is not None:
                assert data is not None  # checked on entry
                report.refits = reconstruct_(
                    model, dense, plan, data, config.reconstruct_samples, tx
                )
            if hidden_plan:
                # Not output-equivalent (the norms' statistics change): measured, not verified.
                report.hidden_width = shrink_hidden_(
                    model,
                    graph,
                    narrowed,
                    remap(plan, hidden_plan, graph.param_shapes),
                    example_inputs,
                )
        report.applied = True
    report.seconds = time.perf_counter() - start
    return report


def _time_shrunk(
    model: nn.Module,
    graph: DependencyGraph,
    removed: dict[int, np.ndarray],
    example_inputs: Any,
    min_run_time: float = SEARCH_RUN_TIME,
) -> tuple[float, float]:
    """Milliseconds per call of ``model`` and of a copy shrunk by ``removed``, timed
    interleaved at the example's batch size."""
    from prunekit.measure.latency import time_models

    plan, head_fraction = removal_plan(graph, removed)
    small = copy.deepcopy(model)
    shrink_(small, plan, head_fraction)
    batch = _batch(example_inputs)
    dense, pruned = time_models(
        [model, small], example_inputs, batch_sizes=(batch,), min_run_time=min_run_time
    )
    return dense.median_ms[batch], pruned.median_ms[batch]


def _batch(example_inputs: Any) -> int:
    args, kwargs = split_inputs(example_inputs)
    first = next((t for t in [*args, *kwargs.values()] if isinstance(t, torch.Tensor)), None)
    return int(first.shape[0]) if first is not None and first.dim() else 1


def _members(g: Group) -> str:
    return ", ".join(f"{m.param}[{m.dim}]" for m in g.members)


def _blocked_summary(graph: DependencyGraph) -> list[str]:
    seen: dict[str, int] = defaultdict(int)
    for b in graph.blocked:
        seen[b.reason] += 1
    return [f"{n} parameter dims: {r}" for r, n in sorted(seen.items(), key=lambda kv: -kv[1])]


def _candidates(
    model: nn.Module, graph: DependencyGraph, config: PruneConfig
) -> tuple[list[Group], dict[str, str]]:
    modules = dict(model.named_modules())
    left: dict[str, str] = {}

    def hits(g: Group, selectors: list[str], names: list[str]) -> bool:
        return any(matches(s, n, modules[n]) for s in selectors for n in names if n in modules)

    out = []
    for g in graph.groups:
        if config.pattern == "head" and g.kind != HEAD:
            continue
        # targets name the layer whose outputs the units are; ignore protects every member.
        if config.targets is not None and not hits(g, config.targets, [g.name]):
            continue
        if hits(g, config.ignore, g.modules):
            left[g.name] = "touches an ignored module"
            continue
        if g.size < 2:
            left[g.name] = f"a single {g.kind}"
            continue
        out.append(g)
    if not out:
        why = "; ".join(_blocked_summary(graph)[:3]) or "no coupled groups found"
        raise PrunekitError(
            f"pattern={config.pattern!r}: nothing in this model can be removed structurally "
            f"with these targets/ignore ({why})"
        )
    return out, left


def _plan(
    model: nn.Module,
    graph: DependencyGraph,
    groups: list[Group],
    scores: dict[int, np.ndarray],
    config: PruneConfig,
    tied: dict[int, int],
) -> dict[int, np.ndarray]:
    """tied: group id → the hidden group whose kept count it takes (:func:`tie_to_hidden`)."""
    limits = Limits(config.min_channels, config.round_to)
    modules = dict(model.named_modules())

    def ratio_of(g: Group, default: float) -> float:
        for selector, value in config.layer_sparsity.items():
            if g.name in modules and matches(selector, g.name, modules[g.name]):
                return value
        return default

    for g in groups:
        ratio = ratio_of(g, -1.0)
        if ratio >= 0 and g.size - math.floor(ratio * g.size + 1e-9) < math.ceil(
            config.min_channels / per_unit(g)
        ):
            raise PrunekitError(
                f"layer_sparsity: {ratio:g} of {g.name}'s {g.size} {g.kind}s would leave fewer "
                f"than min_channels={config.min_channels}; lower its ratio or min_channels"
            )

    fixed = [g for g in groups if ratio_of(g, -1.0) >= 0]
    # Activation scores do not rank against weight scores: a hidden width takes the ratio,
    # rounded up (the residual stream is the width least safe to cut), and is not given back.
    hidden = [g for g in groups if g.kind == HIDDEN and g not in fixed]
    free = [g for g in groups if g not in fixed and g.kind != HIDDEN]
    # Under a MACs target the other groups round to their nearest step; give_back settles it.
    searched = replace(limits, nearest=config.macs_reduction is not None)

    def plan_at(ratio: float) -> dict[int, np.ndarray]:
        out = plan_layer(fixed, scores, {g.id: ratio_of(g, 0) for g in fixed}, limits)
        out.update(plan_layer(hidden, scores, {g.id: ratio for g in hidden}, limits))
        if config.scope == "global":
            out.update(plan_global(free, scores, ratio, searched))
        else:
            out.update(plan_layer(free, scores, {g.id: ratio for g in free}, searched))
        return match_tied(out, tied, scores)

    if config.macs_reduction is not None:
        target = graph.count()[1] / config.macs_reduction
        _, removed = search_macs(graph, plan_at, target)
        if config.round_to > 1:
            # The search moves every group at once, each a whole step at a time, so it can stop
            # well past the target: the steps that still fit are put back one by one.
            removed = match_tied(
                give_back(
                    [g for g in free if g.id not in tied],
                    scores,
                    removed,
                    searched,
                    lambda plan: graph.count(match_tied(plan, tied, scores))[1] <= target,
                ),
                tied,
                scores,
            )
        reached = graph.count(removed)[1]
        if reached > target * 1.01:
            raise PrunekitError(
                f"macs_reduction={config.macs_reduction}: removing every removable unit leaves "
                f"{graph.count()[1] / max(reached, 1):.2f}× fewer MACs at most (the rest is in "
                "layers that cannot shrink); ask for less"
            )
        return removed
    return plan_at(config.target_sparsity)


Plan = dict[str, dict[int, np.ndarray]]


def removal_plan(
    graph: DependencyGraph, removed: dict[int, np.ndarray]
) -> tuple[Plan, dict[str, float]]:
    """Per parameter and dimension, the indices to remove; per attention module, the fraction
    of its heads kept."""
    by_param: dict[str, dict[int, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    head_fraction: dict[str, float] = {}
    for g in graph.groups:
        mask = removed.get(g.id)
        if mask is None or not mask.any():
            continue
        for m in g.members:
            by_param[m.param][m.dim].append(m.index[mask].ravel())
        if g.kind == HEAD:
            head_fraction[_common_prefix(g.modules)] = 1 - mask.sum() / g.size
    plan = {p: {d: np.unique(np.concatenate(v)) for d, v in dims.items()}
            for p, dims in by_param.items()}  # fmt: skip
    return plan, head_fraction


@torch.no_grad()
def apply_plan_(
    model: nn.Module,
    plan: Plan,
    head_fraction: dict[str, float],
    example_inputs: Any,
    verify: bool = True,
) -> float | None:
    """Shrink ``model`` by the plan; with ``verify``, compare against the masked model.

    Returns the largest output difference found (None without verification); on any failure
    the model is put back as it was."""
    was_training = model.training
    model.eval()
    reference = _masked_outputs(model, plan, example_inputs) if verify else None
    try:
        with transaction(model):
            shrink_(model, plan, head_fraction)
            diff = None
            if reference is not None:
                diff = _compare(run_model(model, example_inputs), reference)
        return diff
    except Exception as e:
        if isinstance(e, PrunekitError):
            raise
        raise PrunekitError(
            f"the rebuilt model failed to run ({type(e).__name__}: {e}); it was rolled back. "
            "A module probably computes shapes from attributes prunekit does not know: leave it "
            "out with ignore=[...]"
        ) from e
    finally:
        model.train(was_training)


def _common_prefix(names: list[str]) -> str:
    parts = [n.split(".") for n in names]
    prefix: list[str] = []
    for items in zip(*parts, strict=False):
        if len(set(items)) != 1:
            break
        prefix.append(items[0])
    return ".".join(prefix)


def _masked_outputs(
    model: nn.Module, plan: dict[str, dict[int, np.ndarray]], example_inputs: Any
) -> list[torch.Tensor]:
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    # Only the slices zeroed are kept (a copy of every planned tensor would be most of a
    # language model), each taken just before it is zeroed and put back in reverse order, so
    # entries in two zeroed slices get their first value back.
    saved: list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]] = []
    try:
        for name, dims in plan.items():
            t = tensors[name].data
            for d, idx in dims.items():
                index = torch.as_tensor(idx, device=t.device)
                saved.append((t, d, index, t.index_select(d, index)))
                t.index_fill_(d, index, 0)
        # An output sharing memory with the model's tensors (a weight returned as it is) would
        # change with them before the comparison; the others are the call's own, kept as they
        # are (a copy of a language model's logits would add to the peak).
        state = {_memory(t) for t in tensors.values()}
        return [
            o.detach() if _memory(o) not in state else o.detach().clone()
            for o in run_model(model, example_inputs)
        ]
    finally:
        for t, d, index, value in reversed(saved):
            t.index_copy_(d, index, value)


def _memory(t: torch.Tensor) -> int | None:
    """Where ``t``'s storage starts (None for layouts without one, such as sparse)."""
    return t.untyped_storage().data_ptr() if t.layout == torch.strided else None


def _compare(outputs: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    if len(outputs) != len(reference):
        raise PrunekitError(
            f"verification: the rebuilt model returns {len(outputs)} tensors, the original "
            f"{len(reference)}; rolled back"
        )
    worst = 0.0
    for i, (o, r) in enumerate(zip(outputs, reference, strict=True)):
        if o.shape != r.shape:
            raise PrunekitError(
                f"verification: output {i} has shape {tuple(o.shape)} after pruning, "
                f"{tuple(r.shape)} before; rolled back"
            )
        if not o.is_floating_point():
            if not torch.equal(o, r):
                raise PrunekitError(f"verification: integer output {i} changed; rolled back")
            continue
        diff = _max_abs_diff(o, r)
        scale = max(1.0, _max_abs_diff(r, None))
        # Narrower matmuls round differently: in bf16 (8 bits of mantissa) a dozen blocks move
        # the outputs by ~1 % of their scale; a missed coupling moves them by about the scale.
        if not diff <= max(1e-4, 16 * torch.finfo(o.dtype).eps) * scale:
            raise PrunekitError(
                f"verification: output {i} differs from the masked model by {diff:.3g} (scale "
                f"{scale:.3g}): a coupling the trace cannot see, such as a value read outside "
                "PyTorch (.numpy(), .tolist()) or an op with a side effect. Rolled back; leave "
                "the affected layers out with ignore=[...]"
            )
        worst = max(worst, diff)
    return worst


# Elements compared at a time: float64 copies of a language model's whole logits would be a
# third of its bf16 weights' size.
COMPARE_CHUNK = 1 << 16


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor | None) -> float:
    """``max |a - b|`` in float64 (``b`` None: ``max |a|``), a chunk at a time; 0.0 when empty,
    NaN when any difference is NaN."""
    flat_a, flat_b = a.reshape(-1), None if b is None else b.reshape(-1)
    worst = torch.zeros((), dtype=torch.float64, device=a.device)
    for start in range(0, flat_a.numel(), COMPARE_CHUNK):
        chunk = flat_a[start : start + COMPARE_CHUNK].double()
        if flat_b is not None:
            chunk.sub_(flat_b[start : start + COMPARE_CHUNK])
        worst = torch.maximum(worst, chunk.abs_().max())
    return worst.item()
