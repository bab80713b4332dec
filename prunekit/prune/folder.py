"""Prune a Hugging Face model folder larger than memory: one block in memory at a time.

The model is built on the meta device (shapes, no storage). The weights outside the repeated
blocks (embeddings, final norm, LM head) are read from the folder's safetensors files; the
calibration inputs of block 0 are recorded; then each block in turn is read (safetensors reads
one tensor at a time), calibrated, pruned, run to give the next block its inputs, written to
the output folder and dropped back to the meta device. Memory holds the outside weights, one
block and its working set (:mod:`prunekit.memory`), whatever the number of blocks.

The output is a model folder like the input (config and tokenizer files copied, weights in one
safetensors file per block plus one for the rest, with an index) that ``from_pretrained`` and
``hf:PATH`` open; it appears complete or not at all, and the source folder is only read.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.atomic import staged_dir
from prunekit.calibrate import (
    capture_block_inputs,
    find_blocks,
    move_call,
    next_call,
    on_device,
    resolve_device,
    run_block,
    runs_on_block,
)
from prunekit.data.batches import take_samples
from prunekit.errors import PrunekitError
from prunekit.memory import check_fits, release_freed
from prunekit.prune.budget import calibrated_need
from prunekit.prune.methods.base import CalibrationSolver
from prunekit.prune.methods.calibrated import CalibratedConfig
from prunekit.prune.oneshot import _calibrate, _solve_group
from prunekit.prune.report import LayerSparsity, PruneReport
from prunekit.registry import method_for_config
from prunekit.targets import select_layers

log = logging.getLogger(__name__)

__all__ = ["prune_folder"]

INDEX = "model.safetensors.index.json"


def _weight_files(src: Path) -> dict[str, Path]:
    """Each tensor name in the folder's checkpoint → the safetensors file holding it."""
    index = src / INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: src / file for name, file in weight_map.items()}
    single = src / "model.safetensors"
    if not single.is_file():
        raise PrunekitError(
            f"src: {str(src)!r} has no model.safetensors or {INDEX}; block-wise pruning reads "
            f"safetensors folders (save the model with save_pretrained(safe_serialization=True))"
        )
    from safetensors import safe_open

    with safe_open(single, framework="pt") as f:
        return dict.fromkeys(f.keys(), single)


class _Reader:
    """Reads of single tensors from the checkpoint's files."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def get(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        # Opened per read: safe_open maps the file, and the pages a read touches count as this
        # process's resident memory until the map is closed; kept open, reading every block
        # would leave the whole checkpoint resident.
        with safe_open(self.files[name], framework="pt") as f:
            return f.get_tensor(name)


def _skeleton(src: Path) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The model built on the meta device (shapes, no storage), and the non-persistent buffers
    (rotary frequencies…, not in the checkpoint) of a one-block, tiny-vocabulary CPU copy."""
    from prunekit.models.hf import _config, _config_dtype, _folder, transformers_module

    transformers = transformers_module()
    config = _config(transformers, _folder(src))
    dtype = _config_dtype(config) or torch.float32
    auto = transformers.AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(config, dtype=dtype)
    small = config.__class__.from_dict({**config.to_dict(), "num_hidden_layers": 1})
    small.vocab_size = 8
    donor = auto.from_config(small, dtype=dtype)
    return model.eval(), dict(donor.named_buffers())


def _materialize(
    module: nn.Module, prefix: str, reader: _Reader, donor: dict[str, Any], skip: str | None = None
) -> None:
    """Give ``module``'s meta tensors storage (names under ``skip`` left alone): checkpoint
    tensors by name, other buffers from the donor (matched with block indices set to 0)."""
    named = list(module.named_parameters()) + list(module.named_buffers())
    for name, t in named:
        full = f"{prefix}{name}"
        if skip is not None and full.startswith(skip):
            continue
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        if full in reader.files:
            value = reader.get(full).to(t.dtype)
        elif not t.is_meta:
            continue
        elif leaf in owner._buffers and _generic(full) in donor:
            value = donor[_generic(full)]
        else:
            raise PrunekitError(
                f"src: tensor {full!r} is not in the checkpoint; the folder's weights do not "
                f"match its config.json"
            )
        if leaf in owner._parameters:
            owner._parameters[leaf] = nn.Parameter(value, requires_grad=False)
        else:
            owner._buffers[leaf] = value


def _drop_outside(model: nn.Module, prefix: str) -> None:
    """Put the parameters outside the blocks (under ``prefix``) back on the meta device."""
    for name, module in model.named_modules():
        if f"{name}.".startswith(prefix) or name.startswith(prefix):
            continue
        for leaf, p in list(module._parameters.items()):
            if p is not None and not p.is_meta:
                module._parameters[leaf] = nn.Parameter(p.to("meta"), requires_grad=False)


def _generic(name: str) -> str:
    """A tensor name with its block index set to 0 (how the one-block donor names it)."""
    parts = name.split(".")
    return ".".join("0" if p.isdigit() else p for p in parts)


@torch.no_grad()
def prune_folder(
    src: str | Path, dst: str | Path, config: CalibratedConfig, data: Iterable[Any]
) -> PruneReport:
    """Prune the Hugging Face model folder ``src`` with a calibration-based method (Wanda,
    SparseGPT) one block at a time, writing the result as a model folder ``dst``.

    Peak memory: the weights outside the blocks, one block and its working set; checked
    before the first block is read (a PrunekitError says how much is needed and what to
    change). Returns the :class:`PruneReport` over the pruned layers."""
    start = time.perf_counter()
    src, dst = Path(src), Path(dst)
    if not isinstance(config, CalibratedConfig):
        raise TypeError(
            f"config: block-wise pruning takes a calibration-based config (WandaConfig, "
            f"SparseGPTConfig); got {type(config).__name__}"
        )
    if config.allocation != "uniform" or config.layer_sparsity:
        raise PrunekitError(
            "allocation/layer_sparsity: block-wise pruning gives every layer the same sparsity "
            "(it never holds all blocks to compare them); use allocation='uniform' and no "
            "layer_sparsity, or prune the loaded model with prunekit.prune_"
        )
    info = method_for_config(config)
    samples = list(take_samples(data, config.num_samples))
    if not samples:
        raise PrunekitError("data: got no calibration batches; pass at least one batch")
    files = _weight_files(src)
    reader = _Reader(files)
    model, donor = _skeleton(src)
    blocks = find_blocks(model)
    if blocks is None:
        raise PrunekitError(f"src: {str(src)!r} has no repeated blocks to load one at a time")
    prefix = blocks[0][0].rsplit(".", 1)[0] + "."
    solver: CalibrationSolver = info.impl(config)
    device = resolve_device(config.device)

    # Checked on the skeleton, before any weight is read.
    held = sum(
        t.numel() * t.element_size()
        for n, t in model.named_parameters()
        if not n.startswith(prefix) or n.startswith(f"{blocks[0][0]}.")
    )
    # targets/ignore name layers as in the whole model; only those inside the blocks are pruned.
    chosen = select_layers(model, config.targets, config.ignore)
    per_block = [{n: m for n, m in chosen.items() if n.startswith(f"{b}.")} for b, _ in blocks]
    if not any(per_block):
        raise PrunekitError("targets: no prunable layer inside the model's repeated blocks")
    need = calibrated_need(solver, [layers for layers in per_block if layers], samples)
    check_fits(replace(need, weights=held), f"{info.name} block by block")

    _materialize(model, "", reader, donor, skip=prefix)
    model.tie_weights()  # a tied LM head shares the embedding just read
    calls = capture_block_inputs(model, blocks[0][1], samples, None)
    if device is not None:
        calls = [move_call(c, device) for c in calls]
    # Only block 0's inputs needed the embeddings; the LM head never runs. Unchanged, they are
    # copied from the source at the end instead of being held while the blocks are pruned.
    _drop_outside(model, prefix)
    release_freed()

    rows: list[LayerSparsity] = []
    sparsity = config.target_sparsity
    with staged_dir(dst) as out:
        weight_map: dict[str, str] = {}
        for i, (name, block) in enumerate(blocks):
            _materialize(block, f"{name}.", reader, donor)
            layers = per_block[i]
            with on_device(block, device):
                stats = _calibrate(solver, layers, runs_on_block(block, calls))
                _solve_group(solver, layers, stats, dict.fromkeys(layers, sparsity), device)
                calls = [next_call(c, run_block(block, c)) for c in calls]
            rows.extend(PruneReport.from_layers(info.name, {}, layers, 0.0).layers)
            file = f"model-block-{i:05d}.safetensors"
            state = {f"{name}.{n}": t for n, t in block.state_dict().items()}
            weight_map.update(_write(out / file, state, files))
            block.to_empty(device="meta")  # written out: its memory goes back
            del state
            release_freed()
            log.info("%s: pruned block %s of %s", info.name, name, src)
        rest = {n: reader.get(n) for n in files if not n.startswith(prefix)}
        weight_map.update(_write(out / "model-rest.safetensors", rest, files))
        size = sum((out / f).stat().st_size for f in set(weight_map.values()))
        index = {"metadata": {"total_size": size}, "weight_map": dict(sorted(weight_map.items()))}
        (out / INDEX).write_text(json.dumps(index, indent=2))
        for f in src.iterdir():
            if f.is_file() and not f.name.endswith(".safetensors") and f.name != INDEX:
                shutil.copy2(f, out / f.name)
    return PruneReport(
        method=info.name,
        config=config.to_dict(),
        layers=rows,
        seconds=time.perf_counter() - start,
    )


def _write(path: Path, tensors: dict[str, torch.Tensor], keep: dict[str, Path]) -> dict[str, str]:
    """Save the tensors the source checkpoint has (a tied LM head is not saved twice,
    non-persistent buffers not at all); returns their names → the file's name."""
    from safetensors.torch import save_file

    kept = {n: t.contiguous() for n, t in tensors.items() if n in keep}
    save_file(kept, str(path), metadata={"format": "pt"})
    return dict.fromkeys(kept, path.name)
