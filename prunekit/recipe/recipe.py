"""A recipe: an ordered list of validated steps, read from YAML and written back resolved.

    steps:
      - prune: {method: magnitude, sparsity: 0.9, scope: global}
      - finetune: {epochs: 2, lr: 0.001, distill: true}
      - share: {method: kmeans, bits: 5}
      - quantize: {method: int8-dynamic}
      - measure: {}

Every step is validated when the recipe is built (see :mod:`prunekit.recipe.steps`), so a
recipe object always describes a run that can start. ``to_yaml`` writes it resolved: every
default filled in, which is what a run records and what its fingerprint covers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from prunekit.errors import quote
from prunekit.recipe.bounded_yaml import load_yaml, read_text
from prunekit.recipe.steps import RecipeError, Step, parse_step

YAML_SUFFIXES = (".yaml", ".yml")


class Recipe:
    """Validated steps, in order. Build one with :meth:`from_yaml`, :meth:`from_dict` or from
    a list of ``{verb: fields}`` mappings; any error raises :class:`RecipeError`."""

    def __init__(self, steps: list[Mapping[str, Any]], base: Path | None = None) -> None:
        if not isinstance(steps, list) or not steps:
            raise RecipeError(
                f"steps: expected a non-empty list of steps such as `- prune: {{method: "
                f"magnitude}}`; got {quote(steps)}",
                field="steps",
            )
        self.steps: tuple[Step, ...] = tuple(parse_step(i, s, base) for i, s in enumerate(steps, 1))

    @classmethod
    def from_dict(cls, data: Any, base: Path | None = None) -> Recipe:
        """From ``{"steps": [...]}``; any other top-level key is an error. Relative file paths
        (a ``distill`` step's ``more_text``) are read from ``base`` (None: the working
        directory)."""
        if not isinstance(data, dict):
            raise RecipeError(
                f"a recipe is a mapping with one key, steps; got {type(data).__name__}"
            )
        extra = [k for k in data if k != "steps"]
        if extra:
            raise RecipeError(
                f"unknown top-level key {quote(extra[0])}; a recipe has one key, steps",
                field=extra[0],
            )
        return cls(data.get("steps"), base)

    @classmethod
    def from_yaml(cls, source: str | Path) -> Recipe:
        """From a YAML file (a ``Path``, or a string naming a ``.yaml``/``.yml`` file) or from
        YAML text; read as ``yaml.safe_load`` does, within the bounds of
        :mod:`prunekit.recipe.bounded_yaml` (1 MiB, aliases expanding to at most 10,000
        values). Relative file paths in a file are read from its folder, in text from the
        working directory."""
        base = None
        if isinstance(source, Path) or (
            "\n" not in source and source.strip().endswith(YAML_SUFFIXES)
        ):
            path = Path(source)
            source = read_text(path)
            base = path.parent.resolve()
        return cls.from_dict(load_yaml(source), base)

    def to_dict(self) -> dict[str, Any]:
        """``{"steps": [{verb: fields}, ...]}`` with every default filled in."""
        return {"steps": [s.to_dict() for s in self.steps]}

    def to_yaml(self) -> str:
        """The resolved recipe as YAML, one step per line; ``from_yaml`` reads it back equal."""
        lines = ["steps:"]
        for step in self.steps:
            flow = yaml.safe_dump(
                step.to_dict(), default_flow_style=True, sort_keys=False, width=10**6
            )
            lines.append(f"  - {flow.strip()}")
        return "\n".join(lines) + "\n"

    def digest(self) -> str:
        """SHA-256 of the resolved recipe: equal for recipes that run the same steps."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def with_overrides(self, overrides: Mapping[str, Any]) -> Recipe:
        """A copy with fields changed: ``{"2.epochs": 1}`` sets step 2's ``epochs``; the result
        is validated like any recipe (e.g. for quick runs of a shipped recipe)."""
        steps = [s.to_dict() for s in self.steps]
        for key, value in overrides.items():
            number, sep, name = str(key).partition(".")
            if not sep or not number.isdecimal() or not name:
                raise RecipeError(f"override {quote(key)}: expected STEP.FIELD such as 2.epochs")
            # int() refuses numbers over 4,300 digits; any that long is out of range anyway.
            index = int(number) if len(number) <= 9 else 0
            if not 1 <= index <= len(steps):
                raise RecipeError(
                    f"override {quote(key)}: the recipe has steps 1..{len(steps)}; got step "
                    f"{quote(number)}"
                )
            ((_, fields),) = steps[index - 1].items()
            fields[name] = value
        return Recipe(steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Recipe) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Recipe({', '.join(s.label for s in self.steps)})"
