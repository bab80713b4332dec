"""Reconstruction after channel pruning: refit the layers that read the removed channels, and
rank channels by the output error their removal causes.

Removing input channels of a layer leaves its output short of what the rest of the network was
trained on. ThiNet (Luo et al. 2017), He et al. 2017 and AIMET's channel pruning answer with
least squares on calibration activations:

- **refit** (:func:`reconstruct_`): after the shrink (verified exact against the masked model),
  front to back, every Conv2d/Linear whose input channels went gets
  ``W = argmin ‖X Wᵀ − Y‖² + λ‖W − W₀‖²``: X its inputs in the pruned model (earlier layers
  already refit, so their remaining error is compensated too), Y the unpruned model's outputs
  at that layer (kept output channels only), solved in float64 from XᵀX and XᵀY.
- **criterion** (:func:`removal_scores`): channels are removed greedily, each time the one
  whose removal, with the rest of the layer refit, raises the layer's output error least
  (optimal-brain-surgeon algebra on the inverse of XᵀX); a channel's score is the cumulative
  error at the step it went, so the planner's "lowest scores go" replays that order.

The refit changes weights only, never shapes or couplings: the exact-equivalence check of the
shrink is untouched. torch.ao and Torch-Pruning have no layer refit after channel removal, and
AIMET's is tied to its own graph; the math is a few lines of tensor algebra, written here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.calibrate import _StopForward, calibration_forward, collect_input_rows, runs_on_model
from prunekit.data.batches import split_batch, take_samples
from prunekit.errors import PrunekitError
from prunekit.layout import as_matrix, from_matrix, input_rows, is_transposed
from prunekit.prune.structured.graph import Group
from prunekit.surgery.transaction import Transaction

log = logging.getLogger(__name__)

# Ridge strength, relative to the mean diagonal of XᵀX: enough to keep the solve well posed for
# inputs the calibration data never excites, far below the data term everywhere else.
DAMPENING = 1e-2
# Rows per float64 product when accumulating XᵀX: bounds the memory of a 28×28 conv's patches.
CHUNK_ROWS = 16_384

Plan = dict[str, dict[int, np.ndarray]]


def refittable(module: nn.Module) -> bool:
    """A layer whose output is a matrix product of its input rows (see layout.input_rows)."""
    if isinstance(module, nn.Conv2d):
        return (
            module.groups == 1
            and module.padding_mode == "zeros"
            and not isinstance(module.padding, str)
        )
    return isinstance(module, nn.Linear) or is_transposed(module)


def _in_dim(module: nn.Module) -> int:
    return 0 if is_transposed(module) else 1


# --------------------------------------------------------------------------- pure math


def ridge_refit(
    xtx: torch.Tensor, xty: torch.Tensor, w0: torch.Tensor, dampening: float = DAMPENING
) -> torch.Tensor:
    """``argmin_W ‖X Wᵀ − Y‖² + λ‖W − W₀‖²`` with ``λ = dampening · mean(diag XᵀX)``.

    xtx: [K, K], xty: [K, out], w0: [out, K], all float64 → W [out, K]. The ridge pulls toward
    W₀, not 0: along input directions calibration never visits, the trained weights stay.
    """
    lam = _ridge(xtx, dampening)
    chol, info = torch.linalg.cholesky_ex(xtx + lam * torch.eye(len(xtx), dtype=xtx.dtype))
    if int(info) != 0:
        raise PrunekitError(
            "reconstruct: the calibration inputs give a singular least-squares system (non-"
            "finite activations?); check the data or pass more samples (reconstruct_samples)"
        )
    return torch.cholesky_solve(xty + lam * w0.t(), chol).t()


def _ridge(xtx: torch.Tensor, dampening: float) -> float:
    lam = dampening * float(xtx.diagonal().mean())
    return lam if lam > 0 else dampening  # inputs that are all zero: any λ > 0 will do


def output_error(w: torch.Tensor, xtx: torch.Tensor, xty: torch.Tensor, yty: torch.Tensor) -> float:
    """``‖X Wᵀ − Y‖²`` from the accumulated products (w: [out, K])."""
    return float(((w @ xtx) * w).sum() - 2 * (w * xty.t()).sum() + yty)


def removal_scores(layers: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> np.ndarray:
    """Greedy reconstruction-error ranking of one group's units.

    layers: per layer reading the units, ``(w [out, K], h = XᵀX [K, K], cols [units, s])``,
    float64, ``cols[u]`` the columns of W unit u feeds. Step by step the unit whose removal
    (the other columns refit by least squares) adds the least output error, normalised by
    each layer's output energy ‖X Wᵀ‖², is removed. Returns, per unit, the cumulative error
    when it went: higher is more important, and the lowest-first order is the greedy one.
    """
    state = []
    for w, h, cols in layers:
        damped = h + _ridge(h, DAMPENING) * torch.eye(len(h), dtype=h.dtype)
        hinv = torch.cholesky_inverse(torch.linalg.cholesky(damped))
        energy = max(float(((w @ h) * w).sum()), 1e-30)
        state.append((w.clone(), hinv, cols, energy))
    units = state[0][2].shape[0]
    alive = torch.ones(units, dtype=torch.bool)
    scores = np.zeros(units)
    total = 0.0
    for step in range(units):
        idx = torch.nonzero(alive).flatten()
        cost = torch.zeros(len(idx), dtype=torch.float64)
        for w, hinv, cols, energy in state:
            c = cols[idx]  # [n, s]
            blocks = hinv[c.unsqueeze(2), c.unsqueeze(1)]  # [n, s, s]
            wb = w[:, c].permute(1, 2, 0)  # [n, s, out]
            # Removing columns S with the rest refit adds tr(W_S [H⁻¹_SS]⁻¹ W_Sᵀ) (OBS).
            cost += (wb * torch.linalg.solve(blocks, wb)).sum((1, 2)) / energy
        pick = int(torch.argmin(cost))
        unit = int(idx[pick])
        total += max(float(cost[pick]), 0.0)
        # A vanishing step past the error keeps the greedy order where errors tie (dead units).
        scores[unit] = total + step * 1e-12
        alive[unit] = False
        for w, hinv, cols, _ in state:
            s = cols[unit]
            solve = torch.linalg.solve(hinv[s][:, s], hinv[s])  # [s, K]
            w -= w[:, s] @ solve
            hinv -= hinv[:, s] @ solve
    return scores


# --------------------------------------------------------------------------- the criterion


def _unit_columns(module: nn.Module, index: np.ndarray) -> torch.Tensor:
    """Columns of ``as_matrix(module, weight)`` that each unit's input channels occupy."""
    idx = torch.as_tensor(index, dtype=torch.long)
    if isinstance(module, nn.Conv2d):
        # as_matrix orders conv columns (kernel position, channel).
        positions = module.kernel_size[0] * module.kernel_size[1]
        offsets = torch.arange(positions) * module.in_channels
        return (offsets.view(1, -1, 1) + idx.unsqueeze(1)).reshape(len(idx), -1)
    return idx


def reconstruction_groups(
    model: nn.Module, groups: list[Group], config: Any, data: Any, loss_fn: Any
) -> dict[int, np.ndarray | str]:
    """Group scores for the ``reconstruction`` method: :func:`removal_scores` per group, from
    XᵀX of every layer reading the group's units on the unpruned model."""
    if data is None:
        raise PrunekitError(
            "data: reconstruction scores channels by the output error their removal causes on "
            "calibration inputs; pass data=[batches] (a few hundred samples)"
        )
    modules = dict(model.named_modules())
    readers: dict[int, list[tuple[str, np.ndarray]]] = {}
    for g in groups:
        readers[g.id] = [
            (m.module, m.index)
            for m in g.members
            if m.module in modules
            and refittable(modules[m.module])
            and m.param == f"{m.module}.weight"
            and m.dim == _in_dim(modules[m.module])
        ]
    layers = {n: modules[n] for found in readers.values() for n, _ in found}
    grams = _input_grams(model, layers, data, config.reconstruct_samples)
    out: dict[int, np.ndarray | str] = {}
    for g in groups:
        found = [(n, i) for n, i in readers[g.id] if n in grams]
        if not found:
            out[g.id] = f"no Conv2d/Linear reads its {g.kind}s: no output error to rank by"
            continue
        out[g.id] = removal_scores(
            [
                (as_matrix(layers[n], layers[n].weight).detach().double(), grams[n],
                 _unit_columns(layers[n], index))
                for n, index in found
            ]
        )  # fmt: skip
    return out


@torch.no_grad()
def _input_grams(
    model: nn.Module, layers: dict[str, nn.Module], data: Iterable[Any], num_samples: int
) -> dict[str, torch.Tensor]:
    grams: dict[str, torch.Tensor] = {}

    def on_rows(name: str, rows: torch.Tensor) -> None:
        if name not in grams:
            grams[name] = torch.zeros(rows.shape[1], rows.shape[1], dtype=torch.float64)
        _add_gram(grams[name], rows)

    was_training = model.training
    model.eval()
    try:
        collect_input_rows(layers, runs_on_model(model, data, num_samples), on_rows)
    finally:
        model.train(was_training)
    return grams


def _add_gram(acc: torch.Tensor, rows: torch.Tensor, other: torch.Tensor | None = None) -> None:
    """``acc += rowsᵀ other`` (other defaults to rows) in float64, a chunk of rows at a time."""
    for i in range(0, rows.shape[0], CHUNK_ROWS):
        r = rows[i : i + CHUNK_ROWS].double()
        o = r if other is None else other[i : i + CHUNK_ROWS].double()
        acc += r.t() @ o


# --------------------------------------------------------------------------- the refit


@dataclass(frozen=True)
class Refit:
    """One refit layer: its output error relative to the unpruned model's, ‖XWᵀ − Y‖² / ‖Y‖²,
    on the calibration rows, with the shrunk weights (before) and the refit ones (after)."""

    layer: str
    rows: int
    error_before: float
    error_after: float


def readers_of(model: nn.Module, plan: Plan) -> dict[str, nn.Module]:
    """The refittable layers whose input channels the plan removes."""
    out = {}
    for name, module in model.named_modules():
        if refittable(module) and _in_dim(module) in plan.get(f"{name}.weight", {}):
            out[name] = module
    return out


@torch.no_grad()
def reconstruct_(
    model: nn.Module,
    dense: nn.Module,
    plan: Plan,
    data: Iterable[Any],
    num_samples: int,
    tx: Transaction,
) -> list[Refit]:
    """Refit, front to back, every layer of ``model`` (already shrunk by ``plan``) that lost
    input channels so that its output matches ``dense`` (the unpruned copy) at that layer.

    ``tx`` is the caller's open transaction: the tensors written in place are protected in it,
    so a failure part way puts them back. Returns one :class:`Refit` per layer.
    """
    layers = readers_of(model, plan)
    dense_modules = dict(dense.named_modules())
    modes = model.training, dense.training
    model.eval()
    dense.eval()
    refits = []
    try:
        for name in _call_order(model, layers, data):
            refits.append(
                _refit_layer(model, dense, name, layers[name], dense_modules[name], plan,
                             data, num_samples, tx)
            )  # fmt: skip
    finally:
        model.train(modes[0])
        dense.train(modes[1])
    for r in refits:
        log.info(
            "reconstruct %s: output error %.4g -> %.4g (%d rows)",
            r.layer, r.error_before, r.error_after, r.rows,
        )  # fmt: skip
    return refits


def _refit_layer(
    model: nn.Module,
    dense: nn.Module,
    name: str,
    module: nn.Module,
    dense_module: nn.Module,
    plan: Plan,
    data: Iterable[Any],
    num_samples: int,
    tx: Transaction,
) -> Refit:
    keep = _kept_outputs(dense_module, plan.get(f"{name}.weight", {}))
    bias = module.bias if isinstance(getattr(module, "bias", None), torch.Tensor) else None
    k = as_matrix(module, module.weight).shape[1] + (bias is not None)
    out = len(keep)
    xtx = torch.zeros(k, k, dtype=torch.float64)
    xty = torch.zeros(k, out, dtype=torch.float64)
    yty = torch.zeros((), dtype=torch.float64)
    rows = 0
    for batch in take_samples(data, num_samples):
        inputs, _ = split_batch(batch)
        x = _capture(model, module, inputs, output=False)
        y = _capture(dense, dense_module, inputs, output=True)
        if x is None or y is None:
            continue
        xr = input_rows(module, x)
        if bias is not None:
            xr = torch.cat([xr, xr.new_ones(len(xr), 1)], dim=1)
        yr = _output_rows(dense_module, y)[:, keep]
        _add_gram(xtx, xr)
        _add_gram(xty, xr, yr)
        yty += yr.double().pow(2).sum()
        rows += len(xr)
    if rows == 0:
        raise PrunekitError(
            f"data: reconstruct read no calibration inputs of layer {name!r}; pass batches the "
            "model runs through that layer"
        )
    w0 = as_matrix(module, module.weight).double()
    if bias is not None:
        w0 = torch.cat([w0, bias.detach().double().unsqueeze(1)], dim=1)
    w = ridge_refit(xtx, xty, w0)
    scale = max(float(yty), 1e-30)
    before = output_error(w0, xtx, xty, yty) / scale
    after = output_error(w, xtx, xty, yty) / scale
    tx.protect(t for t in (module.weight, bias) if t is not None)
    if bias is not None:
        bias.copy_(w[:, -1].to(bias.dtype))
        w = w[:, :-1]
    module.weight.copy_(from_matrix(module, w.to(module.weight.dtype)))
    return Refit(name, rows, before, after)


def _kept_outputs(dense_module: nn.Module, removed: dict[int, np.ndarray]) -> torch.Tensor:
    out_dim = 1 if is_transposed(dense_module) else 0
    size = dense_module.weight.shape[out_dim]
    mask = torch.ones(size, dtype=torch.bool)
    if out_dim in removed:
        mask[torch.as_tensor(removed[out_dim], dtype=torch.long)] = False
    return torch.nonzero(mask).flatten()


def _output_rows(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """A layer's output as rows ``[N, out]`` matching :func:`prunekit.layout.input_rows`."""
    if isinstance(module, nn.Conv2d):
        return y.movedim(1, -1).reshape(-1, y.shape[1])
    return y.reshape(-1, y.shape[-1])


def _capture(
    model: nn.Module, module: nn.Module, inputs: Any, *, output: bool
) -> torch.Tensor | None:
    """The first input (or output) tensor of ``module`` when ``model`` runs ``inputs``; the
    forward stops there. None if the module is not called."""
    seen: list[torch.Tensor] = []

    def pre(_m: nn.Module, args: tuple[Any, ...]) -> None:
        seen.append(args[0].detach())
        raise _StopForward

    def post(_m: nn.Module, _args: tuple[Any, ...], result: Any) -> None:
        seen.append(result.detach())
        raise _StopForward

    handle = module.register_forward_hook(post) if output else module.register_forward_pre_hook(pre)
    try:
        with contextlib.suppress(_StopForward):
            calibration_forward(model, inputs)
    finally:
        handle.remove()
    return seen[0] if seen else None


def _call_order(model: nn.Module, layers: dict[str, nn.Module], data: Iterable[Any]) -> list[str]:
    """Names of ``layers`` in the order the forward pass first calls them (on one batch)."""
    order: list[str] = []
    handles = [
        m.register_forward_pre_hook(lambda _m, _a, n=n: order.append(n) if n not in order else None)
        for n, m in layers.items()
    ]
    try:
        for batch in take_samples(data, None):
            calibration_forward(model, split_batch(batch)[0])
            break
        else:
            raise PrunekitError("data: reconstruct got no calibration batches; pass at least one")
    finally:
        for h in handles:
            h.remove()
    return order
