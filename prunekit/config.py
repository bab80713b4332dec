"""Configs are pure, validated data: one pydantic model per method, every field defaulted.

The shared vocabulary (API.md): ``sparsity`` (fraction removed, in [0, 1)), ``pattern``
(``unstructured`` or ``N:M``), ``scope`` (``layer``/``global``), ``targets``, ``ignore``, ``seed``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prunekit.errors import quote

# Items a list or table field of a config takes (layer names, per-layer sparsities): far more
# than any model's layers, far fewer than make an error message megabytes long.
MAX_ITEMS = 10_000


class BaseConfig(BaseModel):
    """Base of every config: unknown fields are errors, values are checked, instances frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    method: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _bounded_input(cls, data: Any) -> Any:
        # pydantic reports one error per bad item: a 100,000-item list made an 18 MB message.
        if isinstance(data, dict):
            for key, value in data.items():
                if isinstance(value, list | tuple | dict | set) and len(value) > MAX_ITEMS:
                    raise ValueError(
                        f"{quote(key)} has {len(value):,} items; at most {MAX_ITEMS:,}"
                    )
        return data

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, for reports, manifests and recipes."""
        return self.model_dump(mode="json")


@dataclass(frozen=True)
class NM:
    """An N:M pattern: exactly ``n`` zeros in every group of ``m`` consecutive input weights."""

    n: int
    m: int

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"


_NM_RE = re.compile(r"^(\d+):(\d+)$")
UNSTRUCTURED = "unstructured"
STRUCTURED_PATTERNS = ("channel", "head")
ALL_PATTERNS = (UNSTRUCTURED, "N:M", *STRUCTURED_PATTERNS)


def parse_pattern(pattern: str) -> NM | None:
    """An :class:`NM` for ``"N:M"``, ``None`` for the other patterns; ValueError if unknown."""
    if pattern == UNSTRUCTURED or pattern in STRUCTURED_PATTERNS:
        return None
    match = _NM_RE.match(pattern)
    if match is None:
        raise ValueError(
            "pattern must be 'unstructured', 'N:M' such as '2:4', 'channel' or 'head'; "
            f"got {quote(pattern)}"
        )
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise ValueError(
            f"pattern {quote(pattern)}: N:M needs 0 < N < M (N zeros in every M weights); "
            f"got N={n}, M={m}"
        )
    return NM(n, m)


def pattern_kind(pattern: str) -> str:
    """``"N:M"`` for any N:M pattern, else the pattern itself (as methods declare them)."""
    return "N:M" if _NM_RE.match(pattern) else pattern


class PruneConfig(BaseConfig):
    """Fields every pruning method shares.

    sparsity: fraction of weights removed, in [0, 1). ``None`` means N/M for an N:M pattern
        and 0.5 otherwise.
    pattern: ``"unstructured"``, ``"N:M"`` (N zeros in each group of M consecutive inputs),
        ``"channel"`` (whole neurons, filters, channels and attention heads are removed and the
        layers rebuilt smaller; sparsity is the fraction of those units removed) or ``"head"``
        (attention heads only).
    scope: ``"layer"`` (each layer reaches ``sparsity``) or ``"global"`` (the targeted layers
        together do, ranked by one shared score).
    targets: layers to prune: class names, exact module names or ``"re:<regex>"``; ``None``
        means every ``nn.Linear`` and ``nn.Conv1d/2d/3d``.
    ignore: layers to leave alone, in the same forms.
    seed: for anything random.

    layer_sparsity: ``{selector: sparsity}``, selectors in the forms of ``targets``; the first
        matching selector wins and other layers use ``sparsity``. Unstructured (``scope="layer"``
        only): a matching layer loses that fraction of its weights. Structured: the groups whose
        units are a matching layer's outputs lose that fraction of their units. Under gradual
        schedules each layer's target grows with the overall one: ``layer_s · current /
        sparsity``.

    Structured patterns only:
    macs_reduction: prune until the forward pass needs this many times fewer multiply-
        accumulates (2.0: half); the fraction of units removed is searched for.
    latency_reduction: prune until the model runs this many times faster, measured in PyTorch
        on ``example_inputs`` (its batch size; conv nets channels_last): the MACs target is
        searched for by timing the shrunk model against the unpruned one. One-shot only.
    min_channels: channels every pruned layer keeps at least.
    round_to: kept channel counts are multiples of this (e.g. 8 for SIMD-friendly widths).
    verify: check the rebuilt model against the unpruned one with those units zeroed, on the
        example input, and roll back if they differ.
    reconstruct: after the shrink, refit by least squares every Conv2d/Linear whose input
        channels went, front to back, so that its output on calibration ``data`` matches the
        unpruned model's at that layer (ThiNet / He et al. 2017). Needs ``data``.
    reconstruct_samples: calibration samples read per refit layer.
    prune_hidden: (``pattern="channel"``) also narrow the channels under LayerNorm/RMSNorm: a
        transformer's residual stream (embeddings, every block's input/output projections, the
        norms, a tied LM head, the classifier's inputs) and each ConvNeXt stage's width, as one
        group each, ranked by the norms' output activations on ``data`` (or the example input).
        Not output-equivalent (the norms' statistics change): the report gives the output
        difference instead of a verified match; a Hugging Face config is rewritten to the new
        widths.
    """

    sparsity: float | None = None
    pattern: str = UNSTRUCTURED
    scope: Literal["layer", "global"] = "layer"
    targets: list[str] | None = None
    ignore: list[str] = []
    seed: int = 0
    macs_reduction: float | None = Field(None, ge=1.0)
    latency_reduction: float | None = Field(None, gt=1.0)
    layer_sparsity: dict[str, float] = {}
    min_channels: int = Field(1, ge=1)
    round_to: int = Field(1, ge=1)
    verify: bool = True
    reconstruct: bool = False
    reconstruct_samples: int = Field(256, ge=1)
    prune_hidden: bool = False

    needs_data: ClassVar[bool] = False
    needs_training: ClassVar[bool] = False
    # The patterns this method can prune to; the registry and its docs read them from here.
    patterns: ClassVar[tuple[str, ...]] = ALL_PATTERNS

    @field_validator("sparsity")
    @classmethod
    def _sparsity_in_range(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 <= v < 1.0:
            raise ValueError(f"sparsity must be in [0, 1); got {v}")
        return v

    @field_validator("pattern")
    @classmethod
    def _pattern_known(cls, v: str) -> str:
        parse_pattern(v)
        if pattern_kind(v) not in cls.patterns:
            from prunekit.registry import supporting  # the registry imports this module

            name = cls.method or cls.__name__
            raise ValueError(
                f"{name} supports pattern {' or '.join(map(repr, cls.patterns))}; got {quote(v)}"
                f" (methods for {pattern_kind(v)}: {', '.join(supporting(pattern_kind(v)))})"
            )
        return v

    @field_validator("layer_sparsity")
    @classmethod
    def _layer_sparsity_in_range(cls, v: dict[str, float]) -> dict[str, float]:
        for key, s in v.items():
            if not 0.0 <= s < 1.0:
                raise ValueError(f"layer_sparsity[{quote(key)}] must be in [0, 1); got {s}")
        return v

    @model_validator(mode="after")
    def _pattern_agrees(self) -> PruneConfig:
        if not self.structured:
            defaults = {
                "macs_reduction": None,
                "latency_reduction": None,
                "min_channels": 1,
                "round_to": 1,
                "reconstruct": False,
                "reconstruct_samples": 256,
            }
            for name, default in defaults.items():
                if getattr(self, name) != default:
                    raise ValueError(
                        f"{name} applies to structured pruning only; set pattern='channel' or "
                        f"'head', or leave {name} unset (pattern is {self.pattern!r})"
                    )
        if self.prune_hidden and (self.pattern != "channel" or self.reconstruct):
            raise ValueError(
                f"prune_hidden=True needs pattern='channel' and reconstruct=False (the refit "
                f"matches layer outputs of the unpruned width); got pattern={self.pattern!r}, "
                f"reconstruct={self.reconstruct}"
            )
        if self.latency_reduction is not None:
            both = {
                "sparsity": self.sparsity is not None,
                "macs_reduction": self.macs_reduction is not None,
                "layer_sparsity": bool(self.layer_sparsity),
            }
            if any(both.values()):
                raise ValueError(
                    f"latency_reduction decides how much to remove: leave "
                    f"{', '.join(k for k, v in both.items() if v)} unset"
                )
        nm = parse_pattern(self.pattern)
        if self.layer_sparsity and nm is not None:
            raise ValueError(
                f"layer_sparsity has no meaning for pattern {self.pattern} (every group of "
                f"{nm.m} keeps {nm.m - nm.n}); use pattern='unstructured' or leave "
                f"layer_sparsity unset"
            )
        if self.layer_sparsity and self.pattern == UNSTRUCTURED and self.scope == "global":
            raise ValueError(
                "layer_sparsity needs scope='layer' with pattern 'unstructured' (a global "
                "ranking decides each layer's share itself); got scope='global': set "
                "scope='layer' or leave layer_sparsity unset"
            )
        if nm is not None:
            if self.sparsity is not None and abs(self.sparsity - nm.n / nm.m) > 1e-9:
                implied = nm.n / nm.m
                raise ValueError(
                    f"pattern {self.pattern} removes {nm.n}/{nm.m} = {implied:g} of the weights; "
                    f"got sparsity={self.sparsity}: leave sparsity unset or set it to {implied:g}"
                )
            if self.scope == "global":
                raise ValueError(
                    f"scope='global' has no meaning for pattern {self.pattern} (every group of "
                    f"{nm.m} keeps {nm.m - nm.n}); use scope='layer'"
                )
        return self

    @property
    def structured(self) -> bool:
        """Whole units are removed and layers rebuilt smaller (``channel`` or ``head``)."""
        return self.pattern in STRUCTURED_PATTERNS

    @property
    def nm(self) -> NM | None:
        return parse_pattern(self.pattern)

    @property
    def target_sparsity(self) -> float:
        """The sparsity this config asks for, with ``None`` resolved."""
        nm = self.nm
        if nm is not None:
            return nm.n / nm.m
        return 0.5 if self.sparsity is None else self.sparsity

    @property
    def schedule_final(self) -> float:
        """Where a gradual schedule ends: the sparsity, or 1.0 (read as progress) when it is 0
        and per-layer sparsities or a MACs target say what to remove."""
        final = self.target_sparsity
        if final > 0:
            return final
        targets = self.macs_reduction, self.latency_reduction
        return 1.0 if self.layer_sparsity or any(t is not None for t in targets) else 0.0

    def with_sparsity(self, sparsity: float) -> PruneConfig:
        """A copy asking for another sparsity (used by schedules that step toward the target)."""
        return self.model_copy(update={"sparsity": sparsity})
