"""One fuzz case: planned from ``(seed, index)`` alone, run, and its outcome classified.

Outcomes: ``loaded`` (accepted: loaded and ran one forward; for recipes and configs, built and
applied), ``refused`` (a PrunekitError; for method configs also pydantic's ValidationError or
another ValueError/TypeError), ``crash`` (any other exception, also one in the forward after a
load), ``over-memory`` (an allocation past the bound), ``loaded-silently`` (an unsealed edit of
a checksummed file that loaded), ``ran-code`` (a folder's own Python was imported);
``hang`` is decided by the engine, which times each case; ``fuzzer-error``: the fuzzer could
not build the case (a bug here, never expected).
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import prunekit as pk
from prunekit.artifact.manifest import MANIFEST
from prunekit.errors import PrunekitError
from tests.fuzzing import artifacts, configs, texts
from tests.fuzzing.bases import Base, calibration

# Shares of the campaign: the int8-static base is slow to load (it converts each region again).
TARGETS = {"codecs": 12, "builtin-pruned-rtn": 8, "pruned-shared-int8": 10,
           "pruned-int8-static": 4, "rtn4": 6, "qat": 6, "hf-bert-encoded": 9, "hf-gpt2-plain": 9,
           "hf-config": 12, "recipe": 12, "config": 12}  # fmt: skip
OUTCOMES = ["loaded", "refused", "crash", "hang", "over-memory", "loaded-silently", "ran-code",
            "fuzzer-error"]  # fmt: skip
FAILURES = frozenset(OUTCOMES[2:])
MEMORY_WORDS = ("can't allocate memory", "bad_alloc", "DefaultCPUAllocator", "out of memory")


class Inconsistent(Exception):
    """A load that succeeded but disagrees with what the artifact says (or a recipe that does
    not read back equal)."""


@dataclass(frozen=True)
class Case:
    index: int
    target: str
    kind: str
    sealed: bool | None
    detail: str
    payload: Any

    @property
    def label(self) -> str:
        """The kind, with whether the checksums were recomputed."""
        if self.sealed is None:
            return self.kind
        return f"{self.kind} ({'resealed' if self.sealed else 'unsealed'})"


def plan(bases: dict[str, Base], seed: int, index: int) -> Case:
    """Case ``index`` of the campaign ``seed``: the same on every machine and in every process."""
    rng = random.Random(f"prunekit-fuzz:{seed}:{index}")
    names = [n for n in TARGETS if n in bases]
    target = rng.choices(names, [TARGETS[n] for n in names])[0]
    base = bases[target]
    if base.kind == "recipe":
        kind, text, detail = texts.plan(base.texts, rng)
        return Case(index, target, kind, None, detail, text)
    if base.kind == "config":
        kind, method, fields, detail = configs.plan(rng)
        return Case(index, target, kind, None, detail, (method, fields))
    kind, sealed, ops, detail = artifacts.plan(base, rng)
    return Case(index, target, kind, sealed, detail, ops)


def run_case(bases: dict[str, Base], case: Case, scratch: Path) -> dict[str, Any]:
    """Run ``case`` in this process; its result (outcome, error type and message)."""
    base = bases[case.target]
    folder = scratch / f"case{case.index}"
    shutil.rmtree(folder, ignore_errors=True)
    must_refuse, error, outcome = False, None, None
    torch.manual_seed(0)
    try:
        if base.kind in ("artifact", "hf-folder"):
            try:
                changed = artifacts.apply(base, case.payload, case.sealed, folder)
                must_refuse = case.sealed is False and changed
            except Exception as e:  # a bug of the fuzzer, not of prunekit
                error, outcome = e, "fuzzer-error"
        if outcome is None:
            try:
                _run(base, case, folder)
            except Exception as e:
                error = e
            ran_code = (folder / artifacts.CODE_SENTINEL).exists()
            outcome = "ran-code" if ran_code else classify(error, base.kind, must_refuse)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    message = None if error is None else _message(error)
    return {
        "index": case.index,
        "target": case.target,
        "kind": case.label,
        "outcome": outcome,
        "error": None if error is None else type(error).__name__,
        "message": None if message is None else message[:400],
        "message_chars": None if message is None else len(message),
        "detail": case.detail,
    }


def classify(error: Exception | None, kind: str, must_refuse: bool) -> str:
    """The outcome of a case that raised ``error`` (None: it loaded)."""
    if error is None:
        return "loaded-silently" if must_refuse else "loaded"
    chain: list[BaseException] = []
    e: BaseException | None = error
    while e is not None and len(chain) < 20:
        chain.append(e)
        e = e.__cause__ or e.__context__
    text = " ".join(_message(x)[:2000] for x in chain)
    if any(isinstance(x, MemoryError) for x in chain) or any(w in text for w in MEMORY_WORDS):
        return "over-memory"
    if isinstance(error, PrunekitError):
        return "refused"
    if kind == "config" and isinstance(error, ValueError | TypeError):
        return "refused"
    return "crash"


def _run(base: Base, case: Case, folder: Path) -> None:
    if base.kind == "recipe":
        recipe = pk.Recipe.from_yaml(case.payload)
        if pk.Recipe.from_yaml(recipe.to_yaml()) != recipe:
            raise Inconsistent("the recipe written by to_yaml reads back different")
        return
    model: Any
    if base.kind == "config":
        model, x = base.model(), base.inputs()
        configs.apply_(*case.payload, model, calibration(), x)
    elif base.kind == "hf-folder":
        from prunekit.models.hf import load_hf_model

        model, x = load_hf_model(folder), base.inputs()
    else:
        model = pk.load(folder, model=base.model() if base.model else None)
        _check_state(model, folder)
        x = base.inputs()
    with torch.no_grad():
        model.eval()(**x) if isinstance(x, dict) else model.eval()(x)


def _check_state(model: torch.nn.Module, folder: Path) -> None:
    # A load that succeeded gives the tensors the manifest lists, of its dtypes and shapes.
    tensors = json.loads((folder / MANIFEST).read_text())["tensors"]
    state = model.state_dict()
    if state.keys() != tensors.keys():
        raise Inconsistent("the loaded model's tensors are not the manifest's")
    for name, t in state.items():
        if str(t.dtype).removeprefix("torch.") != tensors[name]["dtype"]:
            raise Inconsistent(f"{name}: {t.dtype}, the manifest says {tensors[name]['dtype']}")
        if list(t.shape) != tensors[name]["shape"]:
            raise Inconsistent(
                f"{name}: {list(t.shape)}, the manifest says {tensors[name]['shape']}"
            )


def _message(error: BaseException) -> str:
    try:
        return str(error)
    except Exception as e:  # e.g. an integer too long to print
        return f"<message cannot be printed: {type(e).__name__}>"
