"""One readable fine-tuning loop: masks stay applied, a teacher may teach, pruning may go on.

Per step: (maybe prune to the schedule's sparsity) → forward → loss (the task's, or the
teacher's mix) → backward → (scorers observe gradients) → zero pruned gradients → clip →
optimizer step → learning-rate schedule → re-apply masks. The settings are one
:class:`FinetuneConfig`; the pieces are small modules beside this one: ``optim`` (optimizer and
schedule), ``sparsity`` (masks and gradual pruning), ``progress``, and ``prunekit.distill.step``
(the teacher's loss, the same for ``finetune_(teacher=…)`` and ``distill_``).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Iterable, Iterator, Sized
from typing import Any

import torch
from torch import nn

from prunekit.calibrate import LossFn
from prunekit.config import PruneConfig
from prunekit.data.batches import split_batch
from prunekit.errors import PrunekitError
from prunekit.measure.accuracy import top1_accuracy
from prunekit.prune.schedule import Schedule
from prunekit.surgery.masks import restore_, snapshot
from prunekit.surgery.transaction import Transaction
from prunekit.train.config import FinetuneConfig, resolve_config
from prunekit.train.distributed import DataParallel, data_parallel
from prunekit.train.losses import TaskLoss
from prunekit.train.optim import TimeBox, lr_factor, make_optimizer, make_scheduler
from prunekit.train.progress import Progress
from prunekit.train.report import FinetuneReport
from prunekit.train.sparsity import SparsityKeeper

__all__ = ["FinetuneReport", "finetune_", "teacher_copy"]

log = logging.getLogger(__name__)


def finetune_(
    model: nn.Module,
    data: Iterable[Any],
    config: FinetuneConfig | None = None,
    *,
    teacher: nn.Module | None = None,
    eval_data: Iterable[Any] | None = None,
    loss_fn: LossFn | None = None,
    prune: PruneConfig | None = None,
    schedule: str | Schedule | None = None,
    keep_sparsity: bool = True,
    example_inputs: Any = None,
    progress: bool = True,
    **keywords: Any,
) -> FinetuneReport:
    """Train ``model`` in place on ``data``, keeping pruned weights at zero.

    data: a re-iterable collection of batches with a length (a list or DataLoader).
    config: how to train (:class:`FinetuneConfig`); ``keywords`` set its fields (``epochs=2,
        lr=1e-3, temperature=2.0…``) over ``config``'s; any other keyword is a TypeError.
    teacher: if given, it teaches as ``config`` says (``alpha·KD + (1−alpha)·task``, soft targets
        at ``temperature``, optionally hidden states; see :class:`FinetuneConfig`); it runs in
        eval mode without gradients and its modes and flags are put back afterwards.
    eval_data: labelled batches; accuracy is measured after each epoch.
    loss_fn: the task loss ``loss_fn(logits, labels)``; cross-entropy (or a Hugging Face
        model's own loss) by default.
    prune + schedule: prune while training — ``"oneshot"`` (before the first step),
        ``"iterative"``/``Iterative(rounds=k)`` (k rounds of prune→train, Han et al. 2015), or
        ``"agp"``/``AGP(...)`` (cubic gradual pruning, Zhu & Gupta 2017). With a structured
        pattern (``channel``/``head``) each step rebuilds the layers smaller and training goes
        on with the smaller model (Molchanov et al. 2019); ``example_inputs`` are traced
        (default: the first batch's inputs).
    keep_sparsity: weights already zero in the prunable layers stay zero.

    Stops early if the loss becomes NaN/inf, putting back the weights of the last good epoch.
    If training raises, the model is restored to its state before the call.
    """
    cfg = resolve_config(config, keywords, FinetuneConfig)
    _check_data(data)
    sparsity = SparsityKeeper(
        model, data, prune=prune, schedule=schedule, loss_fn=loss_fn,
        example_inputs=example_inputs, keep_sparsity=keep_sparsity,
    )  # fmt: skip
    torch.manual_seed(cfg.seed)
    with _objective(model, data, cfg, teacher, loss_fn) as objective:
        # Under torchrun: this rank's share of the batches, from rank 0's weights.
        ranks = data_parallel(model)
        ranks.broadcast_(model, objective.parameters())
        sparsity.begin()
        report = FinetuneReport(epochs=0, steps=0, seconds=0.0, config=cfg.to_dict())
        report.pairs = [f"{s}={t}" for s, t in getattr(objective, "pairs", [])]
        # Training writes every weight: all values are copied so a failure puts them back,
        # with any layers a structured schedule rebuilt.
        tx = Transaction(model)
        tx.protect_all()
        was_training = model.training
        try:
            with _channels_last(model) as cast:
                _train(model, ranks.shard(data), cfg, objective, sparsity, ranks, report,
                       eval_data, progress, cast)  # fmt: skip
        except BaseException:
            tx.rollback()
            raise
        finally:
            model.train(was_training)
        report.prune = sparsity.describe()
        report.pruning = sparsity.events
        report.projections = _projections(objective, report.pairs)
    return report


def _train(
    model: nn.Module,
    train: Any,
    cfg: FinetuneConfig,
    objective: Any,
    sparsity: SparsityKeeper,
    ranks: DataParallel,
    report: FinetuneReport,
    eval_data: Iterable[Any] | None,
    show: bool,
    cast: Any,
) -> None:
    total = cfg.epochs * len(train)
    mixed = autocast(cfg.precision, model)
    clock = TimeBox(cfg.minutes, total, ranks.slowest)
    by_step = lr_factor(cfg, total)

    def factor(step: int) -> float:
        return by_step(clock.position(step))

    opt = make_optimizer([*model.parameters(), *objective.parameters()], cfg)
    sched = make_scheduler(opt, factor)
    progress = Progress(cfg.epochs, len(train), show, ranks.is_main, minutes=cfg.minutes)
    step = 0
    for epoch in range(cfg.epochs):
        good = snapshot(model)
        model.train()
        sums: dict[str, float] = {}
        for batch in progress.batches(train, epoch):
            if clock.out_of_time(step):
                report.out_of_time = True
                break
            if sparsity.prune_step(model, step, total):
                # New, smaller parameters: a fresh optimizer at the same point of the schedule.
                cast(model)
                opt = make_optimizer([*model.parameters(), *objective.parameters()], cfg)
                sched = make_scheduler(opt, factor, start=step)
                good = snapshot(model)
            inputs, labels = split_batch(batch)
            with mixed:
                loss, parts = objective.loss(model, cast(inputs), labels)
            if not ranks.all_finite(loss):
                report.stopped_early = f"non-finite loss at epoch {epoch + 1}, step {step}"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            ranks.average_gradients_(opt)
            sparsity.after_backward()
            if cfg.max_grad_norm is not None:
                params = [p for group in opt.param_groups for p in group["params"]]
                nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            sched.step()
            sparsity.after_step()
            for name, value in {"train": loss, **parts}.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            progress.update(float(loss.detach()))
            step += 1
            report.steps = step
        if report.stopped_early:
            restore_(model, good)
            if ranks.is_main:
                log.warning("fine-tuning stopped: %s; weights of the last good epoch kept",
                            report.stopped_early)  # fmt: skip
            break
        if sums:  # not an epoch the time budget ended before its first step
            entry = _epoch_entry(model, epoch, sums, progress.done, sched, objective, sparsity,
                                 ranks, eval_data)  # fmt: skip
            report.history.append(entry)
            report.epochs = epoch + 1
            progress.epoch_end(entry)
        if report.out_of_time:
            if ranks.is_main:
                log.info("the %g-minute budget is spent: stopped after %d steps in epoch %d",
                         cfg.minutes, step, epoch + 1)  # fmt: skip
            break
    report.seconds = time.perf_counter() - progress.start


def _epoch_entry(
    model: nn.Module,
    epoch: int,
    sums: dict[str, float],
    batches: int,
    sched: Any,
    objective: Any,
    sparsity: SparsityKeeper,
    ranks: DataParallel,
    eval_data: Iterable[Any] | None,
) -> dict[str, Any]:
    losses = ranks.mean({f"{name}_loss": v / max(batches, 1) for name, v in sums.items()})
    entry: dict[str, Any] = {"epoch": epoch + 1, "train_loss": losses.pop("train_loss"),
                             "lr": sched.get_last_lr()[0], **losses}  # fmt: skip
    ranks.average_buffers_(model)
    if eval_data is not None:
        measured = top1_accuracy(model, eval_data)
        entry["eval_accuracy"] = measured[0] if measured else None
        entry.update(objective.evaluate(model, eval_data))
    if (fraction := sparsity.sparsity()) is not None:
        entry["sparsity"] = fraction
    return entry


def _check_data(data: Any) -> None:
    if not isinstance(data, Sized) or len(data) == 0:
        raise PrunekitError(
            "data: fine-tuning needs a re-iterable collection of batches with a length (a list or "
            f"a DataLoader); got {type(data).__name__}"
        )


@contextlib.contextmanager
def _objective(
    model: nn.Module, data: Any, cfg: FinetuneConfig, teacher: nn.Module | None, loss_fn: Any
) -> Iterator[Any]:
    """The step's loss: the task's, or with a teacher the one ``distill_`` uses too."""
    if teacher is None:
        yield TaskLoss(loss_fn)
        return
    # Imported here: prunekit.distill imports this module.
    from prunekit.distill.step import teaching

    with teaching(teacher, model, cfg, data, loss_fn) as distiller:
        yield distiller


def _projections(objective: Any, pairs: list[str]) -> list[str]:
    projections = getattr(objective, "projections", {})
    return [f"{pairs[int(i)]}: {p.in_features}→{p.out_features}" for i, p in projections.items()]


def autocast(precision: str, model: nn.Module) -> contextlib.AbstractContextManager[Any]:
    """The context a training step's forward passes and loss run in for ``precision`` (see
    :class:`FinetuneConfig`): ``torch.autocast`` to bfloat16 on the model's device, or nothing.
    A model already in a low-precision dtype trains as it is."""
    param = next(model.parameters(), None)
    device = "cpu" if param is None else param.device.type
    if precision == "auto":
        precision = "bf16" if fast_bf16(device) else "fp32"
    if precision == "fp32" or param is None or param.dtype != torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=torch.bfloat16)


def fast_bf16(device: str) -> bool:
    """Whether ``device`` ("cpu", "cuda") multiplies bfloat16 natively: what
    ``precision="auto"`` trains in bf16 on."""
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    # AMX tiles multiply bfloat16 natively; without them oneDNN emulates it (torch has no
    # public query, hence the private one, read defensively).
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return device == "cpu" and amx is not None and bool(amx())


@contextlib.contextmanager
def _channels_last(model: nn.Module) -> Iterator[Any]:
    """Convolutions train faster in channels_last on CPUs (oneDNN); yields the cast applied to
    the inputs (and to layers rebuilt mid-training); the model is contiguous again on exit."""
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        yield lambda x: x
        return

    def cast(x: Any) -> Any:
        if isinstance(x, nn.Module):
            return x.to(memory_format=torch.channels_last)
        if isinstance(x, torch.Tensor) and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    cast(model)
    try:
        yield cast
    finally:
        model.to(memory_format=torch.contiguous_format)


def teacher_copy(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` to teach its pruned self."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
