"""Reading recipe YAML with bounds on what a small file may ask for.

A recipe is a few hundred YAML nodes. Aliases let a 250-byte file expand to billions ("billion
laughs": each level repeats the one before nine times), and unbounded nesting overflows the
parser's recursion; both are refused while the document is composed, before anything is built.
Files are size-checked before they are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from prunekit.errors import quote
from prunekit.recipe.steps import RecipeError

MAX_BYTES = 1 << 20
MAX_NODES = 10_000  # after expanding aliases; the shipped recipes have under 100
MAX_DEPTH = 32


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (plain data only) that counts nodes as aliases expand them and
    limits nesting; an alias adds the whole size of the node it repeats."""

    def __init__(self, stream: str, what: str) -> None:
        super().__init__(stream)
        self.what = what
        self._sizes: dict[int, int] = {}  # id(node) -> its size with aliases expanded
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            anchor = self.peek_event().anchor
            target = self.anchors.get(anchor)
            if target is not None:
                if id(target) not in self._sizes:
                    raise RecipeError(
                        f"{self.what}: alias {quote('*' + anchor)} repeats a node that contains "
                        f"it; a recipe cannot refer to itself: write the value out"
                    )
                self._count(self._sizes[id(target)])
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise RecipeError(
                f"{self.what}: nested more than {MAX_DEPTH} levels deep; a recipe is a list of "
                f"steps with their fields — is this the right file?"
            )
        self._count(1)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._sizes[id(node)] = 1 + sum(self._sizes[id(child)] for child in _children(node))
        return node

    def _count(self, nodes: int) -> None:
        self._nodes += nodes
        if self._nodes > MAX_NODES:
            raise RecipeError(
                f"{self.what}: more than {MAX_NODES:,} YAML values (counting each value an alias "
                f"*name repeats); a recipe needs a few hundred: write the steps out, without "
                f"nested aliases"
            )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load_yaml(text: str, what: str = "recipe") -> Any:
    """Plain data from YAML ``text`` (as ``yaml.safe_load``), within the bounds above;
    :class:`RecipeError` naming ``what`` for text that is not YAML or asks for too much."""
    if len(text) > MAX_BYTES:
        raise RecipeError(f"{what}: {len(text):,} characters; recipes are at most {_mib()}")
    try:
        # The reader checks the characters (NUL, lone surrogates) in the constructor already.
        loader = _BoundedLoader(text, what)
    except yaml.YAMLError as err:
        raise RecipeError(f"{what}: not valid YAML: {_clip(str(err))}") from None
    try:
        return loader.get_single_data()
    except yaml.YAMLError as err:
        # PyYAML quotes the input (a tag, the line around the mark): kept short.
        raise RecipeError(f"{what}: not valid YAML: {_clip(str(err))}") from None
    except RecipeError:
        raise
    except (ValueError, RecursionError) as err:
        # int() of a number over 4,300 digits raises ValueError inside the constructor.
        raise RecipeError(f"{what}: a value cannot be read: {_clip(str(err))}") from None
    finally:
        loader.dispose()


def read_text(path: Path, what: str = "recipe") -> str:
    """The text of a recipe file: refused unread past :data:`MAX_BYTES`, and with one line
    for a file that is not UTF-8 text."""
    if not path.is_file():
        raise RecipeError(f"{what}: no such file {quote(str(path), 200)}")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise RecipeError(
            f"{what}: {quote(str(path), 200)} is {size:,} bytes; recipes are at most {_mib()} "
            f"— is this the right file?"
        )
    with path.open("rb") as f:
        raw = f.read(MAX_BYTES + 1)  # the file may have grown since stat
    if len(raw) > MAX_BYTES:
        raise RecipeError(f"{what}: {quote(str(path), 200)} is over {_mib()}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RecipeError(
            f"{what}: {quote(str(path), 200)} is not UTF-8 text (byte 0x{raw[err.start]:02x} at "
            f"offset {err.start}); a recipe is a YAML text file (see the recipes/ folder)"
        ) from None


def _clip(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mib() -> str:
    return f"{MAX_BYTES:,} bytes ({MAX_BYTES / (1 << 20):g} MiB)"
