"""The knowledge-distillation config: the fine-tuning config, under the name of its method."""

from __future__ import annotations

from typing import ClassVar

from prunekit.train.config import FinetuneConfig


class DistillConfig(FinetuneConfig):
    """Knowledge distillation (method ``kd``): the student learns the teacher's outputs and,
    optionally, its intermediate states, on the one fine-tuning loop.

    Exactly :class:`prunekit.FinetuneConfig` (its fields, defaults and checks): the teacher's
    settings (``temperature``, ``alpha``, ``output_loss``, ``hidden``, ``hidden_loss``,
    ``hidden_weight``) beside the loop's (``epochs``, ``lr``, ``optimizer``, ``lr_schedule``,
    ``warmup``, ``weight_decay``, ``max_grad_norm``, ``seed``). ``distill_(student, teacher,
    data, config)`` and ``finetune_(student, data, config, teacher=teacher)`` train alike.
    """

    needs_data: ClassVar[bool] = True
