"""Where built-in models are cached, and the version stamped into what prunekit writes.

Kept apart from ``cache`` (which trains and loads the built-ins through the registry) so the
built-in model modules can find their cache folder without importing the cache that imports
them.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import platformdirs

CACHE_ENV = "PRUNEKIT_CACHE"


def default_cache_dir() -> Path:
    """Where trained builtins are cached: ``$PRUNEKIT_CACHE``, else the user's cache folder."""
    return Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("prunekit"))


def prunekit_version() -> str:
    """The installed prunekit's version ("unknown" when run from a source tree)."""
    try:
        return metadata.version("prunekit")
    except metadata.PackageNotFoundError:
        return "unknown"
