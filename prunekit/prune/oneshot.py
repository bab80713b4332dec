"""One-shot pruning from calibration inputs (Wanda, SparseGPT), block by block.

A transformer is pruned one repeated block at a time: the inputs of block 0 are recorded once,
each block's target layers are calibrated on those inputs, solved and written, and the
already-pruned block then computes the inputs of the next — so memory holds one block's
activations, and later blocks see the errors earlier pruning made (as both papers do). A model
without repeated blocks is one block. Hooks are always removed; if anything fails, the weights
are put back as they were.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from prunekit.calibrate import (
    Run,
    capture_block_inputs,
    collect_input_rows,
    find_blocks,
    input_hooks,
    move_call,
    next_call,
    on_device,
    resolve_device,
    run_block,
    runs_on_block,
    runs_on_model,
    shared_inputs,
)
from prunekit.data.batches import take_samples, trim_padding
from prunekit.errors import PrunekitError
from prunekit.layout import as_matrix, from_matrix
from prunekit.memory import release_freed
from prunekit.prune.allocation import (
    error_curve,
    exact_counts,
    outlier_ratio,
    owl_sparsities,
    sensitivity_sparsities,
    sparsity_grid,
)
from prunekit.prune.budget import check_calibrated_fits
from prunekit.prune.methods.base import CalibrationSolver
from prunekit.prune.methods.calibrated import CalibratedConfig
from prunekit.prune.methods.wanda import wanda_scores
from prunekit.prune.plan import split_count
from prunekit.prune.pruner import check_nm, layer_targets
from prunekit.prune.report import PruneReport
from prunekit.registry import method_for_config
from prunekit.surgery.transaction import transaction
from prunekit.targets import select_layers

log = logging.getLogger(__name__)

Group = tuple[str, nn.Module, dict[str, nn.Module]]  # (name, runnable, its target layers)


def _groups(model: nn.Module, config: CalibratedConfig) -> list[Group]:
    layers = select_layers(model, config.targets, config.ignore)
    blocks = find_blocks(model)
    if blocks is None:
        return [("", model, layers)]
    groups = []
    inside: set[str] = set()
    for name, block in blocks:
        mine = {n: m for n, m in layers.items() if n.startswith(f"{name}.")}
        inside.update(mine)
        groups.append((name, block, mine))
    outside = [n for n in layers if n not in inside]
    if config.targets is not None and outside:
        raise PrunekitError(
            f"targets: {outside[:3]} lie outside the repeated blocks, which "
            f"{config.method} prunes block by block; leave them out (ignore=[...])"
        )
    if not inside:
        raise PrunekitError("targets: no prunable layer inside the model's repeated blocks")
    return [g for g in groups if g[2]]


def _unsupported(m: nn.Module) -> str | None:
    if isinstance(m, nn.Conv2d) and m.groups != 1:
        return "a grouped convolution"
    if not isinstance(m, nn.Conv2d) and m.weight.dim() > 2:
        return f"a {type(m).__name__}"
    return None


def _drop_unsupported(groups: list[Group], explicit: bool) -> tuple[list[Group], dict[str, str]]:
    """Layers calibration cannot read are left alone (and reported); an error if asked for."""
    skipped = {}
    kept_groups = []
    for name, runner, layers in groups:
        kept = {}
        for n, m in layers.items():
            why = _unsupported(m)
            if why is None:
                kept[n] = m
            elif explicit:
                raise PrunekitError(
                    f"layer {n!r} is {why}, which calibration-based pruning does not handle; "
                    f"leave it out with ignore=[{n!r}]"
                )
            else:
                skipped[n] = f"{why}, which calibration-based pruning does not handle"
        if kept:
            kept_groups.append((name, runner, kept))
    return kept_groups, skipped


def _calibrate(
    solver: CalibrationSolver, layers: dict[str, nn.Module], runs: Iterable[Run]
) -> dict[str, dict[str, torch.Tensor]]:
    """Statistics of each layer's inputs over the forward passes in ``runs`` (padding left
    out). Layers reading the same input share one statistics object (read-only)."""
    runs = list(runs)
    shared = shared_inputs(layers, runs[0]) if runs else {}
    leaders = {n: m for n, m in layers.items() if n not in shared}
    # Statistics live where the layer runs (the GPU when its block was moved there).
    stats = {
        n: {
            k: v.to(m.weight.device)
            for k, v in solver.new_stats(as_matrix(m, m.weight).shape[1]).items()
        }
        for n, m in leaders.items()
    }
    seen = collect_input_rows(
        leaders, runs, lambda name, rows: solver.accumulate(stats[name], rows)
    )
    for name, leader in shared.items():
        stats[name] = stats[leader]
        seen.add(name)
    missed = [n for n in layers if n not in seen]
    if missed:
        # e.g. nn.MultiheadAttention reads out_proj.weight without calling out_proj: its inputs
        # are invisible, and pruning it from empty statistics would be guesswork.
        raise PrunekitError(
            f"layers {missed[:3]} were never called during calibration (their parent uses the "
            f"weight directly), so their inputs cannot be measured; leave them out with "
            f"ignore={missed[:3]}"
        )
    return stats


def _layer_sparsities(groups: list[Group], counts: list[int]) -> dict[str, float]:
    """Each group's exact count shared among its layers in proportion to their size."""
    out: dict[str, float] = {}
    for (_, _, layers), count in zip(groups, counts, strict=True):
        sizes = [m.weight.numel() for m in layers.values()]
        for (name, m), c in zip(layers.items(), split_count(count, sizes), strict=True):
            out[name] = c / m.weight.numel()
    return out


def _allocate(
    config: CalibratedConfig, groups: list[Group], measured: list[Any] | None
) -> dict[str, float]:
    """Each layer's sparsity; ``measured``: per group, what :func:`_measure` read from the dense
    model (None for uniform, N:M and ``layer_sparsity``)."""
    target = config.target_sparsity
    if config.layer_sparsity:
        return layer_targets({n: m for g in groups for n, m in g[2].items()},
                             config.layer_sparsity, target)  # fmt: skip
    if measured is None:
        return {n: target for g in groups for n in g[2]}
    if config.allocation == "owl":
        sizes = [sum(m.weight.numel() for m in g[2].values()) for g in groups]
        counts = exact_counts(owl_sparsities(measured, target, config.owl_lambda), sizes, target)
        return _layer_sparsities(groups, counts)
    names = [n for g in groups for n in g[2]]
    sizes = [m.weight.numel() for g in groups for m in g[2].values()]
    curves = [c for per_group in measured for c in per_group]
    grid = sparsity_grid(target, config.sensitivity_lambda)
    counts = exact_counts(sensitivity_sparsities(curves, sizes, grid, target), sizes, target)
    return {n: c / size for n, c, size in zip(names, counts, sizes, strict=True)}


class _InputNorms(CalibrationSolver):
    """The dense pass's statistics: Σ_n x_nj² per input (OWL and the sensitivity read only
    |W|·‖X‖), so SparseGPT's [K, K] Hessians are not built twice."""

    def new_stats(self, k: int) -> dict[str, torch.Tensor]:
        return {"sq": torch.zeros(k, dtype=torch.float64)}

    def accumulate(self, stats: dict[str, torch.Tensor], rows: torch.Tensor) -> None:
        stats["sq"] += rows.double().pow(2).sum(dim=0)


def _measure(
    config: CalibratedConfig,
) -> Callable[[dict[str, nn.Module], dict[str, dict[str, torch.Tensor]]], Any]:
    """What the allocation reads from one group's dense input norms: OWL's outlier ratio of the
    group, or each layer's relative error at the sparsities of the grid."""

    def scores(m: nn.Module, st: dict[str, torch.Tensor]) -> torch.Tensor:
        return wanda_scores(as_matrix(m, m.weight).float(), st["sq"].float())

    if config.allocation == "owl":
        return lambda layers, st: outlier_ratio(
            [scores(m, st[n]) for n, m in layers.items()], config.owl_threshold
        )
    grid = sparsity_grid(config.target_sparsity, config.sensitivity_lambda)
    return lambda layers, st: [
        error_curve(scores(m, st[n]).pow_(2), grid) for n, m in layers.items()
    ]


@torch.no_grad()
def _dense_measure(
    model: nn.Module,
    groups: list[Group],
    data: Iterable[Any],
    config: CalibratedConfig,
) -> list[Any]:
    """:func:`_measure` of every group on the dense model, before anything is pruned; each
    group's statistics are dropped once measured."""
    measure, solver = _measure(config), _InputNorms(config)
    if len(groups) == 1 and groups[0][1] is model:
        runs = runs_on_model(model, data, config.num_samples)
        return [measure(groups[0][2], _calibrate(solver, groups[0][2], runs))]
    calls = capture_block_inputs(model, groups[0][1], data, config.num_samples)
    result = []
    for _, block, layers in groups:
        result.append(measure(layers, _calibrate(solver, layers, runs_on_block(block, calls))))
        calls = [next_call(c, run_block(block, c)) for c in calls]
    return result


def _solve_group(
    solver: CalibrationSolver,
    layers: dict[str, nn.Module],
    stats: dict[str, dict[str, torch.Tensor]],
    sparsity: dict[str, float],
    device: torch.device | None = None,
) -> None:
    """Solve each layer on ``device`` (None: where it is) and write the result back in the
    layer's own dtype and device: one layer at a time is upcast (the solvers work in float32),
    never the whole model."""
    for name, module in layers.items():
        matrix = as_matrix(module, module.weight.detach())
        if device is not None:
            matrix = matrix.to(device)
            stats[name] = {k: v.to(device) for k, v in stats[name].items()}
        # Each layer's statistics (a [K, K] float64 Hessian for SparseGPT) are dropped once it
        # is solved, so the block's last layer is solved with the others' memory free.
        new = solver.solve(matrix, stats.pop(name), sparsity[name])
        module.weight.copy_(from_matrix(module, new.to(module.weight.device, module.weight.dtype)))
        del new


@torch.no_grad()
def prune_calibrated_(
    model: nn.Module, config: CalibratedConfig, data: Iterable[Any] | None
) -> PruneReport:
    """Prune ``model`` in place with a calibration-based method; see the module docstring."""
    start = time.perf_counter()
    info = method_for_config(config)
    if data is None:
        raise PrunekitError(
            f"data: {info.name} needs calibration batches (e.g. tokenized text windows); "
            f"pass data=..."
        )
    if config.layer_sparsity and config.allocation != "uniform":
        raise PrunekitError(
            f"layer_sparsity and allocation={config.allocation!r} both set each layer's "
            f"sparsity; use one: leave layer_sparsity unset or set allocation='uniform'"
        )
    # Read the calibration samples once: every pass (OWL's dense pass, the pruning pass) must see
    # the same ones, and a shuffling DataLoader draws a new order each time it is iterated.
    data = [trim_padding(b) for b in take_samples(data, config.num_samples)]
    if not data:
        raise PrunekitError("data: got no calibration batches; pass at least one batch")
    solver: CalibrationSolver = info.impl(config)
    groups, skipped = _drop_unsupported(_groups(model, config), config.targets is not None)
    groups, uncalled = _drop_uncalled(model, groups, data, config)
    skipped.update({n: "never called in the forward pass" for n in uncalled})
    all_layers = {n: m for g in groups for n, m in g[2].items()}
    if not all_layers:
        raise PrunekitError(f"model has no layer {info.name} can prune (skipped: {list(skipped)})")
    check_nm(all_layers, config.nm)
    device = resolve_device(config.device)
    # The estimate is of host memory; on a GPU the working set lives in the GPU's own.
    if (device or next(model.parameters()).device).type == "cpu":
        check_calibrated_fits(solver, [g[2] for g in groups], data, info.name)

    was_training = model.training
    model.eval()
    # Only the targeted weights are written: only they are copied (not the whole model, which
    # for a large language model would double its memory).
    try:
        with transaction(model) as tx:
            tx.protect(m.weight for m in all_layers.values())
            # N:M fixes every layer's pattern: there is no sparsity to allocate.
            measured = (
                _dense_measure(model, groups, data, config)
                if config.allocation != "uniform" and config.nm is None
                else None
            )
            sparsity = _allocate(config, groups, measured)
            if len(groups) == 1 and groups[0][1] is model:
                stats = _calibrate(
                    solver, all_layers, runs_on_model(model, data, config.num_samples)
                )
                _solve_group(solver, all_layers, stats, sparsity, device)
            else:
                calls = capture_block_inputs(model, groups[0][1], data, config.num_samples)
                if device is not None:
                    calls = [move_call(c, device) for c in calls]
                for name, block, layers in groups:
                    with on_device(block, device):
                        stats = _calibrate(solver, layers, runs_on_block(block, calls))
                        _solve_group(solver, layers, stats, sparsity, device)
                        calls = [next_call(c, run_block(block, c)) for c in calls]
                    release_freed()
                    log.info("%s: pruned block %s", info.name, name)
    finally:
        model.train(was_training)
    report = PruneReport.from_layers(
        info.name, config.to_dict(), all_layers, time.perf_counter() - start
    )
    report.extra["allocation"] = {n: round(s, 6) for n, s in sparsity.items()}
    report.skipped = skipped
    return report


@torch.no_grad()
def _drop_uncalled(
    model: nn.Module, groups: list[Group], data: Iterable[Any], config: CalibratedConfig
) -> tuple[list[Group], list[str]]:
    """With default targets, leave out layers whose forward never runs (their parent reads the
    weight directly, as nn.MultiheadAttention does with out_proj): one batch tells."""
    if config.targets is not None:
        return groups, []
    layers = {n: m for g in groups for n, m in g[2].items()}
    called: set[str] = set()
    was_training = model.training
    model.eval()
    try:
        with input_hooks(layers, lambda n, _x: called.add(n)):
            for _, forward in runs_on_model(model, data, 1):
                forward()
    finally:
        model.train(was_training)
    out, uncalled = [], [n for n in layers if n not in called]
    if uncalled:
        log.warning("not pruned (never called in forward): %s", uncalled)
    for name, runner, mine in groups:
        kept = {n: m for n, m in mine.items() if n in called}
        if kept:
            out.append((name, runner, kept))
    return out, uncalled
