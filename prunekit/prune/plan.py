"""Scores + a target → masks. Pure: nothing here touches a model.

A mask is a bool tensor of the weight's shape, True = kept. Every function reaches its target
exactly, to the element: ties are broken by position, never by a threshold that may keep more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch

from prunekit.config import NM


def num_to_prune(numel: int, sparsity: float) -> int:
    """How many of ``numel`` weights go at ``sparsity`` (rounded to the nearest element)."""
    return round(sparsity * numel)


def _drop_lowest(flat: torch.Tensor, k: int) -> torch.Tensor:
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    if k > 0:
        # A stable sort breaks ties by position, so equal scores give a deterministic plan.
        order = torch.sort(flat.float(), stable=True).indices
        keep[order[:k]] = False
    return keep


def unstructured_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep all but the ``round(sparsity·numel)`` lowest-scored entries. scores: any shape."""
    flat = scores.reshape(-1)
    return _drop_lowest(flat, num_to_prune(flat.numel(), sparsity)).reshape(scores.shape)


def split_count(total: int, sizes: list[int], weights: list[float] | None = None) -> list[int]:
    """Share ``total`` removals among parts of ``sizes`` in proportion to ``weights`` (default:
    the sizes), each part at most its size; largest-remainder rounding, so the counts add up to
    ``total`` exactly (when the sizes allow it)."""
    weights = list(sizes) if weights is None else weights
    whole = sum(weights)
    if whole <= 0:
        return [0] * len(sizes)
    exact = [min(total * w / whole, s) for w, s in zip(weights, sizes, strict=True)]
    counts = [int(e) for e in exact]
    order = sorted(range(len(sizes)), key=lambda i: (counts[i] - exact[i], i))
    while sum(counts) < min(total, sum(sizes)):
        for i in order:
            if sum(counts) >= total:
                break
            if counts[i] < sizes[i]:
                counts[i] += 1
    return counts


def row_masks(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Per-output comparison (Wanda): each row of ``scores [out, in, ...]`` loses its lowest
    entries; rows share the layer's ``round(sparsity·numel)`` removals as evenly as possible."""
    rows = scores.reshape(scores.shape[0], -1).float()
    width = rows.shape[1]
    counts = split_count(num_to_prune(rows.numel(), sparsity), [width] * rows.shape[0])
    order = torch.sort(rows, dim=1, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(width).expand_as(order).contiguous())
    keep = ranks >= torch.tensor(counts).unsqueeze(1)
    return keep.reshape(scores.shape)


def global_masks(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """One ranking across all layers: exactly ``round(sparsity·Σ numel)`` entries removed."""
    names = list(scores)
    flat = torch.cat([scores[n].reshape(-1).float() for n in names])
    keep = _drop_lowest(flat, num_to_prune(flat.numel(), sparsity))
    out, start = {}, 0
    for n in names:
        size = scores[n].numel()
        out[n] = keep[start : start + size].reshape(scores[n].shape)
        start += size
    return out


def sortable_keys(scores: torch.Tensor) -> torch.Tensor:
    """int32 keys that order like ``scores.float()`` does in ``torch.sort``: -0.0 and +0.0 equal,
    NaN above everything. scores: any shape → int32 of that shape."""
    s = scores.float() + 0.0  # -0.0 + 0.0 is +0.0: the sort takes both zeros as equal
    s = s.masked_fill(s.isnan(), float("nan"))  # one NaN pattern, the positive one
    bits = s.view(torch.int32)
    # A float's bits order like an integer when positive and in reverse when negative.
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


@dataclass(frozen=True)
class Cut:
    """Where the ``k`` lowest scores of a sequence end: every score whose key is below ``key``
    goes, and so do the first ``ties`` (in order) whose key equals it."""

    key: int
    ties: int


NO_CUT = Cut(-(1 << 31), 0)
_BINS = 1 << 16


def _first_reaching(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """The first bin where the running count of ``hist`` reaches ``k``, and the count below it."""
    running = hist.cumsum(0)
    b = int(torch.searchsorted(running, k))
    return b, int(running[b - 1]) if b else 0


def find_cut(chunks: Callable[[], Iterable[torch.Tensor]], k: int) -> Cut:
    """The :class:`Cut` that removes exactly the ``k`` lowest scores, ties by position, as a
    stable sort of every score would. ``chunks()`` yields the scores in order, a part at a time
    (it is called twice); only a part's keys and two 65536-bin histograms are held: the upper
    16 bits of the k-th key are found in one pass, its lower 16 bits in the second."""
    if k <= 0:
        return NO_CUT
    high = torch.zeros(_BINS, dtype=torch.int64)
    for part in chunks():
        keys = sortable_keys(part).reshape(-1)
        high += torch.bincount((keys >> 16) + _BINS // 2, minlength=_BINS)
    top, below = _first_reaching(high, k)
    low = torch.zeros(_BINS, dtype=torch.int64)
    for part in chunks():
        keys = sortable_keys(part).reshape(-1)
        low += torch.bincount(keys[(keys >> 16) == top - _BINS // 2] & 0xFFFF, minlength=_BINS)
    bottom, under = _first_reaching(low, k - below)
    return Cut((top - _BINS // 2) * _BINS + bottom, k - below - under)


def keep_above_cut(scores: torch.Tensor, cut: Cut) -> tuple[torch.Tensor, Cut]:
    """The mask (True = kept) of the next part of the sequence ``cut`` was found on, and the cut
    for the parts after it (the ties it still removes)."""
    keys = sortable_keys(scores).reshape(-1)
    drop = keys < cut.key
    ties = cut.ties
    if ties:
        equal = keys == cut.key
        drop |= equal & (equal.cumsum(0) <= ties)
        ties = max(ties - int(torch.count_nonzero(equal)), 0)
    return (~drop).reshape(scores.shape), Cut(cut.key, ties)


def nm_groups(w: torch.Tensor, m: int) -> torch.Tensor:
    """View a weight as groups of ``m`` consecutive input weights: → [groups, m].

    Linear ``[out, in]`` groups along ``in``. Conv ``[out, in, *k]`` groups along input
    channels at each kernel position (the layout sparse kernels read: channels last).
    """
    if w.dim() > 2:
        w = w.movedim(1, -1)
    return w.reshape(-1, m)


def nm_ungroup(groups: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`nm_groups` for a weight of ``shape``."""
    if len(shape) > 2:
        moved = (shape[0], *shape[2:], shape[1])
        return groups.reshape(moved).movedim(-1, 1)
    return groups.reshape(shape)


def nm_mask(scores: torch.Tensor, nm: NM) -> torch.Tensor:
    """Exactly ``nm.n`` zeros in every group of ``nm.m`` consecutive inputs (lowest scores go)."""
    groups = nm_groups(scores.float(), nm.m)
    # Stable sort within each group: ties go to the earlier position, deterministically.
    order = torch.sort(groups, dim=1, stable=True).indices
    keep = torch.ones_like(groups, dtype=torch.bool)
    keep.scatter_(1, order[:, : nm.n], False)
    return nm_ungroup(keep, scores.shape)


def l2_normalized(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each layer's scores divided by their L2 norm, so one global ranking compares layers whose
    raw scores live on different scales (Molchanov et al. 2017, layer-wise ℓ2 normalisation)."""
    out = {}
    for name, s in scores.items():
        finite = s.masked_fill(~torch.isfinite(s), 0.0)
        norm = finite.norm()
        out[name] = s / norm if norm > 0 else s
    return out


def plan_masks(
    scores: dict[str, torch.Tensor],
    sparsity: float | Mapping[str, float],
    nm: NM | None = None,
    scope: str = "layer",
) -> dict[str, torch.Tensor]:
    """Masks for every layer in ``scores``: N:M, per-layer, or one global ranking.

    ``sparsity`` may be ``{layer: sparsity}`` (one entry per layer of ``scores``) for per-layer
    unstructured masks.
    """
    if nm is not None:
        return {n: nm_mask(s, nm) for n, s in scores.items()}
    if isinstance(sparsity, Mapping):
        assert scope == "layer", "per-layer sparsities need scope='layer'"
        return {n: unstructured_mask(s, sparsity[n]) for n, s in scores.items()}
    if scope == "global":
        return global_masks(scores, sparsity)
    return {n: unstructured_mask(s, sparsity) for n, s in scores.items()}
