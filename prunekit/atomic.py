"""Folders that appear complete or not at all: written beside the target, renamed into place.

Every folder prunekit writes for a user (an artifact, a command's output folder with its model
and reports, a cached built-in model) goes through :func:`staged_dir`. A process killed while
writing leaves a hidden ``.NAME.partial-PID-…`` sibling; the next write to the same target
removes those whose process is gone, so they do not pile up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from prunekit.errors import PrunekitError

__all__ = ["remove_stale", "staged_dir"]


@contextlib.contextmanager
def staged_dir(
    path: Path, *, replaceable: Callable[[Path], bool] | None = None, mode: int | None = None
) -> Iterator[Path]:
    """Yield an empty folder beside ``path``; when the block ends without raising it replaces
    ``path`` (an empty folder, or one ``replaceable`` accepts; anything else is refused before
    the block runs), else it is removed. ``mode``: permissions given to the folder (default:
    what ``mkdir`` gives, 0777 less the umask; mkdtemp makes it 0700)."""
    path = Path(path)
    if path.exists() and not (
        path.is_dir() and (not any(path.iterdir()) or (replaceable and replaceable(path)))
    ):
        what = "a file" if not path.is_dir() else "a folder prunekit did not write"
        raise PrunekitError(f"{str(path)!r} exists and is {what}; choose a new or empty directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-{os.getpid()}-", dir=path.parent))
    try:
        yield tmp
        tmp.chmod(_mkdir_mode() if mode is None else mode)
        _replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale(path: Path) -> None:
    """Remove ``.NAME.partial-PID-…`` / ``.NAME.old-PID-…`` siblings of ``path`` left by
    processes that no longer run (a save killed half-way)."""
    parent = Path(path).parent
    if not parent.is_dir():
        return
    for kind in ("partial", "old"):
        for leftover in parent.glob(f".{Path(path).name}.{kind}-*"):
            pid = leftover.name.removeprefix(f".{Path(path).name}.{kind}-").split("-", 1)[0]
            if leftover.is_dir() and pid.isdigit() and not _running(int(pid)):
                shutil.rmtree(leftover, ignore_errors=True)


def _replace(tmp: Path, path: Path) -> None:
    # A non-empty directory cannot be replaced by one rename, so the old one is moved aside
    # first and put back if the second rename fails.
    if not path.exists():
        tmp.rename(path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-{os.getpid()}-", dir=path.parent))
    old.rmdir()
    path.rename(old)
    try:
        tmp.rename(path)
    except BaseException:
        old.rename(path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` beside ``path`` and rename it into place: the file is complete or absent
    (an existing one is replaced whole), with the permissions ``open`` would give it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.partial-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mkdir_mode() -> int:
    return 0o777 & ~_umask()


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True
