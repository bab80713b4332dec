"""One layout for every weight matrix: ``[out, in, *kernel]``.

Hugging Face's GPT-2 family stores its projections in ``transformers`` ``Conv1D`` modules whose
weight is ``[in, out]``. Plans (N:M groups, per-row choices) and activation statistics are
defined on inputs, so they see every weight through this canonical view.
"""

from __future__ import annotations

import sys

import torch
from torch import nn


def conv1d_type() -> type[nn.Module] | None:
    """transformers' ``Conv1D`` class if transformers is already imported (a HF model is in
    use), else None: importing transformers just to ask would cost seconds."""
    module = sys.modules.get("transformers.pytorch_utils")
    if module is None and "transformers" in sys.modules:
        try:
            import transformers.pytorch_utils as module  # type: ignore[no-redef]
        except ImportError:
            return None
    return getattr(module, "Conv1D", None) if module is not None else None


def is_transposed(module: nn.Module) -> bool:
    """True for modules whose weight is stored ``[in, out]``: transformers' Conv1D, and the
    prunekit layers standing in for one (they set ``weight_transposed``)."""
    cls = conv1d_type()
    if cls is not None and isinstance(module, cls):
        return True
    return getattr(module, "weight_transposed", False) is True


def canonical(module: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """``t`` (shaped like ``module.weight``) viewed as ``[out, in, *kernel]``; its own inverse."""
    return t.t() if is_transposed(module) else t


def in_features(module: nn.Module) -> int:
    """The width of the module's input: what N:M groups and activation statistics run along."""
    return int(canonical(module, module.weight).shape[1])


def as_matrix(module: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """``t`` (shaped like ``module.weight``) as a matrix ``[out, K]`` whose K columns line up with
    the rows of :func:`input_rows`: conv columns ordered (kernel position, input channel), so M
    consecutive columns are M input channels (the N:M groups of ``plan.nm_groups``)."""
    c = canonical(module, t)
    if c.dim() > 2:
        c = c.movedim(1, -1)
    return c.reshape(c.shape[0], -1)


def from_matrix(module: nn.Module, m: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`as_matrix`: back to the shape and layout of ``module.weight``."""
    shape = canonical(module, module.weight).shape
    if len(shape) > 2:
        moved = (shape[0], *shape[2:], shape[1])
        return canonical(module, m.reshape(moved).movedim(-1, 1))
    return canonical(module, m.reshape(shape))


def input_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as rows ``[N, K]``, one per output position, matching :func:`as_matrix`.

    Linear/Conv1D: every token is a row. Conv2d: every sliding-window patch (``unfold``) is.
    """
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise NotImplementedError("grouped convolutions")
        patches = torch.nn.functional.unfold(
            x, module.kernel_size, module.dilation, module.padding, module.stride
        )  # [B, C·kh·kw, L], ordered (channel, kh, kw)
        b, _, length = patches.shape
        c = module.in_channels
        patches = patches.reshape(b, c, -1, length).movedim(1, 2)  # (kernel position, channel)
        return patches.reshape(b, -1, length).transpose(1, 2).reshape(b * length, -1)
    return x.reshape(-1, x.shape[-1])
