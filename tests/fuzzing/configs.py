"""Hostile method configs: every registered method's config built from random field values
(sizes at the edges, wrong types, unknown fields), then — when it validates — applied to a tiny
model, which must then still run."""

from __future__ import annotations

import copy
import random
from typing import Any

import prunekit as pk
from tests.fuzzing.values import FLOATS, INTS, OTHERS, STRINGS

# Values that pass validation often enough for the method itself to meet them.
PLAUSIBLE: dict[str, list[Any]] = {
    "sparsity": [0.0, 0.1, 0.5, 0.9, 0.999, 0.9999999, None],
    "pattern": [
        "unstructured",
        "channel",
        "head",
        "2:4",
        "1:2",
        "4:8",
        "1:1000",
        "999:1000",
        "1:3",
        "7:8",
        "9" * 40 + ":" + "9" * 41,
    ],
    "scope": ["layer", "global"],
    "targets": [None, [], ["Linear"], ["net.1"], ["re:.*"], ["re:net\\.3"], ["Conv2d"], ["nope"]],
    "ignore": [[], ["net.1"], ["re:.*"], ["Linear"], ["re:("]],
    "layer_sparsity": [{}, {"net.1": 0.9}, {"re:.*": 0.5}, {"nope": 0.5}, {"net.3": 0.0}],
    "macs_reduction": [None, 1.0, 1.5, 2.0, 100.0, 1e9],
    "min_channels": [1, 2, 16, 32, 1000],
    "round_to": [1, 2, 3, 8, 64, 1000],
    "bits": [1, 2, 3, 4, 8, 9, 16],
    "conv_bits": [None, 1, 2, 8, 9],
    "group_size": [-1, 0, 1, 2, 3, 7, 16, 64, 65, 128, 2**31],
    "num_samples": [1, 2, 16, 2**31],
    "block_size": [1, 2, 3, 1000],
    "dampening": [1e-30, 0.01, 1.0, 1e30],
    "max_iter": [1, 2, 1000],
    "min_features": [0, 1, 64, 2**31],
    "owl_threshold": [1e-9, 5.0, 1e9],
    "owl_lambda": [0.0, 0.08, 0.49],
    "sensitivity_lambda": [0.0, 0.15, 0.49],
    "momentum": [1e-9, 0.01, 1.0],
    "activation_bits": [None, 8],
    "seed": [0, -1, 2**32, 2**63 - 1, 2**63, 2**64, -(2**63) - 1],
    "init": ["linear", "kmeans++", "random"],
    "temperature": [1e-9, 4.0, 1e9],
    "epochs": [1],
}
UNKNOWN = ["sparsity_", "method", "model_config", "__class__", "x" * 1000, ""]


def plan(rng: random.Random) -> tuple[str, str, dict[str, Any], str]:
    """``(kind, method, fields, detail)``: the fields of one hostile config."""
    methods = pk.methods()
    info = rng.choice(methods)
    names = list(info.config.model_fields)
    fields: dict[str, Any] = {}
    plausible = rng.random() < 0.5
    for _ in range(rng.choice([1, 1, 2, 3])):
        name = rng.choice(UNKNOWN) if rng.random() < 0.05 else rng.choice(names)
        if plausible and name in PLAUSIBLE:
            fields[name] = rng.choice(PLAUSIBLE[name])
        else:
            fields[name] = rng.choice(rng.choice([INTS, FLOATS, STRINGS, OTHERS]))
    kind = "config-plausible" if plausible else "config-hostile"
    shown = ", ".join(f"{k[:20]}={_short(v)}" for k, v in fields.items())
    return kind, info.name, fields, f"{info.config.__name__}({shown})"


def apply_(method: str, fields: dict[str, Any], model: Any, data: list, example: Any) -> None:
    """Build the config (pydantic validates it), then apply it to ``model`` in place; a distill
    config is only built (it needs a teacher and trains)."""
    info = next(m for m in pk.methods() if m.name == method)
    config = info.config(**copy.deepcopy(fields))  # the values are shared pool objects
    config.to_dict()
    if info.kind == "prune":
        pk.prune_(model, config, data=data, example_inputs=example)
    elif info.kind == "quantize":
        pk.quantize_(model, config, data=data)
    elif info.kind == "share":
        pk.share_weights_(model, config)
    elif info.kind == "factorize":
        pk.factorize_(model, config, data=data)


def _short(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 160:
        return "<huge int>"
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"
