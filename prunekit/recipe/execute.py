"""Running one step: each verb calls the library's own verb, nothing more.

Calibration data (``wanda``, ``taylor``, ``int8-static``, ``gptq``, …) is the train split; the
teacher of ``distill: true`` and of ``distill`` steps is the original, unmodified model. A
``distill`` step with ``more_text`` trains on the train split and every line of that file.
Each function changes ``model`` in place (or, for export and measure, reads it) and returns the
verb's report as a JSON-ready dict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from prunekit.data.batches import first_batch, split_batch
from prunekit.data.text import with_more_text
from prunekit.recipe.steps import (
    DistillOptions,
    ExportOptions,
    FinetuneOptions,
    MeasureOptions,
    PruneOptions,
    Step,
)


@dataclass
class StepContext:
    """What every step may read: the data, the teacher (the original model), where to write."""

    train: Iterable[Any]
    eval: Iterable[Any] | None
    teacher: nn.Module
    out: Path
    accuracy: bool = True
    metrics: Callable[[nn.Module], dict[str, float]] | None = None
    splits: Any = None  # the text data ``train`` comes from, for a distill step's more_text

    @property
    def example_inputs(self) -> Any:
        return split_batch(first_batch(self.eval if self.eval is not None else self.train))[0]


def run_step(step: Step, model: nn.Module, ctx: StepContext) -> dict[str, Any]:
    """Apply ``step`` to ``model``; returns the verb's report as a dict."""
    return _RUNNERS[step.verb](step, model, ctx)


def _prune(step: Step, model: nn.Module, ctx: StepContext) -> dict[str, Any]:
    from prunekit.prune import prune_
    from prunekit.train import finetune_

    options, config = step.options, step.config
    assert isinstance(options, PruneOptions) and config is not None
    teacher = ctx.teacher if options.distill else None
    gradual = options.epochs > 0 and (options.schedule != "oneshot" or config.needs_training)
    out: dict[str, Any] = {}
    if not gradual:
        out["prune"] = prune_(model, config, data=ctx.train).to_dict()
    if options.epochs > 0:
        report = finetune_(
            model, ctx.train, options.finetune_config(config.seed), teacher=teacher,
            eval_data=_labelled(ctx), prune=config if gradual else None,
            schedule=options.schedule if gradual else None, progress=False,
        )  # fmt: skip
        out["finetune"] = report.to_dict()
    return out


def _finetune(step: Step, model: nn.Module, ctx: StepContext) -> dict[str, Any]:
    from prunekit.train import finetune_

    o = step.options
    assert isinstance(o, FinetuneOptions)
    report = finetune_(
        model, ctx.train, o.finetune_config(), teacher=ctx.teacher if o.distill else None,
        eval_data=_labelled(ctx), progress=False,
    )  # fmt: skip
    return report.to_dict()


def _distill(step: Step, model: nn.Module, ctx: StepContext) -> dict[str, Any]:
    from prunekit.distill import distill_

    options, config = step.options, step.config
    assert isinstance(options, DistillOptions) and config is not None
    if options.more_text is None:
        return distill_(model, ctx.teacher, ctx.train, config, eval_data=_labelled(ctx)).to_dict()
    # A list in one shuffled order, which every epoch then repeats.
    data, added = with_more_text(ctx.train, ctx.splits, options.more_text, seed=config.seed)
    report = distill_(model, ctx.teacher, data, config, eval_data=_labelled(ctx)).to_dict()
    return {**report, "more_text_samples": added}


def _share(step: Step, model: nn.Module, ctx: StepContext) -> dict[str, Any]:
    from prunekit.share import share_weights_

    return share_weights_(model, step.config).to_dict()  # type: ignore[arg-type]


def _factorize(step: Step, model: nn.Module, ctx: StepContext) -> dict[str, Any]:
    from prunekit.factorize import factorize_

    report = factorize_(model, step.config, example_inputs=ctx.example_inputs)  # type: ignore[arg-type]
    return report.to_dict()


def _quantize(step: Step, model: nn.Module, ctx: StepContext) -> dict[str, Any]:
    from prunekit.quantize import quantize_

    assert step.config is not None
    data = ctx.train if getattr(step.config, "needs_data", False) else None
    return quantize_(model, step.config, data=data).to_dict()  # type: ignore[arg-type]


def _export(step: Step, model: nn.Module, ctx: StepContext) -> dict[str, Any]:
    from prunekit.export import export_onnx

    o = step.options
    assert isinstance(o, ExportOptions)
    path = ctx.out / o.onnx
    path.parent.mkdir(parents=True, exist_ok=True)
    return {"onnx": o.onnx, **export_onnx(model, path, ctx.example_inputs).to_dict()}


def _measure(step: Step, model: nn.Module, ctx: StepContext) -> dict[str, Any]:
    from prunekit.measure import measure

    o = step.options
    assert isinstance(o, MeasureOptions)
    measured = measure(
        model, ctx.eval, example_inputs=ctx.example_inputs, latency=o.latency,
        batch_sizes=o.batch_sizes, artifact=o.artifact, min_run_time=o.min_run_time,
        num_samples=o.num_samples, accuracy=ctx.accuracy, metrics=ctx.metrics,
    )  # fmt: skip
    return measured.to_dict()


def _labelled(ctx: StepContext) -> Iterable[Any] | None:
    # Per-epoch accuracy only where the evaluation data has labels to score.
    return ctx.eval if ctx.accuracy else None


_RUNNERS: dict[str, Callable[[Step, nn.Module, StepContext], dict[str, Any]]] = {
    "prune": _prune,
    "finetune": _finetune,
    "distill": _distill,
    "share": _share,
    "factorize": _factorize,
    "quantize": _quantize,
    "export": _export,
    "measure": _measure,
}
