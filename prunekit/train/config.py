"""The one fine-tuning config: how ``finetune_`` trains, and how a teacher, if given, teaches.

Every training entry point reads it: ``finetune_`` (its keywords map onto these fields),
``distill_`` (``DistillConfig`` is this config), recipe steps, ``auto_compress`` and the built-in
models' training recipes.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from prunekit.config import BaseConfig
from prunekit.errors import PrunekitError, quote

_PAIR_RE = re.compile(r"^\s*([^=\s]+)\s*=\s*([^=\s]+)\s*$")


class TrainingSettings(BaseConfig):
    """The fields of :class:`FinetuneConfig` except ``epochs``, ``minutes`` and ``seed``: what a
    step that trains as part of another verb (``prune`` with ``epochs``) shares with it, while
    the length of the run and the seed are that verb's own."""

    lr: float = Field(3e-3, gt=0)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr_schedule: Literal["cosine", "constant", "linear"] = "cosine"
    warmup: float = Field(0.05, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float | None = Field(None, gt=0)
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.5, ge=0.0, le=1.0)
    output_loss: Literal["kl", "mse", "cosine"] = "kl"
    hidden: list[str] | Literal["auto"] | None = None
    hidden_loss: Literal["mse", "normalized-mse", "cosine"] = "mse"
    hidden_weight: float = Field(1.0, ge=0.0)

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


class FinetuneConfig(TrainingSettings):
    """How ``prunekit.finetune_`` trains: pure, validated data, every field defaulted.

    epochs: passes over the data (≥ 1).
    minutes: a wall-clock budget (> 0), or None. Training stops once it is spent, mid-epoch if
        need be (and after ``epochs`` at most), and the warm-up and ``lr_schedule`` follow the
        clock: a step sits at the later of its place among the steps and the time spent, so the
        schedule ends at the deadline however fast the steps run. A step is not started when
        the average step so far would end past the deadline.
    lr: the peak learning rate (> 0).
    optimizer: ``"adamw"`` (decoupled weight decay), ``"adam"`` (weight decay as an L2 term in
        the gradient) or ``"sgd"`` (momentum 0.9, Nesterov).
    lr_schedule: the learning rate after warm-up: ``"cosine"`` (half a cosine from ``lr`` down
        to 0 at the last step), ``"constant"`` or ``"linear"`` (straight down to 0). Named
        ``lr_schedule`` because ``schedule`` is the pruning schedule (oneshot, iterative, agp).
    warmup: the fraction of all training steps, in [0, 1), over which the learning rate rises
        linearly from ``lr/k`` to ``lr`` (k the warm-up steps) before the schedule starts; a
        fraction, so the same value fits any data size and number of epochs.
    weight_decay: ≥ 0; pruned weights stay exactly zero whatever its value.
    max_grad_norm: clip the gradients' global L2 norm to this (None: no clipping).
    precision: ``"fp32"``, or ``"bf16"``: the forward passes and the loss run under
        ``torch.autocast`` in bfloat16 while weights, gradients and the optimizer's state stay
        fp32 (mixed precision). On 2 shared cores of a Xeon with AMX a MiniLM distillation step
        ran 1.67× faster than in fp32 and a LeNet-5 step 1.38×, at the same losses
        (``python -m bench.precision``, bench/results/precision.md); on CPUs without AMX bf16 is
        expected to be slower. ``"auto"``: bf16 on CPUs with AMX and on GPUs that support
        bfloat16, else fp32.
    seed: for anything random (the projections of hidden-state matching, dropout); the data's
        order is the data loader's.

    The defaults (AdamW at 3e-3, 5 % warm-up, cosine) are measured against a plain masked Adam
    loop at a constant 1e-3 for the same epochs: ``python -m bench.finetune_defaults``.

    Knowledge distillation, used when a teacher is given (``finetune_(teacher=…)``,
    ``distill_``): the loss of a step is ``alpha·output + (1−alpha)·task +
    hidden_weight·hidden`` (Hinton et al. 2015; FitNets, Romero et al. 2015; TinyBERT, Jiao et
    al. 2020).

    temperature: softmax temperature of the soft targets (``output_loss="kl"``); the KL term is
        scaled by T² so its gradients keep their size as T grows.
    alpha: weight of the output-matching term in [0, 1]; the task loss (cross-entropy on the
        labels) gets ``1 − alpha``. With ``alpha=1`` the batches need no labels.
    output_loss: ``"kl"``: soft-target KL on logits. ``"mse"`` / ``"cosine"``: on logits, or,
        for encoders that return token states ``[B, T, H]``, on the mean-pooled sentence
        embeddings (``"cosine"`` is 1 − cos, scale-free).
    hidden: intermediate states to match as well. ``None``: none. A list of
        ``"student_module=teacher_module"`` pairs (outputs of those modules). ``"auto"``: for
        transformers, student block i ↔ the evenly spaced teacher block ``round((i+1)·T/S)−1``;
        for other nets, the input of the last linear layer. When widths differ a learned linear
        projection maps the student's to the teacher's width; it trains with the student and
        is discarded.
    hidden_loss: ``"mse"``, ``"normalized-mse"`` (divided by the teacher's mean square, so that
        every pair weighs alike whatever its scale: SquareHead) or ``"cosine"`` (1 − cos along
        the width), averaged over positions (padding left out) and over pairs.
    hidden_weight: weight of the hidden-state term (≥ 0).
    """

    epochs: int = Field(1, ge=1)
    minutes: float | None = Field(None, gt=0)
    seed: int = 0


def resolve_config(
    config: FinetuneConfig | None, keywords: dict[str, Any], cls: type[FinetuneConfig]
) -> FinetuneConfig:
    """``config`` (``cls()`` when None) with ``keywords`` put in its fields, validated.

    A keyword that is no field is a TypeError naming it; a bad value a PrunekitError naming the
    field and the value."""
    if config is None:
        config = cls()
    elif not isinstance(config, FinetuneConfig):
        raise TypeError(
            f"config must be a FinetuneConfig; got {type(config).__name__} (pass epochs, lr… as "
            f"keywords or in FinetuneConfig(...))"
        )
    unknown = [k for k in keywords if k not in type(config).model_fields]
    if unknown:
        raise TypeError(
            f"finetune_ got an unexpected keyword argument {unknown[0]!r}; the training fields "
            f"are: {', '.join(type(config).model_fields)}"
        )
    if not keywords:
        return config
    try:
        return type(config)(**{**config.model_dump(), **keywords})
    except ValidationError as err:
        raise PrunekitError(field_error(err)) from None


_BOUNDS = {"greater_than": ">", "greater_than_equal": "≥", "less_than": "<", "less_than_equal": "≤"}


def field_error(err: ValidationError) -> str:
    """The first error as one line naming the field and the value: "lr must be > 0; got -1.0"."""
    first = err.errors()[0]
    field = ".".join(str(x) for x in first["loc"])
    kind, ctx = first["type"], first.get("ctx", {})
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        rule = f"must be {_BOUNDS[kind]} {bound}"
    elif kind == "literal_error":
        rule = f"must be one of {ctx['expected']}"
    else:
        rule = "is invalid: " + str(first["msg"]).removeprefix("Value error, ")
    return f"{field} {rule}; got {quote(first['input'])}"
