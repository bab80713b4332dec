"""Group scores: one importance per unit, from all of the unit's parameter slices.

Pure functions of tensors. Each member (a parameter's share of the group) is scored per unit,
normalised by its mean over the group's units so that a wide layer does not outvote a narrow
one, and the members are averaged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.calibrate import gradient_pass
from prunekit.errors import PrunekitError
from prunekit.prune.structured.graph import Group, Member


def member_values(t: torch.Tensor, member: Member) -> torch.Tensor:
    """``[units, values]``: each unit's slice of ``t`` along ``member.dim``, flattened."""
    idx = torch.as_tensor(member.index.ravel(), device=t.device)
    x = t.detach().movedim(member.dim, 0).index_select(0, idx)
    return x.reshape(member.index.shape[0], -1).float()


def _normalized_mean(per_member: list[torch.Tensor]) -> np.ndarray:
    total = torch.zeros_like(per_member[0])
    for s in per_member:
        mean = s.mean()
        total += s / mean if mean > 0 else s
    return (total / len(per_member)).cpu().numpy()


def weight_members(group: Group, tensors: dict[str, torch.Tensor]) -> list[Member]:
    """The members that are weight matrices/kernels (≥ 2-D); all members if there are none."""
    weights = [m for m in group.members if m.param in tensors and tensors[m.param].dim() >= 2]
    return weights or [m for m in group.members if m.param in tensors]


def magnitude(group: Group, tensors: dict[str, torch.Tensor], norm: str = "l1") -> np.ndarray:
    """L1 (sum |w|) or L2 (sqrt of sum w²) of each unit's weights."""
    scores = []
    for m in weight_members(group, tensors):
        x = member_values(tensors[m.param], m)
        scores.append(x.abs().sum(1) if norm == "l1" else x.pow(2).sum(1).sqrt())
    return _normalized_mean(scores)


def bn_scale(
    group: Group, tensors: dict[str, torch.Tensor], bn_weights: set[str]
) -> np.ndarray | None:
    """|γ| of the BatchNorm scales in the group (network slimming); None if it has none."""
    scores = [
        member_values(tensors[m.param], m).abs().sum(1)
        for m in group.members
        if m.param in bn_weights
    ]
    return _normalized_mean(scores) if scores else None


def taylor_term(group: Group, tensors: dict[str, torch.Tensor]) -> np.ndarray:
    """One batch's (Σ w·∂L/∂w)² per unit over the group's slices (Molchanov et al. 2019).

    ``tensors`` must be parameters whose ``.grad`` holds this batch's gradient."""
    total: torch.Tensor | None = None
    for m in group.members:
        p = tensors.get(m.param)
        if p is None or p.grad is None:
            continue
        s = (member_values(p, m) * member_values(p.grad, m)).sum(1)
        total = s if total is None else total + s
    if total is None:
        return np.zeros(group.size)
    return total.pow(2).cpu().numpy()


def random(group: Group, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, group.id]).random(group.size)


# Group scorers: what a pruning method registers as ``group_scores`` (prunekit.registry). Each
# gives ``{group id: scores [units]}`` for the candidate groups, or ``None`` (or the reason, a
# string) for a group it cannot rank (such a group is left alone and reported).
GroupScores = dict[int, np.ndarray | str | None]


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def magnitude_groups(
    model: nn.Module, groups: list[Group], config: Any, data: Any, loss_fn: Any
) -> GroupScores:
    tensors, norm = _tensors(model), getattr(config, "norm", "l1")
    return {g.id: magnitude(g, tensors, norm) for g in groups}


def random_groups(
    model: nn.Module, groups: list[Group], config: Any, data: Any, loss_fn: Any
) -> GroupScores:
    return {g.id: random(g, config.seed) for g in groups}


def bn_scale_groups(
    model: nn.Module, groups: list[Group], config: Any, data: Any, loss_fn: Any
) -> GroupScores:
    bn = {
        f"{n}.weight"
        for n, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None
    }
    tensors = _tensors(model)
    return {g.id: bn_scale(g, tensors, bn) for g in groups}


def taylor_groups(
    model: nn.Module, groups: list[Group], config: Any, data: Any, loss_fn: Any
) -> GroupScores:
    if data is None:
        raise PrunekitError(
            "data: taylor scores need labelled batches; pass data=[(inputs, labels), ...]"
        )
    totals = {g.id: np.zeros(g.size) for g in groups}
    params = dict(model.named_parameters())

    def observe() -> None:
        for g in groups:
            totals[g.id] += taylor_term(g, params)

    n = gradient_pass(model, data, observe, loss_fn, getattr(config, "num_samples", None))
    return {gid: t / n for gid, t in totals.items()}
