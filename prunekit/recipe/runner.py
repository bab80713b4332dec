"""``run_recipe``: run a recipe's steps on a copy of a model, saving the state after each.

After each step the model is saved to ``DIR/steps/NN-verb/model`` (``pk.save``, written to a
temporary directory and renamed) with the step's row and report, then ``DIR/state.json`` records
the step as finished. A run that stops (an error, Ctrl-C, a killed process) resumes with
``resume=True`` from the model saved after its last finished step: ``pk.load`` rebuilds it on a
copy of the original model, replaying pruned shapes and swapped-in layers (codebooks, int8), so
every kind of step reloads. A ``DataLoader``'s shuffling generator is reseeded before each step
from its seed and the step's number, so a resumed run sees the same batches as one that never
stopped and ends with the same model.
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.artifact.io import artifact_bytes, load, save
from prunekit.measure import compare, measure
from prunekit.recipe.execute import StepContext, run_step
from prunekit.recipe.recipe import Recipe
from prunekit.recipe.report import RecipeReport, row_from
from prunekit.recipe.state import (
    RunState,
    weights_digest,
    write_json_atomic,
    write_text_atomic,
)
from prunekit.recipe.steps import RecipeError, Step
from prunekit.train import teacher_copy

log = logging.getLogger(__name__)

Metrics = Callable[[nn.Module], dict[str, float]]


@dataclass(frozen=True)
class Evaluation:
    """How models are judged. ``accuracy``: top-1 on the evaluation data (off for data without
    class labels). ``metrics(model)``: task metrics after every step; ``final_metrics`` (default
    ``metrics``) for the final before/after table only, where costlier ones fit.
    ``batch_sizes``/``min_run_time``: the final table's latency. ``step_latency``: time each
    step's model at batch 1 (briefly)."""

    accuracy: bool = True
    metrics: Metrics | None = None
    final_metrics: Metrics | None = None
    batch_sizes: Sequence[int] = (1, 64)
    min_run_time: float = 0.5
    step_latency: bool = True


STEP_LATENCY_SECONDS = 0.2


def run_recipe(
    recipe: Recipe,
    model: nn.Module,
    train_data: Iterable[Any],
    eval_data: Iterable[Any] | None = None,
    *,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    evaluation: Evaluation | None = None,
    identity: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
    tokenizer: Any = None,
    splits: Any = None,
    progress: bool = True,
    on_step: Callable[[str, bool], None] | None = None,
) -> RecipeReport:
    """Run ``recipe`` on a copy of ``model``; ``model`` itself is left unchanged (it teaches
    ``distill`` steps and is the "before" of the final table).

    train_data: re-iterable batches for training and calibration (a DataLoader).
    eval_data: batches the models are measured on after every step and at the end.
    out: the run's directory: ``model/``, ``recipe.yaml``, ``report.json``, ``report.md``,
        ``state.json``, ``steps/`` (see :mod:`prunekit.recipe.state`). It must be missing or
        empty, unless ``resume`` (continue the run there; refused if the recipe, the model's
        weights or ``identity`` changed) or ``overwrite`` (delete the earlier run there).
    identity: whatever else the run depends on (data and model specs, batch size, seed);
        recorded, and compared on resume.
    source, tokenizer: passed to ``prunekit.save`` for ``out/model``.
    splits: the text data ``train_data`` is a loader of (``prunekit.data.TextSplits``), which
        a ``distill`` step's ``more_text`` file is tokenized as; needed only for that.
    progress: log a line as each step starts and ends (at INFO; at DEBUG when False).
    on_step: instead of logging, ``on_step(line, finished)`` as each step starts (False) and
        ends (True), e.g. to update a status line.

    Returns a :class:`RecipeReport`; its ``model`` is the final model.
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe: expected a prunekit.Recipe; got {type(recipe).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module; got {type(model).__name__}")
    _check_more_text(recipe, train_data, splits)
    evaluation = evaluation or Evaluation()
    level = logging.INFO if progress else logging.DEBUG
    say = on_step or (lambda line, finished: log.log(level, "%s", line))
    out = Path(out)
    start = time.perf_counter()
    fingerprint = {
        "recipe": recipe.digest(),
        "model": weights_digest(model),
        "identity": identity or {},
    }
    state = RunState.open(out, fingerprint, resume=resume, overwrite=overwrite)
    write_text_atomic(out / "recipe.yaml", recipe.to_yaml())
    seeds = _loader_seeds(train_data, eval_data)
    ctx = StepContext(train_data, eval_data, teacher_copy(model), out, evaluation.accuracy,
                      evaluation.metrics, splits)  # fmt: skip
    done = len(state.finished)
    if done:
        say(f"resuming after step {done}/{len(recipe)} ({state.model_dir or 'the original'})", True)
    current = copy.deepcopy(model)
    if state.model_dir is not None:
        current = load(state.model_dir, model=current)
    if state.data["original"] is None:
        say("measuring the original model…", False)
        state.set_original({"step": 0, "verb": "original", "method": None, "seconds": None,
                            **_row(model, ctx, evaluation, None)})  # fmt: skip

    try:
        for step in recipe.steps[done:]:
            _reseed(seeds, step.index)
            torch.manual_seed(step.index)
            say(f"step {step.index}/{len(recipe)}: {step.label}…", False)
            row = _run_step(step, current, ctx, state, evaluation, source)
            say(f"step {step.index}/{len(recipe)}: {step.label}: {_summary(row)}", True)
    finally:
        _reseed(seeds, 0)

    say("measuring before/after…", False)
    # The order state.py documents: a report.json always describes the model/ beside it.
    if state.data["complete"]:
        state.set_complete(False)
    for name in ("report.json", "report.md"):
        (out / name).unlink(missing_ok=True)
    save(current, out / "model", source=source, tokenizer=tokenizer)
    comparison = compare(
        model, current, eval_data, example_inputs=ctx.example_inputs,
        accuracy=evaluation.accuracy, metrics=evaluation.final_metrics or evaluation.metrics,
        batch_sizes=tuple(evaluation.batch_sizes), min_run_time=evaluation.min_run_time,
    )  # fmt: skip
    result = RecipeReport(
        config=recipe.to_dict(),
        rows=[state.data["original"], *(e["row"] for e in state.finished)],
        steps=[_step_report(e) for e in state.finished],
        comparison=comparison,
        out=out,
        resumed_steps=done,
        seconds=time.perf_counter() - start,
        model=current,
    )
    write_text_atomic(out / "report.md", result.to_markdown(_title(identity)).rstrip() + "\n")
    write_json_atomic(out / "report.json", result.to_dict())
    state.set_complete()
    return result


def _run_step(
    step: Step,
    model: nn.Module,
    ctx: StepContext,
    state: RunState,
    evaluation: Evaluation,
    source: dict[str, Any] | None,
) -> dict[str, Any]:
    """Run one step, save its model, row and report to a temporary directory, then commit it
    (see :mod:`prunekit.recipe.state`); returns its row."""
    partial = state.partial_dir(step.index, step.verb)
    try:
        began = time.perf_counter()
        report = run_step(step, model, ctx)
        seconds = time.perf_counter() - began
        entry = {"step": step.index, "verb": step.verb, "method": step.method,
                 "dir": state.step_dir(step.index, step.verb), "model": None}  # fmt: skip
        if step.changes_model:
            save(model, partial / "model", source=source)
            entry["model"] = f"{entry['dir']}/model"
            figures = _row(model, ctx, evaluation, artifact_bytes(partial / "model"))
        else:
            figures = _previous_figures(state)
        entry["row"] = {"step": step.index, "verb": step.verb, "method": step.method,
                        "seconds": seconds, **figures}  # fmt: skip
        write_json_atomic(
            partial / "step.json", {**entry, "fields": step.fields(), "report": report}
        )
        state.commit(partial, {**entry, "report": report})
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return entry["row"]


def _check_more_text(recipe: Recipe, train_data: Any, splits: Any) -> None:
    # Before any step runs: a distill step's more_text is tokenized as the data is.
    for step in recipe.steps:
        if getattr(step.options, "more_text", None) is None:
            continue
        if getattr(splits, "tokenizer", None) is None:
            raise RecipeError(
                f"step {step.index} ({step.verb}): field 'more_text' is tokenized as the data "
                f"is; pass the text data as splits= (a prunekit.data.TextSplits, e.g. text:FILE) "
                f"or drop more_text",
                step.index, step.verb, "more_text",
            )  # fmt: skip
        if getattr(train_data, "batch_size", None) is None:
            raise RecipeError(
                f"step {step.index} ({step.verb}): field 'more_text' is batched as train_data "
                f"is; pass train_data as a DataLoader (splits.loader('train', ...))",
                step.index, step.verb, "more_text",
            )  # fmt: skip


def _title(identity: dict[str, Any] | None) -> str:
    if identity and identity.get("model"):
        data = f" on {identity['data']}" if identity.get("data") else ""
        return f"prunekit run: {identity['model']}{data}"
    return "prunekit run"


def _step_report(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in ("step", "verb", "method", "report")}


def _row(model: nn.Module, ctx: StepContext, ev: Evaluation, disk: int | None) -> dict[str, Any]:
    measured = measure(
        model, ctx.eval, example_inputs=ctx.example_inputs, latency=ev.step_latency,
        batch_sizes=(1,), artifact=disk is None, min_run_time=STEP_LATENCY_SECONDS,
        accuracy=ev.accuracy, metrics=ev.metrics,
    )  # fmt: skip
    return row_from(measured, disk)


def _previous_figures(state: RunState) -> dict[str, Any]:
    last = state.finished[-1]["row"] if state.finished else state.data["original"]
    return {k: v for k, v in last.items() if k not in ("step", "verb", "method", "seconds")}


def _loader_seeds(*datas: Any) -> list[tuple[torch.Generator, int]]:
    # Read once, before any step draws from them: the seed each loader was built with.
    found = []
    for data in datas:
        generator = getattr(data, "generator", None)
        if isinstance(generator, torch.Generator):
            found.append((generator, generator.initial_seed()))
    return found


def _reseed(seeds: list[tuple[torch.Generator, int]], index: int) -> None:
    # Index 0 puts back the seed each loader came with.
    for generator, seed in seeds:
        generator.manual_seed(seed + index)


def _summary(row: dict[str, Any]) -> str:
    parts = []
    if row.get("accuracy") is not None:
        parts.append(f"accuracy {100 * row['accuracy']:.2f} %")
    parts.append(f"non-zeros {row['nonzeros']:,}")
    if row.get("artifact_bytes") is not None:
        parts.append(f"{row['artifact_bytes']:,} bytes on disk")
    parts.append(f"{row['seconds']:.1f} s")
    return ", ".join(parts)
