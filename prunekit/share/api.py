"""``share_weights_``: replace each chosen layer's weights by a k-means codebook and indices.

Plan (pure): select the layers, cluster each one's non-zero weights. Apply: swap each layer for
its codebook layer (:mod:`prunekit.share.layers`), recorded for ``load``. Every check and every
k-means runs before the first swap, and a swap that fails undoes the ones before it, so if this
raises the model is as it was.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.report import Report, Table, shape
from prunekit.share.config import KMeansConfig
from prunekit.share.kmeans import Codebook, cluster
from prunekit.share.layers import (
    SWAP_KIND,
    SharedLayer,
    check_shareable,
    is_conv,
    shared_like,
    swap_args,
)
from prunekit.surgery import swaps
from prunekit.surgery.transaction import transaction
from prunekit.targets import per_layer, select_layers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerShare:
    """One shared layer: ``clusters`` shared values used of ``2**bits``; ``error`` is the
    relative L2 error ``‖W − W_shared‖ / ‖W‖`` of its weight."""

    name: str
    kind: str
    shape: tuple[int, ...]
    bits: int
    clusters: int
    zeros: int
    numel: int
    error: float


@dataclass(kw_only=True)
class ShareReport(Report):
    """Per-layer codebooks of a ``share_weights_`` call; ``skipped``: layer -> why not shared."""

    layers: list[LayerShare]

    @property
    def bits(self) -> dict[str, int]:
        return {r.name: r.bits for r in self.layers}

    @property
    def clusters(self) -> dict[str, int]:
        return {r.name: r.clusters for r in self.layers}

    @property
    def errors(self) -> dict[str, float]:
        return {r.name: r.error for r in self.layers}

    def title(self) -> str:
        n, s = len(self.layers), self.seconds
        return f"{self.method}: {n} layers share their weights ({s:.1f} s)"

    def table(self) -> Table:
        rows = [[r.name, r.kind, shape(r.shape), str(r.bits), f"{r.clusters}/{2**r.bits}",
                 f"{r.zeros / r.numel:.2%}", f"{r.error:.4f}"] for r in self.layers]  # fmt: skip
        return ["layer", "type", "shape", "bits", "clusters", "zeros", "rel. error"], rows


def share_weights_(model: nn.Module, config: KMeansConfig | None = None) -> ShareReport:
    """Share weights in place: each chosen layer's non-zero weights become ``2**bits`` k-means
    values (``layer_bits`` per layer, else ``conv_bits`` for convolutions, else ``bits``) and
    the layer a :class:`SharedLinear` / :class:`SharedConv` storing the codebook and indices;
    zeros (pruned weights) stay exactly zero. ``prunekit.finetune_`` then trains the shared
    values, with the indices fixed.

    A layer whose weight is tied to another module's (an embedding tied to the output head) is
    left dense and listed in ``ShareReport.skipped``: sharing it would untie the two.
    Returns a :class:`ShareReport`. If this raises, the model is unchanged.
    """
    config = KMeansConfig() if config is None else config
    if not isinstance(config, KMeansConfig):
        raise TypeError(f"config: expected a KMeansConfig; got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module; got {type(model).__name__}")
    start = time.perf_counter()
    layers, skipped = _layers(model, config)
    bits = layer_bits(layers, config)
    plans = {
        name: cluster(layer.weight, bits[name], config.init, config.seed, config.max_iter)
        for name, layer in layers.items()
    }
    new = {
        name: shared_like(layer, plans[name].codebook, plans[name].indices, bits[name])
        for name, layer in layers.items()
    }
    rows = [_row(name, layers[name], bits[name], plans[name]) for name in layers]
    _swap_all_(model, layers, new)
    return ShareReport(
        method="kmeans",
        config=config.to_dict(),
        layers=rows,
        skipped=skipped,
        seconds=time.perf_counter() - start,
    )


def _layers(model: nn.Module, config: KMeansConfig) -> tuple[dict[str, nn.Module], dict[str, str]]:
    try:
        chosen = select_layers(model, config.targets, config.ignore)
    except PrunekitError:
        if config.targets is None and any(isinstance(m, SharedLayer) for m in model.modules()):
            raise PrunekitError(
                "model: its layers already share their weights (share_weights_ ran before); "
                "nothing left to share"
            ) from None
        raise
    for name, layer in chosen.items():
        check_shareable(name, layer)
    owners = _weight_owners(model)
    skipped = {
        name: f"weight tied to {', '.join(o for o in owners[id(layer.weight)] if o != name)}"
        for name, layer in chosen.items()
        if len(owners[id(layer.weight)]) > 1
    }
    for name, why in skipped.items():
        log.warning("not sharing %s: %s", name, why)
    layers = {n: m for n, m in chosen.items() if n not in skipped}
    if not layers:
        raise PrunekitError(
            f"no layer left to share: every selected layer's weight is tied to another module "
            f"({'; '.join(f'{n}: {w}' for n, w in skipped.items())})"
        )
    return layers, skipped


def layer_bits(layers: dict[str, nn.Module], config: KMeansConfig) -> dict[str, int]:
    """``{layer: bits}``: ``config.layer_bits``' first matching selector, else ``conv_bits``
    for convolutions when set, else ``bits``."""
    default = {name: config.bits_for(is_conv(layer)) for name, layer in layers.items()}
    return per_layer(layers, config.layer_bits, default, "layer_bits")


def _weight_owners(model: nn.Module) -> dict[int, list[str]]:
    """id(parameter) -> every module name holding it (a module reachable twice counts twice)."""
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        for p in module._parameters.values():
            if p is not None:
                owners.setdefault(id(p), []).append(name)
    return owners


@torch.no_grad()
def _row(name: str, layer: nn.Module, bits: int, plan: Codebook) -> LayerShare:
    w = layer.weight.detach().float()
    norm = float(torch.linalg.vector_norm(w))
    diff = float(torch.linalg.vector_norm(w - plan.decode().float()))
    return LayerShare(
        name=name,
        kind=type(layer).__name__,
        shape=tuple(w.shape),
        bits=bits,
        clusters=plan.clusters,
        zeros=int((plan.indices == 0).sum()),
        numel=w.numel(),
        error=diff / norm if norm else 0.0,
    )


def _swap_all_(model: nn.Module, layers: dict[str, nn.Module], new: dict[str, nn.Module]) -> None:
    with transaction(model):
        for name, layer in layers.items():
            swaps.swap_(model, name, new[name], SWAP_KIND, swap_args(layer, new[name].bits))
