"""The only code that edits a model's modules or weights.

Everything before this point (selection, scoring, planning) only reads the model, so a failure
there leaves it untouched. Masks are applied by writing zeros into the plain weights: no
reparametrization, no hooks, nothing left behind.
"""

from __future__ import annotations

import torch
from torch import nn

Masks = dict[str, torch.Tensor]


@torch.no_grad()
def apply_masks_(layers: dict[str, nn.Module], masks: Masks, *, atomic: bool = False) -> None:
    """Zero the weights where ``masks[name]`` is False. masks: bool, the weight's shape.

    atomic: if writing one layer fails, put back the values already zeroed in the others (it
    keeps those values, not copies of whole weights). The training loop, which re-applies the
    masks every step inside its own rollback, leaves it off.
    """
    written: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    try:
        for name, mask in masks.items():
            weight = layers[name].weight
            drop = ~mask.to(device=weight.device)
            old = weight[drop] if atomic else None
            # masked_fill writes +0.0 (mul_ would leave -0.0 for negative weights).
            weight.masked_fill_(drop, 0.0)
            if old is not None:
                written.append((weight, drop, old))
    except BaseException:
        for weight, drop, old in reversed(written):
            weight.masked_scatter_(drop, old)
        raise


@torch.no_grad()
def mask_grads_(layers: dict[str, nn.Module], masks: Masks) -> None:
    """Zero the gradients of pruned weights, so optimizer state never pulls them back."""
    for name, mask in masks.items():
        grad = layers[name].weight.grad
        if grad is not None:
            grad.masked_fill_(~mask.to(device=grad.device), 0.0)


@torch.no_grad()
def masks_from_zeros(layers: dict[str, nn.Module]) -> Masks:
    """The masks a pruned model carries in its weights: True where a weight is non-zero."""
    return {name: m.weight.detach() != 0 for name, m in layers.items()}


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter and buffer, to put the model back if an operation fails."""
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}


@torch.no_grad()
def restore_(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Write a :func:`snapshot` back into the same tensors (identities and shapes unchanged)."""
    current = model.state_dict(keep_vars=True)
    for k, v in state.items():
        current[k].copy_(v)
