"""The knowledge-distillation config: pure, validated data."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from prunekit.config import BaseConfig

AUTO = "auto"
_PAIR_RE = re.compile(r"^\s*([^=\s]+)\s*=\s*([^=\s]+)\s*$")


class DistillConfig(BaseConfig):
    """Knowledge distillation: the student learns the teacher's outputs (Hinton et al. 2015) and,
    optionally, its intermediate states (FitNets, Romero et al. 2015; TinyBERT, Jiao et al. 2020).

    The loss of a step is ``alpha·output + (1−alpha)·task + hidden_weight·hidden``.

    temperature: softmax temperature of the soft targets (``output_loss="kl"``); the KL term is
        scaled by T² so its gradients keep their size as T grows.
    alpha: weight of the output-matching term in [0, 1]; the task loss (cross-entropy on the
        labels) gets ``1 − alpha``. With ``alpha=1`` the batches need no labels.
    output_loss: how the student's output is matched to the teacher's. ``"kl"``: soft-target
        KL on logits. ``"mse"`` / ``"cosine"``: on logits, or, for encoders that return token
        states ``[B, T, H]`` (no task head, e.g. ``builtin:minilm``), on the sentence embedding
        (token states mean-pooled over the attention mask): the quantity retrieval and
        embedding fidelity score, so the student learns exactly what is measured. ``"cosine"``
        is 1 − cos: scale-free, like the cosine ranking of retrieval.
    hidden: intermediate states to match as well. ``None``: none. A list of
        ``"student_module=teacher_module"`` pairs (outputs of those modules). ``"auto"``: for
        transformers, student block i ↔ the evenly spaced teacher block ``round((i+1)·T/S)−1``
        (the last blocks meet); for other nets, the input of the last linear layer (the
        features the classifier reads). When widths differ a learned linear projection maps
        the student's to the teacher's width; it trains with the student and is discarded.
    hidden_loss: ``"mse"`` or ``"cosine"`` (1 − cos along the width), averaged over positions
        (padding left out) and over pairs.
    hidden_weight: weight of the hidden-state term (≥ 0).
    epochs, lr, optimizer, weight_decay, max_grad_norm: the training loop's settings
        (``prunekit.finetune_``: warm-up then cosine learning rate; masks stay applied).
    seed: for the projections' initialisation and the training order.
    """

    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.5, ge=0.0, le=1.0)
    output_loss: Literal["kl", "mse", "cosine"] = "kl"
    hidden: list[str] | Literal["auto"] | None = None
    hidden_loss: Literal["mse", "cosine"] = "mse"
    hidden_weight: float = Field(1.0, ge=0.0)
    epochs: int = Field(1, ge=1)
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float | None = Field(None, gt=0)
    seed: int = 0

    needs_data: ClassVar[bool] = True

    @field_validator("hidden")
    @classmethod
    def _pairs_well_formed(cls, v: list[str] | str | None) -> list[str] | str | None:
        if isinstance(v, list):
            if not v:
                raise ValueError("hidden must list at least one pair, or be None or 'auto'")
            for pair in v:
                if _PAIR_RE.match(pair) is None:
                    raise ValueError(
                        f"hidden pairs are 'student_module=teacher_module' (names as in "
                        f"model.named_modules()); got {pair!r}"
                    )
        return v

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The explicit ``(student_module, teacher_module)`` pairs; empty for None and 'auto'."""
        if not isinstance(self.hidden, list):
            return []
        return [_PAIR_RE.match(p).groups() for p in self.hidden]  # type: ignore[union-attr,misc]
