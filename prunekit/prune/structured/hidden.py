"""Pruning the hidden width: the channels under LayerNorm/RMSNorm (``prune_hidden=True``).

``analyze(model, inputs, hidden=True)`` lets the normalized dimensions couple instead of
blocking them, so the residual stream of a transformer (embeddings, every block's input and
output projections, every norm on the stream, the final norm, a tied LM head, the classifier's
inputs) or a ConvNeXt stage's width (patchify/downsampling conv, depthwise convs, the norms,
pointwise MLP ends, layer scales) is one ``"hidden"`` group. Removing one of its channels
changes every norm's statistic (taken over the remaining channels), so unlike heads and FFN
neurons this removal is *not* equivalent to zeroing the channel: the masked-equivalence check
cannot apply. Instead the output difference the shrink causes is measured and reported.

Ranking, as Minitron (Muralidharan et al. 2024) does for the embedding channels: activation
statistics of the norms' outputs on calibration data (root mean square per channel, each norm
normalised by its mean, summed over the norms of the stream), not weight magnitudes: the
stream's channels differ most in how much signal they carry.

A layer whose width a Hugging Face config ties to the hidden size (BERT's pooler, a
hidden → hidden layer) narrows to the new hidden width too (:func:`tie_to_hidden`), so that the
rewritten config alone rebuilds the model: ``from_pretrained`` reopens it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.calibrate import calibration_forward
from prunekit.data.batches import split_batch, take_samples
from prunekit.errors import PrunekitError
from prunekit.prune.structured.graph import DependencyGraph, Group, Member
from prunekit.prune.structured.plan import lowest, per_unit
from prunekit.prune.structured.rules import HIDDEN
from prunekit.prune.structured.scores import magnitude
from prunekit.prune.structured.trace import run_model
from prunekit.surgery.shrink import shrink_
from prunekit.targets import matches

log = logging.getLogger(__name__)

# Calibration samples read for the activation statistics.
HIDDEN_SAMPLES = 256

Plan = dict[str, dict[int, np.ndarray]]


@dataclass
class HiddenResult:
    """What removing the hidden channels did to the outputs on the example input.

    rel_error: ‖y' − y‖ / ‖y‖ over the floating-point outputs (an output whose width narrowed
        is compared on its kept channels). cosine: mean cosine similarity of the outputs' rows.
    resized: the outputs whose width narrowed with the stream, ``"output i: [..] → [..]"``.
    config_updates: Hugging Face config keys rewritten in ``model.config``; config_complete:
        whether that config alone rebuilds the pruned model (``from_pretrained`` reopens it).
    """

    rel_error: float | None
    cosine: float | None
    resized: list[str] = field(default_factory=list)
    config_updates: dict[str, Any] = field(default_factory=dict)
    config_complete: bool | None = None


def is_norm(module: nn.Module) -> bool:
    """LayerNorm, RMSNorm and the hand-written kinds (T5LayerNorm, LlamaRMSNorm,
    ConvNextLayerNorm…): by class, or by name where a library defines its own."""
    if isinstance(module, nn.modules.batchnorm._NormBase | nn.GroupNorm):
        return False  # per-channel statistics over the batch or groups: not a hidden width
    return isinstance(module, nn.LayerNorm | nn.RMSNorm) or "norm" in type(module).__name__.lower()


def _norm_weights(model: nn.Module, group: Group) -> list[Member]:
    modules = dict(model.named_modules())
    out = []
    for m in group.members:
        module = modules.get(m.module)
        if module is None or not is_norm(module) or not m.param.endswith("weight"):
            continue
        if getattr(module, m.param.rpartition(".")[2]).dim() == 1:
            out.append(m)
    return out


def _layer_outputs(model: nn.Module, group: Group) -> list[Member]:
    """The Linear weights whose output rows a group's units are, where the units span nothing
    else (no layer reads them inside the model: a pooler's output, which is a model output)."""
    modules = dict(model.named_modules())
    linear = [isinstance(modules.get(m.module), nn.Linear) and m.dim == 0 for m in group.members]
    if not all(linear):
        return []
    return [m for m in group.members if m.param.endswith(".weight")]


def activation_scores(
    model: nn.Module, groups: list[Group], data: Iterable[Any]
) -> dict[int, np.ndarray]:
    """``{group id: score per unit}``: the RMS of each channel at the output of every norm in
    the group, over the calibration batches (up to :data:`HIDDEN_SAMPLES` samples); for the
    output channels of a layer tied to the hidden width (:func:`tie_to_hidden`), at that layer's
    output. A group without a norm weight or layer output to observe (a norm without affine
    parameters) is ranked by weight magnitude instead."""
    modules = dict(model.named_modules())
    # A tied layer's output is a model output: the channels that carry the least signal on the
    # calibration data change it least (its weight rows' norms would ignore what it reads).
    taps = {g.id: _norm_weights(model, g) or _layer_outputs(model, g) for g in groups}
    names = {m.module for members in taps.values() for m in members}
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = defaultdict(int)

    def hook(name: str, width: int) -> Any:
        first = getattr(modules[name], "data_format", None) == "channels_first"

        def record(_m: nn.Module, _args: Any, out: Any) -> None:
            y = out[0] if isinstance(out, tuple) else out
            if not isinstance(y, torch.Tensor):
                return
            # Channels-first (ConvNeXt's downsampling norm: [B, C, H, W]) or channels-last.
            dim = 1 if first and y.dim() >= 3 else -1
            if y.shape[dim] != width:
                return
            x = y.detach().float().movedim(dim, -1).reshape(-1, width)
            sums[name] = sums.get(name, 0) + x.pow(2).sum(0)
            counts[name] += x.shape[0]

        return record

    handles = [modules[n].register_forward_hook(hook(n, modules[n].weight.shape[0])) for n in names]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in take_samples(data, HIDDEN_SAMPLES):
                calibration_forward(model, split_batch(batch)[0])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    scores: dict[int, np.ndarray] = {}
    for g in groups:
        per_norm = []
        for m in taps[g.id]:
            if m.module not in sums:
                continue
            rms = (sums[m.module] / counts[m.module]).sqrt().cpu().numpy()
            unit = rms[m.index].mean(axis=1)
            mean = unit.mean()
            per_norm.append(unit / mean if mean > 0 else unit)
        scores[g.id] = np.sum(per_norm, axis=0) if per_norm else magnitude(g, tensors)
    return scores


def no_hidden_error(model: nn.Module, graph: DependencyGraph) -> PrunekitError:
    """Why ``prune_hidden`` found no residual stream to narrow: the norms and what blocks them."""
    modules = dict(model.named_modules())
    norms = [n for n, m in modules.items() if is_norm(m) and getattr(m, "weight", None) is not None]
    if not norms:
        return PrunekitError(
            f"prune_hidden: {type(model).__name__} has no LayerNorm/RMSNorm with a weight, so "
            "there is no normalized hidden width to narrow; set prune_hidden=False"
        )
    why: dict[str, str] = {}
    for b in graph.blocked:
        module = b.param.rpartition(".")[0]
        if module in norms and module not in why:
            why[module] = f"{module} ({type(modules[module]).__name__}): {b.reason}"
    listed = "; ".join(list(why.values())[:3]) or (
        f"{len(norms)} norms, none on a channel dimension the trace could follow"
    )
    return PrunekitError(
        f"prune_hidden: no hidden width of {type(model).__name__} can be narrowed, the chain of "
        f"norms and embeddings is blocked: {listed}. Leave the hidden width with "
        "prune_hidden=False (heads and FFN neurons are still pruned)"
    )


def with_unused(graph: DependencyGraph, removed: dict[int, np.ndarray], plan: Plan) -> Plan:
    """``plan`` plus the parameters the forward did not use on the example input (DINOv2's
    ``mask_token``, read only for masked inputs) that sit in a module of a narrowed hidden group
    and have one dimension of its width: they narrow with it, or the model would fail on the
    inputs that use them."""
    unused = {
        (b.param, b.dim)
        for b in graph.blocked
        if b.reason == "not used by the forward pass on the example input"
    }
    out = {name: dict(dims) for name, dims in plan.items()}
    for g in graph.groups:
        mask = removed.get(g.id)
        if g.kind != HIDDEN or mask is None or not mask.any():
            continue
        owners = set(g.modules)
        channels = next((m for m in g.members if m.index.shape[1] == 1), None)
        if channels is None:
            continue
        for name, dim in sorted(unused):
            shape = graph.param_shapes[name]
            fits = [d for d, n in enumerate(shape) if n == g.size]
            if name.rpartition(".")[0] in owners and fits == [dim] and name not in out:
                out[name] = {dim: np.sort(channels.index[mask].ravel())}
    return out


def tie_to_hidden(
    model: nn.Module, graph: DependencyGraph, candidates: list[Group], ignore: list[str]
) -> dict[int, int]:
    """``{group id: hidden group id}``: the groups whose width a Hugging Face config ties to a
    hidden group's (found by :func:`~prunekit.artifact.structure.hidden_tied_dims`), which must
    keep as many units as it does (:func:`match_tied`) for the rewritten config to rebuild the
    model. A hidden → hidden layer read inside the model (BertForSequenceClassification's
    pooler, read by the classifier) is a channel group already; one whose output is a model
    output (BertModel's ``pooler_output``) becomes a ``"hidden"`` group of ``graph`` here, its
    output narrowing with the stream. A layer touching a module in ``ignore`` stays as it is."""
    from prunekit.artifact.structure import hidden_tied_dims

    hidden: dict[int, list[Group]] = defaultdict(list)
    for g in candidates:
        if g.kind == HIDDEN:
            hidden[g.size].append(g)
    # Two hidden groups of one width: the config cannot say which of them a layer follows.
    widths = [w for w, gs in hidden.items() if len(gs) == 1]
    dims = hidden_tied_dims(model, widths) if widths else {}
    member_of = {(m.param, m.dim): g for g in graph.groups for m in g.members}
    modules = dict(model.named_modules())
    tied: dict[int, int] = {}
    for (param, dim), width in sorted(dims.items()):
        group = member_of.get((param, dim))
        if group is None:
            group = graph.output_group(param, dim)
            if group is None:
                continue
            member_of.update({(m.param, m.dim): group for m in group.members})
        elif group not in candidates or group.kind != "channel" or per_unit(group) != 1:
            continue  # the stream itself, a head (its size follows the hidden width), ignored
        touched = [(s, n) for s in ignore for n in group.modules if n in modules]
        if group.size == width and not any(matches(s, n, modules[n]) for s, n in touched):
            tied[group.id] = hidden[width][0].id
    return tied


def match_tied(
    removed: dict[int, np.ndarray], tied: dict[int, int], scores: dict[int, np.ndarray]
) -> dict[int, np.ndarray]:
    """``removed`` with each tied group keeping as many units as its hidden group, its lowest
    scores going."""
    out = dict(removed)
    for gid, hidden in tied.items():
        if gid in out and hidden in out:
            out[gid] = lowest(scores[gid], int((~out[hidden]).sum()))
    return out


def remap(first: Plan, second: Plan, shapes: dict[str, tuple[int, ...]]) -> Plan:
    """``second``'s indices renumbered for tensors that ``first`` already shrank along the same
    dimension (both plans index the unpruned model)."""
    out: Plan = {}
    for name, dims in second.items():
        out[name] = {}
        for d, idx in dims.items():
            done = first.get(name, {}).get(d)
            if done is None:
                out[name][d] = idx
            else:
                kept = np.setdiff1d(np.arange(shapes[name][d]), done)
                out[name][d] = np.searchsorted(kept, idx)
    return out


@contextlib.contextmanager
def config_kept(model: nn.Module) -> Iterator[None]:
    """Put a Hugging Face ``model.config`` back as it was if the block raises (the surgery
    transaction restores modules, not the config object they share)."""
    config = getattr(model, "config", None)
    saved = copy.deepcopy(vars(config)) if config is not None else None
    try:
        yield
    except BaseException:
        if config is not None and saved is not None:
            vars(config).clear()
            vars(config).update(saved)
        raise


@torch.no_grad()
def shrink_hidden_(
    model: nn.Module,
    graph: DependencyGraph,
    removed: dict[int, np.ndarray],
    plan: Plan,
    example_inputs: Any,
) -> HiddenResult:
    """Remove the hidden channels ``plan`` names, rewrite a Hugging Face config to the new
    widths, and measure the output difference on ``example_inputs``. Call inside a
    transaction and :func:`config_kept`: nothing here is undone on its own."""
    was_training = model.training
    model.eval()
    try:
        reference = [o.detach().clone() for o in run_model(model, example_inputs)]
        shrink_(model, plan, {})
        updates, complete = rewrite_config_(model)
        try:
            outputs = run_model(model, example_inputs)
        except Exception as e:
            raise PrunekitError(
                f"prune_hidden: the model with the narrower hidden width failed to run "
                f"({type(e).__name__}: {e}); it was rolled back. A module probably keeps the "
                "width as an attribute prunekit does not know: set prune_hidden=False"
            ) from e
    finally:
        model.train(was_training)
    result = _difference(outputs, reference, graph.kept_output_indices(removed))
    result.config_updates, result.config_complete = updates, complete
    return result


def rewrite_config_(model: nn.Module) -> tuple[dict[str, Any], bool | None]:
    """Set the Hugging Face config keys that express the pruned widths (hidden, FFN, heads;
    ``head_dim`` made explicit where the width no longer implies it) on ``model.config``, so
    ``save_pretrained``/``from_pretrained`` reopen the model. ``(updates, complete)``; complete
    is None for a model without a config."""
    config = getattr(model, "config", None)
    if config is None or not callable(getattr(model, "save_pretrained", None)):
        return {}, None
    from prunekit.artifact.structure import hf_config_updates

    updates, complete = hf_config_updates(model)
    if not complete:
        log.warning(
            "prune_hidden: %s's config cannot express every pruned width (rewritten: %s); "
            "from_pretrained will not reopen the saved folder, prunekit.save/prunekit.load do",
            type(model).__name__,
            updates,
        )
    for key, value in updates.items():
        old = getattr(config, key, None)
        setattr(config, key, value)
        if isinstance(old, int) and isinstance(value, int):
            _rescale_embeddings(model, old, value)
    return updates, complete


def _rescale_embeddings(model: nn.Module, old: int, new: int) -> None:
    """Embeddings scaled by √hidden (Gemma's, kept as a non-persistent buffer that
    ``from_pretrained`` recomputes from the config) take the new width's scale, so the model
    in memory computes what the reopened one will."""
    for module in model.modules():
        scale = getattr(module, "scalar_embed_scale", None)
        if isinstance(scale, float) and math.isclose(scale, old**0.5):
            module.scalar_embed_scale = new**0.5
            buffer = module._buffers.get("embed_scale")
            if isinstance(buffer, torch.Tensor):
                module._buffers["embed_scale"] = torch.full_like(buffer, new**0.5)


def _difference(
    outputs: list[torch.Tensor],
    reference: list[torch.Tensor],
    kept: list[list[np.ndarray] | None],
) -> HiddenResult:
    err = norm = 0.0
    cos_sum, rows = 0.0, 0
    resized = []
    for i, (o, r) in enumerate(zip(outputs, reference, strict=False)):
        if not (o.is_floating_point() and r.is_floating_point()) or o.dim() != r.dim():
            continue
        if o.shape != r.shape:
            resized.append(f"output {i}: {list(r.shape)} → {list(o.shape)}")
            diff = [d for d in range(o.dim()) if o.shape[d] != r.shape[d]]
            dims = kept[i] if i < len(kept) else None
            if len(diff) != 1 or dims is None or len(dims) != o.dim():
                continue
            if len(dims[diff[0]]) != o.shape[diff[0]]:
                continue
            r = r.index_select(diff[0], torch.as_tensor(dims[diff[0]], device=r.device))
        o64, r64 = o.double(), r.double()
        err += float((o64 - r64).pow(2).sum())
        norm += float(r64.pow(2).sum())
        if o.dim() and o.shape[-1] > 1:
            a, b = o64.reshape(-1, o.shape[-1]), r64.reshape(-1, o.shape[-1])
            cos_sum += float(torch.nn.functional.cosine_similarity(a, b, dim=-1).sum())
            rows += a.shape[0]
    return HiddenResult(
        rel_error=math.sqrt(err / norm) if norm > 0 else None,
        cosine=cos_sum / rows if rows else None,
        resized=resized,
    )
