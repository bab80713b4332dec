"""Hostile recipes: the shipped YAML with bytes edited or values replaced, and texts made to
hurt a YAML reader (alias bombs, deep nesting, huge numbers and scalars, Python tags)."""

from __future__ import annotations

import random
from typing import Any

import yaml

from tests.fuzzing.values import FLOATS, INTS, OTHERS, STRINGS, nest

VERBS = [
    "prune", "finetune", "distill", "share", "factorize", "quantize", "export", "measure", "auto",
]  # fmt: skip
FIELDS = ["method", "sparsity", "pattern", "scope", "schedule", "epochs", "lr", "bits",
          "conv_bits", "group_size", "num_samples", "targets", "ignore", "layer_sparsity",
          "seed", "distill", "batch_sizes", "temperature", "alpha", "max_iter", "onnx",
          "min_features", "round_to", "min_channels", "macs_reduction", "steps", "x"]  # fmt: skip
METHODS = ["magnitude", "wanda", "sparsegpt", "taylor", "movement", "random", "bn-scale",
           "kmeans", "int8-dynamic", "int8-static", "rtn", "gptq", "qat", "kd", "nope"]  # fmt: skip
SPECIAL = ["2:4", "4:8", "0:4", "4:4", "1:1000000", "9" * 5000 + ":1", "channel", "head", "agp",
           "iterative", "oneshot", "0x" + "f" * 600, "1e400", ".nan", "-.inf", "~",
           "re:(", ["re:("], ["re:.*"], {"re:.*": 0.5}, {"x": 2.0}]  # fmt: skip
DOCUMENTS = ["42", "[]", "null", '"steps"', "---\nsteps: []\n---\nsteps: []\n",
             "a: &a {method: magnitude}\nsteps: [{prune: {<<: *a, sparsity: 0.5}}]",
             "steps: [{prune: &s {method: magnitude, x: *s}}]", "\ufeffsteps: 1",
             "steps: !!set {a, b}", "? [a, b]\n: 1\n", "steps: [{? [1]: 2}]"]  # fmt: skip
CHARS = ":-{}[]&*!|>%@`'\"#,?\t\n \x00\ufeff\u2028\ud800aZ09."
TAGS = ["!!python/object/apply:os.system ['true']", "!!python/name:os.system", "!!binary aGk=",
        "!!set {a, b}", "!!timestamp 2001-12-14", "!!omap [a: 1]", "!!float nan", "!!int 0x1f",
        "!!str", "!custom x", "!!python/tuple [1, 2]"]  # fmt: skip


def plan(texts: list[str], rng: random.Random) -> tuple[str, str, str]:
    """``(kind, text, detail)``: one hostile recipe text."""
    kind = rng.choices(["yaml-bytes", "yaml-field", "yaml-hostile"], [35, 40, 25])[0]
    base = rng.randrange(len(texts))
    if kind == "yaml-bytes":
        text, edits = texts[base], []
        for _ in range(rng.randint(1, 8)):
            at, char = rng.randrange(len(text) + 1), rng.choice(CHARS)
            action = rng.choice(["set", "insert", "delete"])
            edits.append((action, at, char))
            cut = at + (action != "insert")
            text = text[:at] + ("" if action == "delete" else char) + text[cut:]
        return kind, text, f"recipe {base}: chars {edits}"
    if kind == "yaml-field":
        data = yaml.safe_load(texts[base])
        what = _edit(rng, data)
        text = yaml.safe_dump(data, sort_keys=False, width=10**6, allow_unicode=True)
        return kind, text, f"recipe {base}: {what}"
    text, what = _hostile(rng)
    return kind, text, what


def _edit(rng: random.Random, data: Any) -> str:
    step = rng.choice(data["steps"])
    ((verb, fields),) = step.items()
    roll = rng.random()
    if roll < 0.1:
        value = _value(rng)
        data["steps"].append(value)
        return f"append step {_short(value)}"
    if roll < 0.2:
        new = rng.choice([*VERBS, "x", ""])
        step[new] = step.pop(verb)
        return f"verb {verb} -> {new!r}"
    if not isinstance(fields, dict) or roll < 0.3:
        value = _value(rng)
        step[verb] = value
        return f"{verb} fields = {_short(value)}"
    key = rng.choice([*fields, *FIELDS]) if fields else rng.choice(FIELDS)
    if rng.random() < 0.1 and key in fields:
        del fields[key]
        return f"{verb}: delete {key}"
    fields[key] = value = _value(rng)
    return f"{verb}.{key} = {_short(value)}"


def _value(rng: random.Random) -> Any:
    if rng.random() < 0.05:
        return nest(rng.choice([30, 31, 32, 33, 40]))  # around the reader's nesting limit
    # The deepest pool values are left out: the YAML writer recurses once per level.
    return rng.choice(rng.choice([INTS, FLOATS, STRINGS, OTHERS[:-2], SPECIAL, METHODS, VERBS]))


def _hostile(rng: random.Random) -> tuple[str, str]:
    shape = rng.randrange(9)
    if shape == 0:  # billion laughs
        depth, width = rng.randint(2, 12), rng.randint(2, 10)
        lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
        for i in range(1, depth):
            lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
        lines.append(f"steps: [{{prune: {{method: magnitude, targets: *a{depth - 1}}}}}]")
        return "\n".join(lines) + "\n", f"alias bomb depth {depth} width {width}"
    if shape == 1:  # deep flow nesting
        n = rng.choice([31, 32, 33, 100, 1000, 10_000, 100_000])
        return "steps: " + "[" * n + "]" * n + "\n", f"flow nesting {n}"
    if shape == 2:  # deep block nesting
        n = rng.choice([31, 33, 200, 2000])
        text = "steps:\n" + "".join("  " * i + f"- k{i}:\n" for i in range(n))
        return text, f"block nesting {n}"
    if shape == 3:  # huge scalar
        n = rng.choice([1000, (1 << 20) - 100, (1 << 20) + 1, 3 << 20])
        return f"steps: [{{prune: {{method: {'x' * n}}}}}]\n", f"scalar of {n} chars"
    if shape == 4:  # many steps
        n = rng.choice([100, 5000, 20_000])
        return "steps:\n" + "  - measure: {}\n" * n, f"{n} steps"
    if shape == 5:  # huge numbers
        digits = rng.choice([400, 4300, 4301, 10_000])
        number = rng.choice(
            ["1" * digits, "0x" + "f" * digits, "1e" + "9" * digits, "0o" + "7" * digits]
        )
        return (
            f"steps: [{{prune: {{method: magnitude, sparsity: {number}}}}}]\n",
            f"number {number[:12]}… ({digits} digits)",
        )
    if shape == 6:  # tags
        tag = rng.choice(TAGS)
        return f"steps: [{{prune: {{method: magnitude, sparsity: {tag}}}}}]\n", f"tag {tag}"
    if shape == 7:  # not a mapping, several documents, merge keys
        text = rng.choice(DOCUMENTS)
        return text, f"document {text[:40]!r}"
    n = rng.choice([10, 1000, 100_000])  # many keys in one step
    keys = ", ".join(f"k{i}: {i}" for i in range(n))
    return f"steps: [{{prune: {{method: magnitude, {keys}}}}}]\n", f"{n} unknown fields"


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 160 else "<huge int>"
    return text if len(text) <= 60 else text[:59] + "…"
