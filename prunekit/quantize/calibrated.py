"""GPTQ over a model: each layer's input Hessian from calibration data, block by block.

As in prunekit's one-shot pruning (``prunekit/prune/oneshot.py``): a transformer's repeated
blocks are processed in order; the inputs of the first one are recorded once, each block's
layers are calibrated on them, quantized and swapped in, and the quantized block then computes
the inputs of the next, so later blocks see (and compensate) earlier blocks' errors. A model
without repeated blocks is one block. If anything fails, every swap is undone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from prunekit.calibrate import (
    Run,
    capture_block_inputs,
    collect_input_rows,
    find_blocks,
    next_call,
    run_block,
    runs_on_block,
    runs_on_model,
)
from prunekit.data.batches import take_samples
from prunekit.errors import PrunekitError
from prunekit.layout import canonical
from prunekit.memory import release_freed
from prunekit.quantize.config import GPTQConfig
from prunekit.quantize.gptq import gptq_quantize
from prunekit.quantize.layers import WEIGHT_ONLY_SWAP, WeightOnlyLinear, weight_only_args
from prunekit.quantize.report import LayerQuant, QuantizeReport, layer_row
from prunekit.quantize.select import choose_linears, layer_bits, swap_all_

log = logging.getLogger(__name__)


class Hessians:
    """Running ``XᵀX`` (float64) and row count of each layer's inputs, padding rows left out."""

    def __init__(self, layers: dict[str, nn.Module]) -> None:
        self.layers = layers
        self.xtx = {
            n: torch.zeros(k, k, dtype=torch.float64, device=m.weight.device)
            for n, m in layers.items()
            for k in [canonical(m, m.weight).shape[1]]
        }
        self.rows = dict.fromkeys(layers, 0)

    def observe(self, name: str, rows: torch.Tensor) -> None:
        r = rows.double()
        self.xtx[name].addmm_(r.t(), r)  # in place: no [K, K] temporary
        self.rows[name] += r.shape[0]

    def collect(self, runs: Iterable[Run]) -> None:
        collect_input_rows(self.layers, runs, self.observe)

    def take(self, name: str) -> torch.Tensor:
        """H = 2XᵀX/N, float32 ``[K, K]``; the float64 sum is dropped (one [K, K] float64
        fewer while the layer is solved and for the rest of the block)."""
        # Cast first, then scale in place: no float64 temporary of [K, K].
        return self.xtx.pop(name).float().mul_(2.0 / max(self.rows[name], 1))


def _blocks(
    model: nn.Module, layers: dict[str, nn.Module]
) -> list[tuple[str, nn.Module, dict[str, nn.Module]]] | None:
    """The repeated blocks from the first to the last holding a chosen layer, each with its
    chosen layers; None for a model without repeated blocks."""
    blocks = find_blocks(model)
    if blocks is None:
        return None
    out = [(b, m, {n: x for n, x in layers.items() if n.startswith(f"{b}.")}) for b, m in blocks]
    outside = [n for n in layers if not any(n in mine for _, _, mine in out)]
    if outside:
        raise PrunekitError(
            f"targets: {outside[:3]} lie outside the model's repeated blocks, which gptq "
            f"calibrates block by block; leave them out (ignore={outside[:3]}) or use rtn"
        )
    used = [i for i, (_, _, mine) in enumerate(out) if mine]
    return out[used[0] : used[-1] + 1]


def _solve(
    config: GPTQConfig,
    layers: dict[str, nn.Module],
    hessians: Hessians,
    bits: dict[str, int],
    explicit: bool,
    skipped: dict[str, str],
) -> dict[str, WeightOnlyLinear]:
    new: dict[str, WeightOnlyLinear] = {}
    for name, layer in layers.items():
        if hessians.rows[name] == 0:
            # e.g. nn.MultiheadAttention reads out_proj.weight without calling out_proj.
            if explicit:
                raise PrunekitError(
                    f"layer {name!r} was never called during calibration (its parent uses the "
                    f"weight directly), so its inputs cannot be measured; ignore=[{name!r}]"
                )
            skipped[name] = "never called in forward: inputs unknown"
            continue
        # What the last solve and the calibration pass freed (float32 weights, dequantized
        # blocks) lies in malloc's heap between tensors kept (codes, activations): hand it
        # back before this solve's transients, or the heap grows by most of a layer per layer.
        release_freed()
        codes, grid = gptq_quantize(
            canonical(layer, layer.weight.detach()),
            hessians.take(name),
            bits[name],
            config.group_size,
            config.symmetric,
            config.act_order,
            config.block_size,
            config.dampening,
        )
        new[name] = WeightOnlyLinear.from_codes(layer, codes, grid, config.symmetric)
    release_freed()
    return new


@torch.no_grad()
def gptq_(model: nn.Module, config: GPTQConfig, data: Iterable[Any] | None) -> QuantizeReport:
    """Quantize ``model`` in place with GPTQ; see the module docstring."""
    layers, skipped = choose_linears(model, config, blocks_only=True)
    bits = layer_bits(layers, config)
    assert data is not None, "quantize_ checks that data is given"
    # Read the samples once: a shuffling DataLoader would give every pass different ones.
    samples = list(take_samples(data, config.num_samples))
    if not samples:
        raise PrunekitError("data: got no calibration batches; pass at least one batch")
    blocks = _blocks(model, layers)
    explicit = config.targets is not None
    was_training = model.training
    model.eval()
    rows: list[LayerQuant] = []

    def quantize_group(mine: dict[str, nn.Module], runs: Iterable[Run]) -> None:
        hessians = Hessians(mine)
        hessians.collect(runs)
        new = _solve(config, mine, hessians, bits, explicit, skipped)
        rows.extend(layer_row(n, mine[n], m, m.bits, m.group_size) for n, m in new.items())
        args = {n: weight_only_args(m) for n, m in new.items()}
        swap_all_(model, dict(new), WEIGHT_ONLY_SWAP, args)

    try:
        if blocks is None:
            quantize_group(layers, runs_on_model(model, samples))
        else:
            calls = capture_block_inputs(model, blocks[0][1], samples, None)
            for name, block, mine in blocks:
                if mine:
                    quantize_group(mine, runs_on_block(block, calls))
                    log.info("gptq: quantized block %s", name)
                calls = [next_call(c, run_block(block, c)) for c in calls]
    finally:
        model.train(was_training)
    if not rows:
        raise PrunekitError(f"gptq: no layer was quantized ({skipped})")
    return QuantizeReport(
        method=config.method, config=config.to_dict(), layers=rows, skipped=skipped
    )
