"""The weight-sharing config: pure, validated data."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from prunekit.config import BaseConfig
from prunekit.targets import check_layer_bits

MIN_BITS, MAX_BITS = 1, 8


class KMeansConfig(BaseConfig):
    """K-means weight sharing (Deep Compression, Han et al. 2016).

    bits: each layer's non-zero weights share ``2**bits`` values (1..8).
    conv_bits: bits for convolutions (``nn.Conv1d/2d/3d``), which tolerate less sharing than
        fully connected layers (Han et al. used 8 for convolutions, 5 for the rest); ``None``
        means ``bits``.
    layer_bits: ``{selector: bits}``, selectors in the forms of ``targets``; the first matching
        selector wins over ``conv_bits`` and ``bits``. Each layer's codebook and indices are
        stored at its own width (``prunekit.auto.search_bits`` picks them under a size budget).
    init: where the centroids start: ``"linear"`` (evenly over [min, max] of the non-zero
        weights, which keeps the rare large weights represented; best in Han et al.),
        ``"kmeans++"`` or ``"random"``.
    targets: layers to share: class names, exact module names or ``"re:<regex>"``; ``None``
        means every ``nn.Linear``, ``nn.Conv1d/2d/3d`` and transformers' ``Conv1D``.
    ignore: layers to leave alone, in the same forms.
    seed: for the ``kmeans++`` and ``random`` initialisations.
    max_iter: k-means iterations at most, per layer.
    """

    bits: int = 5
    conv_bits: int | None = None
    layer_bits: dict[str, int] = Field(default_factory=dict)
    init: Literal["linear", "kmeans++", "random"] = "linear"
    targets: list[str] | None = None
    ignore: list[str] = Field(default_factory=list)
    seed: int = 0
    max_iter: int = Field(300, ge=1)

    @field_validator("bits", "conv_bits")
    @classmethod
    def _bits_in_range(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and not MIN_BITS <= v <= MAX_BITS:
            raise ValueError(
                f"{info.field_name} must be in {MIN_BITS}..{MAX_BITS} (2 to 256 shared values "
                f"per layer); got {v}"
            )
        return v

    @field_validator("layer_bits")
    @classmethod
    def _layer_bits_in_range(cls, v: dict[str, int]) -> dict[str, int]:
        return check_layer_bits(v, MIN_BITS, MAX_BITS, "shared values per layer: 2 to 256")

    def bits_for(self, is_conv: bool) -> int:
        """The bits a layer gets without ``layer_bits``: ``conv_bits`` for convolutions when
        set, else ``bits``."""
        return self.conv_bits if is_conv and self.conv_bits is not None else self.bits
