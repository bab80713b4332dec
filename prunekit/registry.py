"""Methods are registered by name; the CLI, recipes, docs and the conformance tests read this.

A method declares everything about itself once, where it is defined: its kind, its config class
(which says the patterns it supports and the data it needs), its implementation, for pruning
methods how it ranks whole units (``group_scores``), and an example config. Nothing else keeps a
list of methods: the README/docs methods table, ``prunekit methods`` and tests/conformance/ are
generated from this registry, so a newly registered method is listed and tested without edits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prunekit.config import BaseConfig
from prunekit.errors import PrunekitError

KINDS = ("prune", "quantize", "share", "factorize", "distill")

# What a method reads, from its config's flags: shown in `prunekit methods` and the docs.
DATA_NEEDS = {
    "none": "nothing: weights only",
    "labelled": "labelled batches (a loss to differentiate)",
    "calibration": "calibration inputs (layer activations)",
    "training": "a training loop (finetune_ with labelled data)",
    "teacher": "a teacher model and training data",
}


@dataclass(frozen=True)
class MethodInfo:
    """One registered method.

    impl: what runs it — a scorer or solver class for pruning methods, the in-place verb for
        the other kinds. group_scores: for pruning methods that remove whole units,
        ``group_scores(model, groups, config, data, loss_fn) -> {group id: scores [units]}``.
    example: config fields of a small, quick run, used by docs and the conformance suite.
    """

    name: str
    kind: str
    config: type[BaseConfig]
    summary: str
    impl: Any
    group_scores: Callable[..., dict[int, Any]] | None = None
    example: dict[str, Any] = field(default_factory=dict)

    @property
    def patterns(self) -> tuple[str, ...]:
        """Pruning patterns accepted (``unstructured``, ``N:M``, ``channel``, ``head``)."""
        return tuple(getattr(self.config, "patterns", ()))

    @property
    def needs_data(self) -> bool:
        return bool(getattr(self.config, "needs_data", False))

    @property
    def data(self) -> str:
        """A key of :data:`DATA_NEEDS`: what the method reads besides the weights."""
        if self.kind == "distill":
            return "teacher"
        if getattr(self.config, "needs_training", False):
            return "training"
        if getattr(self.config, "needs_activations", False) or (
            self.needs_data and self.kind == "quantize"
        ):
            return "calibration"
        return "labelled" if self.needs_data else "none"

    def example_config(self) -> BaseConfig:
        return self.config(**self.example)


_REGISTRY: dict[str, MethodInfo] = {}


def register(
    name: str,
    kind: str,
    config: type[BaseConfig],
    summary: str,
    impl: Any,
    *,
    group_scores: Callable[..., dict[int, Any]] | None = None,
    example: dict[str, Any] | None = None,
) -> None:
    """Register a method under ``name`` (unique across kinds); see :class:`MethodInfo`."""
    if name in _REGISTRY:
        raise RuntimeError(f"method {name!r} is registered twice")
    if kind not in KINDS:
        raise RuntimeError(f"method {name!r}: kind must be one of {KINDS}; got {kind!r}")
    if impl is None:
        raise RuntimeError(f"method {name!r} registers no implementation")
    patterns = tuple(getattr(config, "patterns", ()))
    structured = any(p in ("channel", "head") for p in patterns)
    if structured != (group_scores is not None):
        raise RuntimeError(
            f"method {name!r}: a config that accepts channel/head patterns needs group_scores, "
            f"and only such a config may have them (patterns {patterns})"
        )
    config.method = name
    _REGISTRY[name] = MethodInfo(name, kind, config, summary, impl, group_scores, example or {})


def methods(kind: str | None = None) -> list[MethodInfo]:
    """Every registered method (of one ``kind`` if given), sorted by kind then name."""
    _load_builtin_methods()
    found = [m for m in _REGISTRY.values() if kind is None or m.kind == kind]
    return sorted(found, key=lambda m: (KINDS.index(m.kind), m.name))


def get_method(name: str, kind: str | None = None) -> MethodInfo:
    """The method registered as ``name``; a clear error listing the known ones otherwise."""
    _load_builtin_methods()
    info = _REGISTRY.get(name)
    if info is None or (kind is not None and info.kind != kind):
        known = ", ".join(m.name for m in methods(kind))
        raise PrunekitError(f"method {name!r} is not registered; choose one of: {known}")
    return info


def method_for_config(config: BaseConfig) -> MethodInfo:
    """The registered method whose config class ``config`` is an instance of."""
    _load_builtin_methods()
    for info in _REGISTRY.values():
        if type(config) is info.config:
            return info
    raise PrunekitError(
        f"config: {type(config).__name__} is not a registered method's config; "
        f"see prunekit.methods()"
    )


def supporting(pattern_kind: str) -> list[str]:
    """Names of the pruning methods that accept a pattern of this kind (``N:M`` for any N:M)."""
    return [m.name for m in methods("prune") if pattern_kind in m.patterns]


def methods_markdown() -> str:
    """The methods table of the README and the docs, generated from the registry."""

    def cell(text: str) -> str:
        # A '|' inside a cell (|w|) would end it; a newline would end the row.
        return " ".join(str(text).split()).replace("|", "\\|")

    rows = ["| method | kind | config | patterns | reads | what |", "|---|---|---|---|---|---|"]
    for m in methods():
        patterns = ", ".join(m.patterns) or "—"
        rows.append(
            f"| `{m.name}` | {m.kind} | `{m.config.__name__}` | {cell(patterns)} "
            f"| {cell(DATA_NEEDS[m.data])} | {cell(m.summary)} |"
        )
    return "\n".join(rows) + "\n"


def _load_builtin_methods() -> None:
    # Importing the method packages registers them; done lazily to keep imports acyclic.
    import prunekit.distill
    import prunekit.factorize
    import prunekit.prune.methods
    import prunekit.quantize
    import prunekit.share  # noqa: F401
