"""Hostile replacement values: sizes at every edge, wrong types, deep nesting, long strings, and
raw JSON text no JSON value can stand for (integers over Python's 4,300-digit limit, nesting at
the parser's recursion limit)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

HUGE = 10**400


@dataclass(frozen=True)
class Raw:
    """JSON text written into the file as it is, where a value would go."""

    text: str

    def __repr__(self) -> str:
        return (
            f"raw {self.text[:24]!r}{'…' if len(self.text) > 24 else ''} ({len(self.text)} chars)"
        )


def nest(depth: int) -> list:
    """``[[[…]]]`` ``depth`` levels deep."""
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


INTS = [0, 1, -1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 65, 255, 256, 257, 65535, 65536,
        2**31 - 1, 2**31, 2**32, 2**40, 2**48, 2**48 + 1, 2**53 + 1, 2**63 - 1, 2**63,
        -(2**63) - 1, 2**64, 10**30, -(10**30), HUGE, -HUGE]  # fmt: skip
FLOATS = [0.0, -0.0, 0.5, 0.999999, 1.0, 1.5, 4.0, 1e-308, 5e-324, 1e308, -1e308, 2.0**63,
          math.nan, math.inf, -math.inf]  # fmt: skip
STRINGS = ["", " ", "x", "0", "4", "-1", "1e400", "true", "null", "NaN", ".", "..", "../x",
           "/etc/passwd", "a/b", "a\\b", "\x00", "\ud800", "\u202e", "\n", "é" * 1000,
           "x" * 100_000, "forward", "__class__", "__init__", "_parameters", "weight", "bias",
           "re:(", "re:.*", "py:evil.py:make", "Linear", "Conv2d"]  # fmt: skip
OTHERS = [None, True, False, [], {}, [0], [-1], [1], [0.5], ["x"], [None], [[]], [2**40, 2**40],
          [1 << 20], [2**31, 2**31, 2**31], [0] * 100_000, list(range(17)), {"a": 1}, {"": {}},
          {"bits": 65536}, {"weight": [2**31, 2**31]}, nest(10), nest(100), nest(400)]  # fmt: skip


def raw_values(rng: random.Random) -> Raw:
    """JSON text: too many digits, nesting near or past the parser's limit, bare NaN."""
    depth = rng.choice([rng.randint(980, 999), 1000, 5000, 100_000])
    return rng.choice(
        [
            Raw("1" + "0" * rng.choice([4299, 4300, 5000, 100_000])),
            Raw("-" + "9" * 4400),
            Raw("1e99999"),
            Raw("-1e99999"),
            Raw("NaN"),
            Raw("[" * depth + "]" * depth),
            Raw('{"a":' * depth + "0" + "}" * depth),
            Raw('"\\ud800\\udfff\\u0000"'),
        ]
    )


def hostile(rng: random.Random, extra: list[Any] = ()) -> Any:  # type: ignore[assignment]
    """One value from the pools (``extra``: values that matter to the thing mutated)."""
    pool = rng.choice([INTS, INTS, FLOATS, STRINGS, OTHERS, OTHERS, list(extra) or INTS])
    return rng.choice(pool)


def tweak(rng: random.Random, old: Any) -> Any:
    """A value close to ``old``: one off, doubled, negated, cut short, one item dropped."""
    if isinstance(old, bool):
        return not old
    if isinstance(old, int):
        return rng.choice([old + 1, old - 1, old * 2, old // 2, -old, old + 2**32, 0, old << 40])
    if isinstance(old, float):
        return rng.choice([old * 2, -old, old + 1e-9, math.nan, old * 1e300])
    if isinstance(old, str):
        return rng.choice([old + "x", old[:-1], old.upper(), old * 2, old + "\x00", old[::-1]])
    if isinstance(old, list) and old:
        i = rng.randrange(len(old))
        return rng.choice([old[:i] + old[i + 1 :], [*old, old[i]], old[::-1], [*old, *old]])
    if isinstance(old, dict) and old:
        key = rng.choice(list(old))
        return {k: v for k, v in old.items() if k != key}
    return hostile(rng)
