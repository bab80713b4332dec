"""Dropping whole repeated blocks (a shallower transformer): the edit itself.

Which blocks to keep and how a Hugging Face config expresses the result are planned and checked
by ``prunekit.distill.depth`` before this runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from prunekit.surgery.shrink import STRUCTURE_ATTR
from prunekit.surgery.swaps import SWAPS_ATTR


def drop_blocks_(
    model: nn.Module, list_name: str, kept: list[int], config_edits: dict[str, Any]
) -> None:
    """Replace the block list ``list_name`` by its blocks ``kept`` (original indices, in order):
    each kept block's ``layer_idx`` (its KV-cache slot) is renumbered, ``config_edits`` are set
    on ``model.config``, and the structure and swap records follow the blocks' new names."""
    parent_name, _, attr = list_name.rpartition(".")
    parent = model.get_submodule(parent_name)
    old = getattr(parent, attr)
    for new_index, old_index in enumerate(kept):
        for module in old[old_index].modules():
            if getattr(module, "layer_idx", None) == old_index:
                module.layer_idx = new_index
    setattr(parent, attr, nn.ModuleList([old[i] for i in kept]))
    for key, value in config_edits.items():
        setattr(model.config, key, value)  # type: ignore[attr-defined]
    _rename_records(model, list_name, kept)


def block_renamer(list_name: str, kept: list[int]) -> Callable[[str], str | None]:
    """Maps a module or tensor name to its name in the shallow model; None for one inside a
    dropped block."""
    new_index = {old: new for new, old in enumerate(kept)}
    prefix = f"{list_name}."

    def rename(name: str) -> str | None:
        if not name.startswith(prefix):
            return name
        index, _, rest = name[len(prefix) :].partition(".")
        if not index.isdigit() or int(index) not in new_index:
            return None
        return f"{prefix}{new_index[int(index)]}" + (f".{rest}" if rest else "")

    return rename


def _rename_records(model: nn.Module, list_name: str, kept: list[int]) -> None:
    # Structured pruning and layer swaps log module names that save/load replay; blocks moved.
    rename = block_renamer(list_name, kept)
    for key in (STRUCTURE_ATTR, SWAPS_ATTR):
        record = model.__dict__.get(key)
        if record is None:
            continue
        moved = []
        for entry in record:
            name = rename(entry["module"])
            if name is not None:
                moved.append({**entry, "module": name})
        model.__dict__[key] = moved
