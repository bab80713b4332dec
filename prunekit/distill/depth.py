"""Shallower students: a transformer keeping some of its teacher's blocks, weights and all.

DistilBERT (Sanh et al. 2019) initialised its 6-layer student from BERT-base's 12 layers by
"taking one layer out of two"; the extraction script released with it kept layers
0, 2, 4, 7, 9, 11, i.e. evenly spaced from the first to the last. ``num_layers=k`` reproduces
exactly that spacing (``round(i·(n−1)/(k−1))``): the first block reads the embeddings the
teacher's first block was trained on and the last one writes the states the head was trained on,
so the student starts closest to the teacher. ``every=s`` keeps blocks 0, s, 2s, … and ``keep``
any increasing list.

Applying is one swap (``prunekit.surgery.depth``): the repeated-block list (``encoder.layer``,
``transformer.h``, ``model.layers``…, found by ``prunekit.calibrate.find_blocks``) is replaced by a
list of the kept blocks. A Hugging Face model's config gets the new layer count (and per-layer
entries such as ``layer_types`` keep the kept layers' values), checked first by building the
architecture from the new config on the meta device, so ``save``/``from_pretrained`` rebuild exactly
this model; each kept block's ``layer_idx`` (the KV-cache slot) is renumbered. Every check runs
before the model is touched.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunekit.calibrate import find_blocks
from prunekit.errors import PrunekitError
from prunekit.measure.counting import count_params
from prunekit.models.hf import is_hf_model
from prunekit.report import Report
from prunekit.surgery.depth import block_renamer, drop_blocks_
from prunekit.surgery.transaction import transaction

__all__ = ["DepthReport", "depth_plan", "shrink_depth_"]

log = logging.getLogger(__name__)

# Where Hugging Face configs keep the block count (GPT-2 ``n_layer``, DistilBERT ``n_layers``,
# T5 ``num_layers``, Whisper ``encoder_layers``…); the one whose rebuilt architecture matches
# the shallow model is updated.
LAYER_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "encoder_layers",
              "decoder_layers", "num_decoder_layers")  # fmt: skip
# Config lists with one entry per layer (Qwen2/Gemma ``layer_types``, SmolLM3 ``no_rope_layers``).
PER_LAYER_KEYS = ("layer_types", "no_rope_layers")


@dataclass(kw_only=True)
class DepthReport(Report):
    """What ``shrink_depth_`` did: the block list it shortened, the kept (original) indices,
    and parameter counts before and after (a tied weight counts once). ``config`` holds the
    Hugging Face config fields changed to match (empty for other models)."""

    method: str = "shrink-depth"
    blocks: str
    num_layers_before: int
    kept: list[int]
    params_before: int
    params_after: int

    computed = ("num_layers_after",)

    @property
    def num_layers_after(self) -> int:
        return len(self.kept)

    def title(self) -> str:
        return (
            f"{self.blocks}: {self.num_layers_before} → {self.num_layers_after} blocks "
            f"(kept {self.kept}); params {self.params_before:,} → {self.params_after:,}"
        )


def depth_plan(
    num_blocks: int,
    keep: list[int] | None = None,
    *,
    every: int | None = None,
    num_layers: int | None = None,
) -> list[int]:
    """The block indices to keep, increasing, out of ``num_blocks``: exactly one of ``keep``
    (checked), ``every`` (0, every, 2·every, …) or ``num_layers`` (evenly spaced, first and last
    included; ``num_layers=1`` keeps block 0)."""
    given = [
        n
        for n, v in (("keep", keep), ("every", every), ("num_layers", num_layers))
        if v is not None
    ]
    if len(given) != 1:
        raise PrunekitError(
            f"shrink_depth_: pass exactly one of keep, every or num_layers; got "
            f"{', '.join(given) if given else 'none'}"
        )
    if keep is not None:
        return _checked_keep(keep, num_blocks)
    if every is not None:
        if not _is_int(every) or every < 1:
            raise PrunekitError(f"every must be a whole number ≥ 1; got {every!r}")
        return list(range(0, num_blocks, every))
    if not _is_int(num_layers) or not 1 <= num_layers <= num_blocks:
        raise PrunekitError(
            f"num_layers must be a whole number in [1, {num_blocks}] (the model has {num_blocks} "
            f"blocks); got {num_layers!r}"
        )
    if num_layers == 1:
        return [0]
    # i·(n−1)/(k−1) rounded half up, in integers: no float ties resolved to even.
    span, gaps = num_blocks - 1, num_layers - 1
    return [(2 * i * span + gaps) // (2 * gaps) for i in range(num_layers)]


def shrink_depth_(
    model: nn.Module,
    keep: list[int] | None = None,
    *,
    every: int | None = None,
    num_layers: int | None = None,
) -> DepthReport:
    """Keep only some of ``model``'s repeated transformer blocks, in place; see the module doc.

    keep: block indices (into the block list, increasing, no duplicates);
    every: keep blocks 0, every, 2·every, …; num_layers: keep that many, evenly spaced with the
    first and last included (DistilBERT's choice). Exactly one of the three.
    Raises PrunekitError, leaving the model unchanged, when the model has no repeated blocks,
    the indices are invalid, or a Hugging Face config cannot express the shallower model.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module; got {type(model).__name__}")
    start = time.perf_counter()
    blocks = find_blocks(model)
    if blocks is None:
        raise PrunekitError(
            f"model: {type(model).__name__} has no list of repeated blocks (an nn.ModuleList of "
            f"two or more modules of one class holding Linear layers); shrink_depth_ works on "
            f"transformers such as BERT, GPT-2 or LLaMA"
        )
    list_name = blocks[0][0].rpartition(".")[0]
    if not list_name:
        raise PrunekitError("model: the model itself is the block list; pass the module using it")
    n = len(blocks)
    kept = depth_plan(n, keep, every=every, num_layers=num_layers)
    edits = _config_edits(model, list_name, n, kept) if is_hf_model(model) else {}
    params_before = count_params(model)
    with transaction(model):
        drop_blocks_(model, list_name, kept, edits)
    report = DepthReport(
        config=edits,
        seconds=time.perf_counter() - start,
        blocks=list_name,
        num_layers_before=n,
        kept=kept,
        params_before=params_before,
        params_after=count_params(model),
    )
    log.info("shrink_depth_: %s", report)
    return report


# --------------------------------------------------------------------------- checks


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_keep(keep: Any, n: int) -> list[int]:
    if not isinstance(keep, list | tuple) or not all(_is_int(i) for i in keep):
        raise PrunekitError(f"keep must be a list of block indices (ints); got {keep!r}")
    if not keep:
        raise PrunekitError("keep must name at least one block; got []")
    bad = [i for i in keep if not 0 <= i < n]
    if bad:
        raise PrunekitError(
            f"keep: indices {bad} are out of range; the model has {n} blocks (0 to {n - 1})"
        )
    if len(set(keep)) != len(keep):
        raise PrunekitError(f"keep must not repeat a block; got {list(keep)}")
    if list(keep) != sorted(keep):
        raise PrunekitError(f"keep must list the blocks in increasing order; got {list(keep)}")
    return list(keep)


def _config_edits(model: nn.Module, list_name: str, n: int, kept: list[int]) -> dict[str, Any]:
    """The config attributes to set: the layer count under the key that rebuilds the shallow
    model's tensors (checked by building the architecture on the meta device), and the per-layer
    lists cut to the kept layers."""
    config = model.config  # type: ignore[attr-defined]
    explicit = config.to_dict()
    if getattr(config, "scale_attn_by_inverse_layer_idx", False) and kept != list(range(len(kept))):
        raise PrunekitError(
            f"keep: {type(model).__name__} scales attention by 1/(layer index + 1) "
            f"(config.scale_attn_by_inverse_layer_idx), so its blocks cannot move to new "
            f"positions; keep a prefix such as {list(range(len(kept)))}"
        )
    per_layer = {
        key: [explicit[key][i] for i in kept]
        for key in PER_LAYER_KEYS
        if isinstance(explicit.get(key), list) and len(explicit[key]) == n
    }
    # Config against config (the dense architecture it builds now, blocks renamed): a model
    # already pruned structurally has narrower tensors than either, in the same places.
    dense = _built_shapes(type(model), config)
    rename = block_renamer(list_name, kept)
    want = None
    if dense is not None:
        want = {rename(k): v for k, v in dense.items() if rename(k) is not None}
    tried = []
    for key in LAYER_KEYS:
        if explicit.get(key) != n:
            continue
        tried.append(key)
        edits = {key: len(kept), **per_layer}
        trial = copy.deepcopy(config)
        for k, v in edits.items():
            setattr(trial, k, v)
        if want is not None and _built_shapes(type(model), trial) == want:
            return edits
    if not tried:
        raise PrunekitError(
            f"model: {type(model).__name__}'s config has no layer count equal to the {n} blocks "
            f"of {list_name} (looked for {', '.join(LAYER_KEYS)}); shrink_depth_ needs a config "
            f"that sets the number of these blocks"
        )
    raise PrunekitError(
        f"keep: {type(model).__name__} built from its config with {len(kept)} blocks (via "
        f"{', '.join(tried)}) has other tensors than blocks {kept} of {list_name}; its blocks "
        f"differ (e.g. T5's first block alone holds the position bias: keep block 0)"
    )


def _built_shapes(cls: type, config: Any) -> dict[str, tuple] | None:
    try:
        with torch.device("meta"):
            built = cls(config)
    except Exception:  # a config the architecture refuses: not a match
        return None
    return {k: tuple(v.shape) for k, v in built.state_dict().items()}
