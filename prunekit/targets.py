"""Pick the layers an operation applies to.

A selector is a class name (``"Linear"``), an exact module name (``"features.0"``) or a regular
expression over module names (``"re:^encoder\\..*\\.query$"``). ``targets=None`` means every
layer of the default kinds; ``ignore`` removes layers in the same forms.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeVar

import torch
from torch import nn

from prunekit.errors import PrunekitError, quote
from prunekit.layout import conv1d_type

V = TypeVar("V")  # a per-layer value: sparsity, bits

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_types() -> tuple[type[nn.Module], ...]:
    """Linear and conv layers, plus transformers' Conv1D (GPT-2's projections) when in use."""
    conv1d = conv1d_type()
    return PRUNABLE_TYPES if conv1d is None else (*PRUNABLE_TYPES, conv1d)


def matches(selector: str, name: str, module: nn.Module) -> bool:
    """Whether ``selector`` (an exact module name, a class name, or ``re:<regex>``) names it."""
    if selector.startswith("re:"):
        return re.search(selector[3:], name) is not None
    return selector == name or selector == type(module).__name__


def check_selectors(selectors: Sequence[str], what: str) -> None:
    """PrunekitError for a selector list that is a bare string or holds a bad regex."""
    if isinstance(selectors, str):
        raise PrunekitError(
            f"{what} must be a list of selectors; got the string {quote(selectors)}: "
            f"write [{quote(selectors)}]"
        )
    for s in selectors:
        if s.startswith("re:"):
            try:
                re.compile(s[3:])
            except re.error as e:
                raise PrunekitError(
                    f"{what}: {quote(s)} is not a valid regular expression ({e})"
                ) from None


def _has_weight(module: nn.Module) -> bool:
    """A ``weight`` parameter, or a weight computed from parameters by a layer that says so
    (``derived_weight``: the k-means shared layers gather theirs from a codebook)."""
    weight = getattr(module, "weight", None)
    if isinstance(weight, nn.Parameter):
        return True
    return getattr(module, "derived_weight", False) is True and isinstance(weight, torch.Tensor)


def select_layers(
    model: nn.Module,
    targets: Sequence[str] | None = None,
    ignore: Sequence[str] = (),
    kinds: tuple[type[nn.Module], ...] | None = None,
) -> dict[str, nn.Module]:
    """Return ``{module name: module}`` for the layers selected, in model order.

    Only modules of ``kinds`` (default: :func:`prunable_types`) with a ``weight`` parameter (or
    a ``derived_weight``) are candidates. Raises PrunekitError when
    a target selector matches nothing (a typo would otherwise silently prune nothing) or when no
    layer is left.
    """
    kinds = kinds or prunable_types()
    check_selectors(targets or [], "targets")
    check_selectors(ignore, "ignore")
    candidates = {
        name: m for name, m in model.named_modules() if isinstance(m, kinds) and _has_weight(m)
    }
    if targets is None:
        chosen = dict(candidates)
    else:
        chosen = {}
        for sel in targets:
            hits = {n: m for n, m in candidates.items() if matches(sel, n, m)}
            if not hits:
                raise PrunekitError(
                    f"targets: {quote(sel)} matches no prunable layer; prunable layers are: "
                    f"{_preview(candidates)}"
                )
            chosen.update(hits)
        chosen = {n: m for n, m in candidates.items() if n in chosen}
    for sel in ignore:
        chosen = {n: m for n, m in chosen.items() if not matches(sel, n, m)}
    if not chosen:
        kinds_txt = ", ".join(k.__name__ for k in kinds)
        raise PrunekitError(
            f"model has no prunable layer left ({kinds_txt}) after targets={list(targets or [])} "
            f"and ignore={list(ignore)}; check the selectors"
        )
    return chosen


def _preview(layers: dict[str, nn.Module], most: int = 12) -> str:
    names = [f"{n} ({type(m).__name__})" for n, m in layers.items()]
    more = f", … ({len(names) - most} more)" if len(names) > most else ""
    return ", ".join(names[:most]) + more if names else "none"


def per_layer(
    layers: dict[str, nn.Module], table: dict[str, V], default: dict[str, V], what: str
) -> dict[str, V]:
    """``{layer: value}``: the first selector of ``table`` (exact name, class name or
    ``re:<regex>``) matching a layer gives its value, ``default[layer]`` otherwise. A selector
    matching none of ``layers`` is an error: a typo would silently change nothing."""
    check_selectors(list(table), what)
    for selector in table:
        if not any(matches(selector, n, m) for n, m in layers.items()):
            raise PrunekitError(
                f"{what}: {quote(selector)} matches no layer it applies to; the layers are: "
                f"{_preview(layers)}"
            )
    out: dict[str, V] = {}
    for name, module in layers.items():
        hit = next((v for sel, v in table.items() if matches(sel, name, module)), None)
        out[name] = default[name] if hit is None else hit
    return out


def check_layer_bits(table: dict[str, int], low: int, high: int, why: str) -> dict[str, int]:
    """``table`` (a ``layer_bits`` field) unchanged, or a ValueError naming its first bad entry:
    a width outside ``low..high`` (what the stored format holds; ``why`` says so) or a selector
    that is no valid regex."""
    check_selectors(list(table), "layer_bits")
    for key, bits in table.items():
        if not low <= bits <= high:
            raise ValueError(
                f"layer_bits[{quote(key)}] must be in {low}..{high} ({why}); got {bits}: "
                f"use a width in {low}..{high}"
            )
    return table
