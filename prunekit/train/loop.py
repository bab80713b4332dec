"""One readable fine-tuning loop: masks stay applied, optionally prunes on a schedule.

Per step: (maybe prune to the schedule's sparsity) → forward → loss (task, or mixed with a
teacher's soft targets) → backward → (scorers observe gradients) → zero pruned gradients → clip
→ optimizer step → LR schedule → re-apply masks. A weight that is zero in a prunable layer when
training starts, or that a schedule prunes, stays exactly zero; when the loop ends the masks are
simply dropped: they live only in the weights' zeros, so nothing (hooks, reparametrizations)
lingers on the model.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Iterable, Sized
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from prunekit.calibrate import LossFn
from prunekit.config import PruneConfig
from prunekit.data.batches import first_batch, run_model, split_batch
from prunekit.errors import PrunekitError
from prunekit.measure.accuracy import top1_accuracy
from prunekit.prune.pruner import Pruner
from prunekit.prune.schedule import AGP, Schedule, make_schedule
from prunekit.prune.structured.gradual import StructuredSteps
from prunekit.surgery.masks import (
    Masks,
    apply_masks_,
    mask_grads_,
    masks_from_zeros,
    restore_,
    snapshot,
)
from prunekit.surgery.transaction import Transaction
from prunekit.targets import select_layers
from prunekit.train.distributed import data_parallel
from prunekit.train.losses import distillation_loss, forward_with_loss

log = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "sgd")
# Where no progress bar is drawn (output to a file), a line at most this often within an epoch.
PROGRESS_SECONDS = 60.0


class DistillObjective(Protocol):
    """A teacher-driven objective that replaces the loop's loss (``prunekit.distill`` builds
    one): ``loss`` gives a step's loss and its named parts, ``parameters`` its own trainable
    tensors (they join the optimizer), ``evaluate`` per-epoch measurements on ``eval_data``."""

    def loss(
        self, model: nn.Module, inputs: Any, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def parameters(self) -> Iterable[nn.Parameter]: ...

    def evaluate(self, model: nn.Module, data: Iterable[Any]) -> dict[str, float]: ...


@dataclass
class FinetuneReport:
    """What a fine-tuning run did: per-epoch loss/accuracy/sparsity, and how it ended."""

    epochs: int
    steps: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    pruning: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: str | None = None

    @property
    def final_accuracy(self) -> float | None:
        return self.history[-1].get("eval_accuracy") if self.history else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "steps": self.steps,
            "seconds": self.seconds,
            "history": self.history,
            "pruning": self.pruning,
            "stopped_early": self.stopped_early,
        }


def _check_args(data: Any, epochs: int, lr: float, optimizer: str, alpha: float) -> int:
    if not isinstance(epochs, int) or epochs < 1:
        raise PrunekitError(f"epochs must be a whole number ≥ 1; got {epochs!r}")
    if not lr > 0:
        raise PrunekitError(f"lr must be > 0; got {lr!r}")
    if optimizer not in OPTIMIZERS:
        raise PrunekitError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {optimizer!r}")
    if not 0.0 <= alpha <= 1.0:
        raise PrunekitError(f"alpha must be in [0, 1]; got {alpha!r}")
    if not isinstance(data, Sized) or len(data) == 0:
        raise PrunekitError(
            "data: fine-tuning needs a re-iterable collection of batches with a length (a list or "
            f"a DataLoader); got {type(data).__name__}"
        )
    return len(data)


def _make_optimizer(
    model: nn.Module, name: str, lr: float, wd: float, extra: Iterable[nn.Parameter] = ()
) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad] + list(extra)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd, nesterov=True)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


def _warmup_cosine(total_steps: int) -> Any:
    warmup = min(100, max(total_steps // 20, 1))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total_steps - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _to_channels_last(inputs: Any) -> Any:
    if isinstance(inputs, torch.Tensor) and inputs.dim() == 4:
        return inputs.contiguous(memory_format=torch.channels_last)
    return inputs


def finetune_(
    model: nn.Module,
    data: Iterable[Any],
    epochs: int = 1,
    lr: float = 1e-3,
    *,
    teacher: nn.Module | None = None,
    temperature: float = 4.0,
    alpha: float = 0.5,
    eval_data: Iterable[Any] | None = None,
    optimizer: str = "adamw",
    weight_decay: float = 0.0,
    max_grad_norm: float | None = None,
    loss_fn: LossFn | None = None,
    prune: PruneConfig | None = None,
    schedule: str | Schedule | None = None,
    keep_sparsity: bool = True,
    example_inputs: Any = None,
    progress: bool = True,
    seed: int = 0,
    distiller: DistillObjective | None = None,
) -> FinetuneReport:
    """Train ``model`` in place on ``data`` for ``epochs``, keeping pruned weights at zero.

    data: a re-iterable collection of batches with a length (a list or DataLoader).
    teacher: if given, the loss is ``alpha·KD + (1−alpha)·task`` with soft targets at
        ``temperature`` (Hinton 2015); the teacher runs in eval mode without gradients.
    prune + schedule: prune while training — ``"oneshot"`` (before the first step),
        ``"iterative"``/``Iterative(rounds=k)`` (k rounds of prune→train, Han et al. 2015), or
        ``"agp"``/``AGP(...)`` (cubic gradual pruning, Zhu & Gupta 2017). With a structured
        pattern (``channel``/``head``) each step rebuilds the layers smaller and training goes
        on with the smaller model (Molchanov et al. 2019); ``example_inputs`` are traced
        (default: the first batch's inputs).
    keep_sparsity: weights already zero in the prunable layers stay zero.
    eval_data: labelled batches; accuracy is measured after each epoch.
    distiller: replaces the loss (``prunekit.distill_`` passes one; then ``teacher``,
        ``temperature``, ``alpha`` and ``loss_fn`` are the distiller's own); the history gets
        the mean of each part of its loss per epoch (``task_loss``, ``soft_loss``…).

    Stops early if the loss becomes NaN/inf, putting back the weights of the last good epoch.
    If training raises, the model is restored to its state before the call.
    """
    _check_args(data, epochs, lr, optimizer, alpha)
    if distiller is not None and teacher is not None:
        raise PrunekitError("teacher: pass it to the distiller, not to finetune_ as well")
    extra = list(distiller.parameters()) if distiller is not None else []
    # Under torchrun: this rank's share of the batches, from rank 0's weights (see distributed).
    ranks = data_parallel(model)
    ranks.broadcast_(model, extra)
    train = ranks.shard(data)
    steps_per_epoch = len(train)
    structured = None
    if prune is not None and prune.structured:
        if example_inputs is None:
            example_inputs, _ = split_batch(first_batch(data))
        structured = StructuredSteps(prune, example_inputs)
    pruner = Pruner(model, prune) if prune is not None and structured is None else None
    plan = make_schedule(schedule) if prune is not None else None
    if prune is not None and prune.needs_training and not isinstance(plan, AGP):
        raise PrunekitError(
            f"schedule: {pruner.method.name!r} learns its scores while training and needs a "
            f"gradual schedule; got {type(plan).__name__}: pass schedule='agp'"
        )
    layers = pruner.layers if pruner else _prunable_or_empty(model)
    masks: Masks = masks_from_zeros(layers) if keep_sparsity else {}

    torch.manual_seed(seed)
    total_steps = epochs * steps_per_epoch
    lr_factor = _warmup_cosine(total_steps)
    opt = _make_optimizer(model, optimizer, lr, weight_decay, extra)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    if teacher is not None:
        teacher.eval()

    was_training = model.training
    channels_last = _has_conv2d(model)
    report = FinetuneReport(epochs=0, steps=0, seconds=0.0)
    start = time.perf_counter()
    step = 0
    # Training writes every weight: all values are copied so a failure puts them back, with
    # any layers a structured schedule rebuilt.
    tx = Transaction(model)
    tx.protect_all()
    try:
        if channels_last:
            model.to(memory_format=torch.channels_last)
        for epoch in range(epochs):
            good = snapshot(model)
            model.train()
            total_loss, batches = 0.0, 0
            part_sums: dict[str, float] = {}
            bar = tqdm(
                train,
                desc=f"epoch {epoch + 1}/{epochs}",
                # None: off when stderr is no terminal
                disable=None if progress and ranks.is_main else True,
                leave=False,
            )
            said = time.perf_counter()
            for batch in bar:
                if ranks.is_main and time.perf_counter() - said > PROGRESS_SECONDS:
                    said = time.perf_counter()
                    log.info("epoch %d/%d: batch %d/%d, loss %.4f", epoch + 1, epochs, batches,
                             steps_per_epoch, total_loss / max(batches, 1))  # fmt: skip
                if structured is not None and plan is not None:
                    target = plan.target(step, total_steps, prune.schedule_final)
                    if target and structured.step(model, target, data, loss_fn) is not None:
                        # New, smaller parameters: a fresh optimizer at the same point of the
                        # learning-rate schedule, and the masks of the new layers.
                        report.pruning.append({"step": step, **structured.reports[-1].summary()})
                        if channels_last:
                            model.to(memory_format=torch.channels_last)
                        opt = _make_optimizer(model, optimizer, lr, weight_decay, extra)
                        sched = torch.optim.lr_scheduler.LambdaLR(
                            opt, lambda s, at=step: lr_factor(s + at)
                        )
                        layers = _prunable_or_empty(model)
                        masks = masks_from_zeros(layers) if keep_sparsity else {}
                        good = snapshot(model)
                elif pruner is not None and plan is not None:
                    target = plan.target(step, total_steps, prune.schedule_final)
                    if target:
                        if pruner.needs_observations:
                            pruner.calibrate(data, loss_fn, getattr(prune, "num_samples", None))
                        masks = pruner.prune_to(target)
                        report.pruning.append({"step": step, "sparsity": target})
                inputs, labels = split_batch(batch)
                if channels_last:
                    inputs = _to_channels_last(inputs)
                if distiller is not None:
                    loss, parts = distiller.loss(model, inputs, labels)
                    for name, value in parts.items():
                        part_sums[name] = part_sums.get(name, 0.0) + float(value.detach())
                else:
                    logits, loss = forward_with_loss(model, inputs, labels, loss_fn)
                if teacher is not None:
                    with torch.no_grad():
                        teacher_logits = run_model(teacher, inputs)
                    kd = distillation_loss(logits, teacher_logits, temperature)
                    loss = alpha * kd + (1.0 - alpha) * loss
                if not ranks.all_finite(loss):
                    report.stopped_early = f"non-finite loss at epoch {epoch + 1}, step {step}"
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                ranks.average_gradients_(opt)
                if pruner is not None:
                    pruner.observe()
                mask_grads_(layers, masks)
                if max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
                opt.step()
                sched.step()
                apply_masks_(layers, masks)
                total_loss += float(loss.detach())
                batches += 1
                step += 1
                bar.set_postfix(loss=f"{total_loss / batches:.4f}")
            if report.stopped_early:
                restore_(model, good)
                if ranks.is_main:
                    log.warning(
                        "fine-tuning stopped: %s; weights of the last good epoch kept",
                        report.stopped_early,
                    )
                break
            entry: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": total_loss / max(batches, 1),
                "lr": sched.get_last_lr()[0],
                **{f"{name}_loss": v / max(batches, 1) for name, v in part_sums.items()},
            }
            entry.update(ranks.mean({k: v for k, v in entry.items() if k.endswith("_loss")}))
            ranks.average_buffers_(model)
            if eval_data is not None:
                measured = top1_accuracy(model, eval_data)
                entry["eval_accuracy"] = measured[0] if measured else None
                if distiller is not None:
                    entry.update(distiller.evaluate(model, eval_data))
            if layers:
                entry["sparsity"] = _sparsity(layers)
            report.history.append(entry)
            report.epochs = epoch + 1
            if ranks.is_main:
                log.info("epoch %d/%d: %s (%.0f s)", epoch + 1, epochs, _figures(entry),
                         time.perf_counter() - start)  # fmt: skip
    except BaseException:
        tx.rollback()
        raise
    finally:
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
        model.train(was_training)
    report.steps = step
    report.seconds = time.perf_counter() - start
    return report


def _figures(entry: dict[str, Any]) -> str:
    # "train_loss 0.1234, eval_accuracy 0.9722, sparsity 0.8": one short line per epoch.
    return ", ".join(
        f"{k} {v:.4g}" for k, v in entry.items() if k != "epoch" and isinstance(v, float)
    )


def _prunable_or_empty(model: nn.Module) -> dict[str, nn.Module]:
    try:
        return select_layers(model)
    except PrunekitError:
        return {}


def _sparsity(layers: dict[str, nn.Module]) -> float:
    zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
    return zeros / sum(m.weight.numel() for m in layers.values())


def teacher_copy(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` to teach its pruned self."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
