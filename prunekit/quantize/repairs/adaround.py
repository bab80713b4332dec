"""AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization").

Each weight is rounded down or up, ``w̃ = s · clamp(floor(w / s) + h, qmin, qmax)``, with the
choice ``h ∈ {0, 1}`` learned per weight so that the layer's output on calibration inputs stays
close to the float layer's. During learning ``h`` is the rectified sigmoid
``clamp(sigmoid(V)·(ζ − γ) + γ, 0, 1)`` of a free variable ``V``, and the regularizer
``Σ 1 − |2h − 1|^β`` (β annealed from 20 to 2) pushes every ``h`` to 0 or 1.

Hand-written because torch.ao offers no learned rounding, and the libraries that do (AIMET,
Brevitas' examples) bring their own quantization simulators and pin torch versions; here the
scales are the ones torch.ao's convert chose, and only the integer codes are learned.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

# The stretch of the rectified sigmoid and the regularizer's settings, from the paper.
ZETA, GAMMA = 1.1, -0.1
REG_WEIGHT = 0.01
BETA_START, BETA_END = 20.0, 2.0
WARMUP = 0.2  # fraction of iterations before the regularizer starts
LR = 1e-2
BATCH = 32

Layer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``layer(x, weight) → output``: the layer's op with its bias and activation."""


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """``h(V)`` in [0, 1], reaching both ends for finite ``V``."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)


def initial_logits(rest: torch.Tensor) -> torch.Tensor:
    """The ``V`` with ``h(V) = rest`` (``rest = w/s − floor(w/s)`` in [0, 1)), so learning starts
    from the float weights themselves."""
    p = ((rest - GAMMA) / (ZETA - GAMMA)).clamp(1e-6, 1 - 1e-6)
    return torch.log(p / (1 - p))


def rounding_regularizer(h: torch.Tensor, beta: float) -> torch.Tensor:
    """``Σ 1 − |2h − 1|^β``: 0 when every ``h`` is 0 or 1."""
    return (1 - (2 * h - 1).abs().pow(beta)).sum()


def beta_at(step: int, iterations: int) -> float:
    """β for ``step``: the regularizer is off during warm-up, then β decays from
    ``BETA_START`` to ``BETA_END`` (cosine)."""
    start = int(WARMUP * iterations)
    progress = (step - start) / max(1, iterations - start)
    return BETA_END + 0.5 * (BETA_START - BETA_END) * (1 + math.cos(math.pi * progress))


def nearest_codes(weight: torch.Tensor, scales: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Round-to-nearest codes of ``weight: [out, ...]`` with per-output-channel ``scales:
    [out]``; what min/max quantization stores."""
    return torch.clamp(torch.round(weight / _per_row(scales, weight)), qmin, qmax)


def learn_rounding(
    weight: torch.Tensor,
    scales: torch.Tensor,
    qmin: int,
    qmax: int,
    layer: Layer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    iterations: int,
    seed: int = 0,
) -> torch.Tensor:
    """Integer codes for ``weight: [out, ...]`` (scales ``[out]``, one per output channel)
    learned so that ``layer(inputs, s · codes)`` matches ``targets``.

    inputs: ``[N, ...]`` what the quantized layer receives (the quantized model's activations);
    targets: ``[N, ...]`` the float layer's outputs on the float model's activations.
    Each iteration reads a random batch of ``BATCH`` samples. Returns codes as float ``[out,
    ...]`` in ``[qmin, qmax]``.
    """
    weight = weight.detach()
    s = _per_row(scales, weight)
    floor = torch.floor(weight / s)
    v = initial_logits(weight / s - floor).requires_grad_(True)
    optimizer = torch.optim.Adam([v], lr=LR)
    generator = torch.Generator().manual_seed(seed)
    start = int(WARMUP * iterations)
    for step in range(iterations):
        batch = torch.randint(
            0, inputs.shape[0], (min(BATCH, inputs.shape[0]),), generator=generator
        )
        h = rectified_sigmoid(v)
        w = s * torch.clamp(floor + h, qmin, qmax)
        out = layer(inputs[batch], w)
        # Summed over channels, averaged over samples and positions (as in BRECQ's reference).
        loss = (out - targets[batch]).pow(2).sum(1).mean()
        if step >= start:
            loss = loss + REG_WEIGHT * rounding_regularizer(h, beta_at(step, iterations))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return torch.clamp(floor + (v >= 0).to(floor.dtype), qmin, qmax)


def _per_row(scales: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return scales.to(like.dtype).view(-1, *(1,) * (like.dim() - 1))
