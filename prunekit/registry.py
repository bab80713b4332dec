"""Methods are registered by name; the CLI, recipes and the conformance tests read this registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prunekit.config import BaseConfig
from prunekit.errors import PrunekitError


@dataclass(frozen=True)
class MethodInfo:
    """One registered method: its name, its kind (``prune``, …), its config class, one line."""

    name: str
    kind: str
    config: type[BaseConfig]
    summary: str
    impl: Any

    @property
    def needs_data(self) -> bool:
        return bool(getattr(self.config, "needs_data", False))


_REGISTRY: dict[str, MethodInfo] = {}


def register(name: str, kind: str, config: type[BaseConfig], summary: str, impl: Any) -> None:
    """Register a method under ``name`` (unique across kinds)."""
    if name in _REGISTRY:
        raise RuntimeError(f"method {name!r} is registered twice")
    config.method = name
    _REGISTRY[name] = MethodInfo(name, kind, config, summary, impl)


def methods(kind: str | None = None) -> list[MethodInfo]:
    """Every registered method (of one ``kind`` if given), sorted by kind then name."""
    _load_builtin_methods()
    found = [m for m in _REGISTRY.values() if kind is None or m.kind == kind]
    return sorted(found, key=lambda m: (m.kind, m.name))


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


def _load_builtin_methods() -> None:
    # Importing the method packages registers them; done lazily to keep imports acyclic.
    import prunekit.distill
    import prunekit.prune.methods
    import prunekit.quantize
    import prunekit.share  # noqa: F401
