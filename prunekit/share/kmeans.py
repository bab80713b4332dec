"""K-means codebooks of one weight tensor (pure: a tensor in, a codebook and indices out).

Deep Compression (Han et al. 2016): the non-zero weights of a layer are clustered into ``2**bits``
shared values; each weight then stores only the index of its value. Pruned weights (exact
zeros) are kept out of the clusters and get the reserved index 0, so they stay exactly zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

Init = Literal["linear", "kmeans++", "random"]
_SKLEARN_INIT = {"kmeans++": "k-means++", "random": "random"}


@dataclass(frozen=True)
class Codebook:
    """One layer's shared values.

    codebook: ``[2**bits]``, the shared values, ascending; entries past ``clusters`` are unused
        zeros. indices: the weight's shape, ``0`` for a pruned weight (exact zero) and ``k > 0``
        for ``codebook[k - 1]``; dtype from :func:`index_dtype`.
    """

    codebook: torch.Tensor
    indices: torch.Tensor
    clusters: int

    def decode(self) -> torch.Tensor:
        """The weight these stand for (the original's shape, the codebook's dtype)."""
        return decode(self.codebook, self.indices)


def index_dtype(bits: int) -> torch.dtype:
    """The smallest integer dtype holding indices 0..2**bits (0 is reserved for pruned weights):
    uint8 up to 7 bits, int16 at 8."""
    return torch.uint8 if 2**bits < 256 else torch.int16


def decode(
    codebook: torch.Tensor, indices: torch.Tensor, order: IndexOrder | None = None
) -> torch.Tensor:
    """``codebook`` gathered by ``indices`` with 0 meaning an exact zero; differentiable with
    respect to ``codebook`` (each entry's gradient is the sum over the weights that use it).

    codebook: ``[K]``; indices: any shape, values in 0..K. Returns a tensor of ``indices``' shape.
    ``order``: :func:`index_order` of ``indices``, when the caller keeps it between steps.
    """
    if torch.is_grad_enabled() and codebook.requires_grad:
        return _Gather.apply(codebook, indices, order or index_order(indices, codebook.numel()))
    table = torch.cat([codebook.new_zeros(1), codebook])
    return table[indices.long()]


class IndexOrder(NamedTuple):
    """The positions of ``indices`` sorted by index (stable) and how many use each index."""

    order: torch.Tensor  # [indices.numel()] int64
    counts: torch.Tensor  # [K + 1] int64


def index_order(indices: torch.Tensor, k: int) -> IndexOrder:
    flat = indices.reshape(-1).long()
    return IndexOrder(
        torch.sort(flat, stable=True).indices, torch.bincount(flat, minlength=k + 1)[: k + 1]
    )


class _Gather(torch.autograd.Function):
    """The gather whose backward sums each codebook entry's gradient in one fixed order.

    Autograd's own backward (an accumulating index_put) adds in an order that depends on the
    thread count, so fine-tuning a shared layer differed between 1 and 2 threads (up to 2.7e-5
    after one epoch). Here each entry's gradients are summed in index order, sequentially, by
    ``segment_reduce`` (in float64, then rounded once): the same seed gives the same bits at
    any thread count."""

    @staticmethod
    def forward(ctx: Any, codebook: torch.Tensor, indices: torch.Tensor, order: IndexOrder) -> Any:
        ctx.save_for_backward(order.order, order.counts)
        table = torch.cat([codebook.new_zeros(1), codebook])
        return table[indices.long()]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        order, counts = ctx.saved_tensors
        values = grad.reshape(-1)[order].double()
        sums = torch.segment_reduce(values, "sum", lengths=counts, unsafe=True, initial=0.0)
        return sums[1:].to(grad.dtype), None, None


def cluster(
    weight: torch.Tensor, bits: int, init: Init = "linear", seed: int = 0, max_iter: int = 300
) -> Codebook:
    """K-means of ``weight``'s non-zero values into at most ``2**bits`` shared values.

    weight: any shape (the layer's weight as stored). init: ``"linear"`` (centroids spaced evenly
    over [min, max] of the non-zero weights, Han et al.'s best), ``"kmeans++"`` or ``"random"``
    (scikit-learn's). A layer with no more distinct non-zero values than clusters keeps them
    exactly. Deterministic given ``seed``.
    """
    w = weight.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
    nonzero = w != 0
    values = w[nonzero].numpy()
    size = 2**bits
    codebook = torch.zeros(size, dtype=weight.dtype)
    indices = torch.zeros(w.numel(), dtype=index_dtype(bits))
    if values.size:
        centers, labels = _kmeans(values, size, init, seed, max_iter)
        codebook[: centers.size] = torch.from_numpy(centers)
        indices[nonzero] = torch.from_numpy(labels + 1).to(indices.dtype)
    else:
        centers = np.empty(0)
    shape, device = weight.shape, weight.device
    return Codebook(codebook.to(device), indices.reshape(shape).to(device), int(centers.size))


def _kmeans(
    values: np.ndarray, size: int, init: Init, seed: int, max_iter: int
) -> tuple[np.ndarray, np.ndarray]:
    """Centers (ascending, every one used) and each value's center, for 1-D ``values``."""
    # Imported here: scikit-learn costs ~0.6 s, more than the rest of `import prunekit`.
    from sklearn.cluster import KMeans

    distinct = np.unique(values)
    if distinct.size <= size:
        return distinct, np.searchsorted(distinct, values)
    if init == "linear":
        start: np.ndarray | str = np.linspace(values.min(), values.max(), size).reshape(-1, 1)
    else:
        start = _SKLEARN_INIT[init]
    km = KMeans(n_clusters=size, init=start, n_init=1, max_iter=max_iter, random_state=seed)
    labels = km.fit_predict(values.reshape(-1, 1))
    centers = km.cluster_centers_[:, 0]
    # Keep only the centers some weight uses, ascending, and renumber the labels to match.
    used = np.unique(labels)
    order = np.argsort(centers[used], kind="stable")
    rank = np.empty(size, dtype=np.int64)
    rank[used[order]] = np.arange(used.size)
    return centers[used[order]], rank[labels]
