"""A run's output directory and its ``state.json``: what a resumed run may trust.

Layout of ``DIR``::

    state.json          fingerprint, the original model's row, the finished steps, complete
    recipe.yaml         the resolved recipe
    steps/NN-verb/      one finished step: step.json (its row and report), model/ (pk.save)
    model/ report.json report.md   the final outputs, once every step finished

``state.json`` is the only record of what finished: it is replaced atomically (a temporary file
then ``os.replace``), and a step directory appears by one rename of a complete temporary one
just before the state lists it. A directory under ``steps/`` that the state does not list (a
half-written step, or one that finished a moment before the state could record it) is removed
when the run resumes, and that step runs again; so are the temporary files of a killed write.

The final outputs are written in one order: earlier reports removed, ``model/``, ``report.md``,
``report.json``, then ``complete`` in the state. A ``report.json`` therefore always describes
the ``model/`` beside it, and ``complete`` says both are there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.atomic import write_bytes
from prunekit.errors import quote
from prunekit.recipe.steps import RecipeError

log = logging.getLogger(__name__)

STATE = "state.json"
STEPS = "steps"
FORMAT = "prunekit-run"
VERSION = 1


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over the model's state_dict (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON so that ``path`` holds either the old or the new text, whole."""
    write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


class RunState:
    """The state of one run in ``out``; see the module docstring for the layout."""

    def __init__(self, out: Path, fingerprint: dict[str, Any], data: dict[str, Any]) -> None:
        self.out, self.fingerprint, self.data = out, fingerprint, data

    @classmethod
    def open(
        cls, out: Path, fingerprint: dict[str, Any], *, resume: bool, overwrite: bool
    ) -> RunState:
        """Start a run in ``out``, or with ``resume`` continue the one there.

        Without ``resume``, ``out`` must be missing or empty, or with ``overwrite`` hold an
        earlier run (which is deleted). With ``resume``, the earlier run's fingerprint (recipe,
        model weights, data and settings) must equal ``fingerprint``.
        """
        state_file = out / STATE
        if check_out(out, resume=resume, overwrite=overwrite) and not resume:
            shutil.rmtree(out)
        if resume and state_file.is_file():
            state = cls(out, fingerprint, cls._read(state_file))
            state._check_fingerprint()
            state._drop_unfinished()
            state._drop_temporary_files()
            return state
        if resume:
            log.info("resume: %s holds no earlier run; starting from the first step", out)
        out.mkdir(parents=True, exist_ok=True)
        state = cls(out, fingerprint, {"format": FORMAT, "version": VERSION,
                                       "fingerprint": fingerprint, "original": None,
                                       "finished": [], "complete": False})  # fmt: skip
        state.save()
        return state

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise RecipeError(f"{path}: unreadable ({err}); run again with --overwrite") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise RecipeError(f"{path}: not a prunekit run state; run again with --overwrite")
        if data.get("version") != VERSION:
            raise RecipeError(
                f"{path}: written by another prunekit version (state version "
                f"{data.get('version')}); run again with --overwrite"
            )
        return data

    def _check_fingerprint(self) -> None:
        saved = self.data.get("fingerprint", {})
        changed = [k for k in sorted(set(saved) | set(self.fingerprint))
                   if saved.get(k) != self.fingerprint.get(k)]  # fmt: skip
        if changed:
            what = "; ".join(
                f"{k}: {_short(saved.get(k))} then, {_short(self.fingerprint.get(k))} now"
                for k in changed
            )
            raise RecipeError(
                f"--resume: {self.out} was run with a different {', '.join(changed)} ({what}); "
                f"resume with the same recipe, model and data, or start over with --overwrite"
            )

    def _drop_unfinished(self) -> None:
        kept = {e["dir"] for e in self.finished}
        steps = self.out / STEPS
        if not steps.is_dir():
            return
        for entry in steps.iterdir():
            if f"{STEPS}/{entry.name}" not in kept:
                log.info("resume: removing %s, which no finished step recorded", entry)
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()

    def _drop_temporary_files(self) -> None:
        # What write_json_atomic/write_text_atomic leave when the process is killed mid-write.
        for leftover in self.out.glob(".*.partial-*"):
            if leftover.is_file():
                leftover.unlink()

    @property
    def finished(self) -> list[dict[str, Any]]:
        return self.data["finished"]

    @property
    def model_dir(self) -> Path | None:
        """The model saved after the last finished step that changed it; None: the original."""
        for entry in reversed(self.finished):
            if entry.get("model"):
                return self.out / entry["model"]
        return None

    def set_original(self, row: dict[str, Any]) -> None:
        self.data["original"] = row
        self.save()

    def step_dir(self, index: int, verb: str) -> str:
        return f"{STEPS}/{index:02d}-{verb}"

    def partial_dir(self, index: int, verb: str) -> Path:
        """An empty temporary directory beside the final one, renamed by :meth:`commit`."""
        (self.out / STEPS).mkdir(exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{index:02d}-{verb}.partial-", dir=self.out / STEPS))

    def commit(self, partial: Path, entry: dict[str, Any]) -> None:
        """Move a complete step directory into place, then record the step as finished."""
        final = self.out / entry["dir"]
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        self.finished.append(entry)
        self.save()

    def set_complete(self, complete: bool = True) -> None:
        self.data["complete"] = complete
        self.save()

    def save(self) -> None:
        write_json_atomic(self.out / STATE, self.data)


def check_out(out: Path, *, resume: bool, overwrite: bool) -> bool:
    """Whether ``out`` holds an earlier run, or RecipeError if a run may not start there:
    ``out`` must be missing or empty, or hold an earlier run and ``resume`` or ``overwrite``
    be set. Reads only, so it can run before any work."""
    if resume and overwrite:
        raise RecipeError("resume and overwrite exclude each other; pass one of them")
    if out.exists() and not out.is_dir():
        raise RecipeError(f"out: {quote(str(out), 200)} is a file; choose a new or empty directory")
    occupied = out.is_dir() and any(out.iterdir())
    if occupied and not (out / STATE).is_file():
        raise RecipeError(
            f"out: {quote(str(out), 200)} exists and holds no prunekit run (no {STATE}); choose "
            f"a new or empty directory"
        )
    if occupied and not (resume or overwrite):
        raise RecipeError(
            f"out: {quote(str(out), 200)} holds an earlier run; pass --resume to continue it or "
            f"--overwrite to delete it and start over"
        )
    return occupied


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:12] if len(text) == 64 else text
