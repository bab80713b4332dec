"""The teacher/student step: the loss ``finetune_`` trains on when it is given a teacher
(``finetune_(teacher=…)`` and ``distill_`` alike).

``Distiller.prepare`` checks one batch before anything trains (labels present when the task
loss is weighted, outputs of matching shapes, hidden modules that exist and line up) and builds
the width projections. ``Distiller.loss`` then gives each step's loss and its parts; hooks live
for one forward only, and the projections stay in the distiller, never on the student.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.calibrate import LossFn, calibration_forward, token_mask
from prunekit.data.batches import first_batch, split_batch
from prunekit.distill.hidden import Pair, Tap, capturing, make_projections, resolve_pairs
from prunekit.distill.losses import mean_pool, output_loss, real_positions, row_loss
from prunekit.errors import PrunekitError
from prunekit.measure._common import evaluating
from prunekit.train.config import TrainingSettings
from prunekit.train.losses import forward_with_loss


def model_output(out: Any, role: str) -> tuple[torch.Tensor, bool]:
    """The tensor a forward returned and whether it is token states: logits (a tensor,
    ``.logits``, a tuple's first item), else an encoder's ``last_hidden_state`` ``[B, T, H]``."""
    if isinstance(out, torch.Tensor):
        return out, False
    for key, states in (("logits", False), ("last_hidden_state", True)):
        value = out.get(key) if isinstance(out, Mapping) else getattr(out, key, None)
        if isinstance(value, torch.Tensor):
            return value, states
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0], False
    raise PrunekitError(
        f"{role}: distillation needs a tensor, .logits or .last_hidden_state from the model; "
        f"got {type(out).__name__}"
    )


class Distiller:
    """The distillation objective of one run (see ``FinetuneConfig``): the teacher, the hidden
    pairs and their projections; :func:`teaching` builds it for ``finetune_``."""

    def __init__(
        self, teacher: nn.Module, config: TrainingSettings, loss_fn: LossFn | None = None
    ) -> None:
        self.teacher, self.config, self.loss_fn = teacher, config, loss_fn
        self.pairs: list[Pair] = []
        self.projections = nn.ModuleDict()
        self.pooled = False  # the outputs are token states, compared as sentence embeddings

    @property
    def needs_labels(self) -> bool:
        return self.config.alpha < 1.0

    def prepare(self, student: nn.Module, batch: Any) -> None:
        """Check ``batch`` (the first of the data) and both models before training; resolve the
        hidden pairs and build their projections. Runs both in eval mode without gradients."""
        inputs, labels = split_batch(batch)
        alpha = self.config.alpha
        if self.needs_labels and labels is None:
            raise PrunekitError(
                f"data: with alpha={alpha:g} the task loss has weight {1 - alpha:g} and needs "
                f"labels, but the batches carry none; pass (inputs, labels) batches or dicts with "
                f"'labels', or set alpha=1 for pure distillation"
            )
        self.pairs = resolve_pairs(student, self.teacher, self.config, inputs)
        with evaluating(student), torch.no_grad():
            s_out, s_states, s_feats = _run(student, [s for s, _ in self.pairs], inputs, "student")
        t_out, t_states, t_feats = self._teacher(inputs)
        if s_out.shape != t_out.shape or s_states != t_states:
            raise PrunekitError(
                f"teacher: its output has shape {list(t_out.shape)} but the student's has "
                f"{list(s_out.shape)}; distillation matches outputs of the same shape (the same "
                f"classes, or the same embedding width)"
            )
        if t_states and self.config.output_loss == "kl":
            raise PrunekitError(
                f"output_loss: 'kl' needs logits, but the models return token states "
                f"{list(t_out.shape)} (an encoder without a task head); use output_loss='cosine' "
                f"or 'mse' to match their sentence embeddings"
            )
        if t_states and self.needs_labels:
            raise PrunekitError(
                f"alpha: {alpha:g} weights a task loss on logits, but the models return token "
                f"states {list(t_out.shape)}; set alpha=1"
            )
        self.pooled = t_states
        self.projections = make_projections(self.pairs, s_feats, t_feats)

    def parameters(self) -> Iterator[nn.Parameter]:
        """The projections' weights: they train with the student."""
        return self.projections.parameters()

    def loss(
        self, model: nn.Module, inputs: Any, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step: ``alpha·soft + (1−alpha)·task + hidden_weight·hidden`` and its parts."""
        cfg = self.config
        mask = token_mask(inputs)
        t_out, _, t_feats = self._teacher(inputs)
        taps = [s for s, _ in self.pairs]
        with capturing(model, taps) as s_feats:
            if self.needs_labels:
                s_out, task = forward_with_loss(model, inputs, labels, self.loss_fn)
            else:
                s_out, _ = model_output(calibration_forward(model, inputs), "student")
        soft = output_loss(s_out, t_out, cfg.output_loss, cfg.temperature, mask, self.pooled)
        parts = {"soft": soft}
        loss = cfg.alpha * soft
        if self.needs_labels:
            parts["task"] = task
            loss = loss + (1.0 - cfg.alpha) * task
        if self.pairs:
            parts["hidden"] = self._hidden(s_feats, t_feats, mask)
            loss = loss + cfg.hidden_weight * parts["hidden"]
        return loss, parts

    def evaluate(self, model: nn.Module, data: Iterable[Any]) -> dict[str, float]:
        """How close the student is to the teacher on ``data``: ``eval_agreement`` (fraction of
        positions with the same arg-max logit) or, for encoders, ``eval_fidelity`` (mean cosine
        of the sentence embeddings)."""
        same = total = 0
        cosine = 0.0
        with evaluating(model), torch.no_grad():
            for batch in data:
                inputs, _ = split_batch(batch)
                mask = token_mask(inputs)
                s_out, _ = model_output(calibration_forward(model, inputs), "student")
                t_out, _, _ = self._teacher(inputs)
                if self.pooled:
                    s_emb, t_emb = (F.normalize(mean_pool(x, mask), dim=-1) for x in (s_out, t_out))
                    cosine += float((s_emb * t_emb).sum())
                    total += s_emb.shape[0]
                else:
                    agree = s_out.argmax(-1) == t_out.argmax(-1)
                    if mask is not None and mask.shape == agree.shape:
                        agree = agree[mask]  # padding positions predict nothing
                    same += int(agree.sum())
                    total += agree.numel()
        if total == 0:
            return {}
        key = "eval_fidelity" if self.pooled else "eval_agreement"
        return {key: (cosine if self.pooled else same) / total}

    def _hidden(
        self, student: dict[Tap, torch.Tensor], teacher: dict[Tap, torch.Tensor], mask: Any
    ) -> torch.Tensor:
        terms = []
        for i, (s_tap, t_tap) in enumerate(self.pairs):
            s = real_positions(student[s_tap], mask)
            t = real_positions(teacher[t_tap], mask)
            if str(i) in self.projections:
                s = self.projections[str(i)](s)
            terms.append(row_loss(s, t, self.config.hidden_loss))
        return torch.stack(terms).mean()

    def _teacher(self, inputs: Any) -> tuple[torch.Tensor, bool, dict[Tap, torch.Tensor]]:
        with evaluating(self.teacher), torch.no_grad():
            return _run(self.teacher, [t for _, t in self.pairs], inputs, "teacher")


@contextmanager
def teaching(
    teacher: nn.Module,
    student: nn.Module,
    config: TrainingSettings,
    data: Iterable[Any],
    loss_fn: LossFn | None = None,
) -> Iterator[Distiller]:
    """A prepared :class:`Distiller` for ``student`` (checked on the first batch of ``data``),
    with ``teacher`` in eval mode and frozen inside; its modes and ``requires_grad`` flags are
    put back on exit."""
    shared = {id(p) for p in teacher.parameters()} & {id(p) for p in student.parameters()}
    if shared:
        # Freezing the teacher would freeze these in the student too.
        raise PrunekitError(
            f"teacher: shares {len(shared)} parameter tensors with the student; pass a copy "
            f"(copy.deepcopy or prunekit.teacher_copy)"
        )
    modes = [(m, m.training) for m in teacher.modules()]
    flags = [(p, p.requires_grad) for p in teacher.parameters()]
    teacher.eval().requires_grad_(False)
    try:
        distiller = Distiller(teacher, config, loss_fn)
        distiller.prepare(student, first_batch(data))
        yield distiller
    finally:
        for module, training in modes:
            module.training = training
        for p, requires_grad in flags:
            p.requires_grad_(requires_grad)


def _run(
    model: nn.Module, taps: list[Tap], inputs: Any, role: str
) -> tuple[torch.Tensor, bool, dict[Tap, torch.Tensor]]:
    """One forward: the output tensor, whether it is token states, the tapped states."""
    with capturing(model, taps) as feats:
        out, states = model_output(calibration_forward(model, inputs), role)
    return out, states, feats
