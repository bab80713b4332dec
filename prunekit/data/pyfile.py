"""Load ``FUNCTION`` from ``FILE.py`` for the ``py:FILE.py:FUNCTION`` model and data specs."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prunekit.errors import PrunekitError


def parse_py_spec(spec: str, what: str) -> tuple[Path, str]:
    """Split ``py:FILE.py:FUNCTION`` into the file's absolute path and the function name."""
    body = spec.removeprefix("py:")
    # rpartition: the file path may itself contain ':' (a drive letter), the function name cannot.
    file, _, function = body.rpartition(":")
    if not file or not function.isidentifier():
        raise PrunekitError(
            f"{what}: expected py:FILE.py:FUNCTION (e.g. py:my_models.py:build); got {spec!r}"
        )
    return Path(file).expanduser().resolve(), function


def load_py_function(spec: str, what: str) -> Callable[..., Any]:
    """Import ``FILE.py`` from its path and return its callable ``FUNCTION``."""
    path, function = parse_py_spec(spec, what)
    if not path.is_file():
        raise PrunekitError(f"{what}: file {path} not found (from {spec!r}); check the path")
    # A name unique per path, registered in sys.modules so dataclasses and pickling inside the
    # user's file can find their module.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    name = f"prunekit_user_{path.stem}_{digest}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise PrunekitError(f"{what}: cannot import {path} as a Python module; use a .py file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise PrunekitError(
            f"{what}: importing {path} failed: {type(err).__name__}: {err}"
        ) from err
    fn = getattr(module, function, None)
    if not callable(fn):
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise PrunekitError(
            f"{what}: {path} has no function {function!r}; callables found: "
            f"{', '.join(public) or 'none'}"
        )
    return fn
