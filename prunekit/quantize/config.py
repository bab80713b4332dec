"""One config per quantization method; pure, validated data (see prunekit.config.BaseConfig).

Shared vocabulary: ``bits`` (of the stored weights), ``group_size`` (weights sharing one scale
along the input dimension; -1: one per output channel), ``targets``/``ignore`` (class names,
exact module names or ``"re:<regex>"``), ``num_samples`` (calibration samples), ``seed``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from prunekit.config import BaseConfig
from prunekit.targets import check_layer_bits

# Fewer samples than this and AdaRound's per-weight choices fit noise rather than the data.
ADAROUND_MIN_SAMPLES = 32


class QuantizeConfig(BaseConfig):
    """Fields every quantization method shares.

    targets: layers to quantize; ``None`` means every ``nn.Linear`` (and transformers'
        ``Conv1D``) the method handles. Layers whose weight is tied to another module's (an LM
        head sharing the embedding) are never quantized: the tie would break.
    ignore: layers kept in floating point, in the same forms.
    """

    targets: list[str] | None = None
    ignore: list[str] = Field(default_factory=list)
    seed: int = 0

    needs_data: ClassVar[bool] = False
    needs_training: ClassVar[bool] = False


class Int8DynamicConfig(QuantizeConfig):
    """int8 weights (per output channel, symmetric) and activations quantized on the fly per
    batch, run by torch's fbgemm/x86 kernel (``quantized::linear_dynamic``); CPU only.

    min_features: layers with fewer input or output features stay fp32. Each int8 call pays a
    fixed cost (quantizing the input, waking the kernel's threads: 20–130 µs measured under
    OMP_WAIT_POLICY=PASSIVE) that a small matrix product does not earn back. Square layers
    against fp32 on a shared 2-core x86 machine (bench/quantize.py, three runs): 64 and 128
    wide 0.1–0.9× at 1–128 rows (once 1.3× at 128×128); 256 wide 0.9–1.5× at 32 rows and
    1.6–2.3× at 128; 384 wide 1.3–2.4× at 32 rows and 2.0–2.8× at 128. At a single row only
    768-wide layers ever won: int8-dynamic is for batches, not one vector at a time.
    """

    min_features: int = Field(256, ge=0)


class SmoothQuantConfig(Int8DynamicConfig):
    """SmoothQuant (Xiao et al. 2023), then int8-dynamic: per input channel ``j`` of each layer
    reading a LayerNorm/RMSNorm, ``s_j = max|X_j|^alpha / max|W_j|^(1-alpha)`` is folded into
    the norm's weight and bias (divided) and the readers' weights (multiplied), moving
    activation outliers into the per-channel int8 weights; nothing is added at run time.

    alpha: migration strength: 0 leaves the activations' range as it is, 1 moves all of it into
        the weights. 0.5 is the paper's default for most models.
    num_samples: calibration samples read from ``data`` for the activation ranges.

    Only norms whose output feeds nothing but quantized layers are smoothed (pre-norm blocks:
    LLaMA, GPT-2, OPT); a post-norm model (BERT, MiniLM) feeds its norm output into the
    residual too, so its layers stay unsmoothed and the report says why.
    """

    alpha: float = Field(0.5, ge=0, le=1)
    num_samples: int = Field(128, ge=1)

    needs_data: ClassVar[bool] = True


class Int8StaticConfig(QuantizeConfig):
    """int8 weights (per channel) and activations with ranges calibrated on ``data``; convs and
    linears with BatchNorm folded and ReLU fused, via torch.ao's FX graph mode (x86 backend).

    targets: the regions converted, as module names (exact or ``"re:"``): each must be a
        submodule that torch.fx can trace, taking one tensor. ``None``: every direct child of
        the model holding a conv or linear layer (``features``, ``classifier``…). Inside a
        region the float values are quantized once at entry and dequantized at exit.
    ignore: conv/linear layers inside the regions kept in float (names or class names).
    num_samples: calibration samples read from ``data``.

    Repairs for post-training int8 (prunekit.quantize.repairs; the default is plain min/max):
    equalize: cross-layer equalization (Nagel et al. 2019) before calibration: every pair of
        convs (or linears) joined by ReLU or pooling has channel ``i`` of the first divided by
        ``s_i`` and of the second multiplied by it, so both get the same per-channel weight
        range; exact in float. For depthwise-heavy nets (MobileNet-style).
    bias_correction: after conversion, each int8 layer's bias is shifted by the mean difference
        between the float layer's output and the int8 layer's on the calibration data, layer
        by layer front to back (empirical bias correction).
    rounding: ``"nearest"`` (min/max), or ``"adaround"``: each weight rounded up or down as
        learned per layer on the calibration data (Nagel et al. 2020), on the scales torch.ao
        chose; needs ``num_samples >= 32``.
    rounding_iterations: AdaRound optimizer steps per layer (batches of 32 samples).

    Measured (bench/results/quantize_cnn.md, 2-core x86): vgg-bn 1.3× faster than fp32 at
    batch 1 and 3.2× at 64, accuracy unchanged; LeNet-5, whose layers are the model's direct
    children and so each a region of its own, 0.6× at batch 1 and 1.2× at 64. The repairs:
    bench/results/int8_repairs.md.
    """

    num_samples: int = Field(256, ge=1)
    equalize: bool = False
    bias_correction: bool = False
    rounding: Literal["nearest", "adaround"] = "nearest"
    rounding_iterations: int = Field(500, ge=1, le=100_000)

    needs_data: ClassVar[bool] = True

    @property
    def repaired(self) -> bool:
        """Any repair asked for (else plain min/max, converted as before)."""
        return self.equalize or self.bias_correction or self.rounding != "nearest"

    @model_validator(mode="after")
    def _adaround_has_samples(self) -> Int8StaticConfig:
        if self.rounding == "adaround" and self.num_samples < ADAROUND_MIN_SAMPLES:
            raise ValueError(
                f"num_samples: rounding='adaround' learns each layer's rounding from calibration "
                f"samples; got num_samples={self.num_samples}, use at least "
                f"{ADAROUND_MIN_SAMPLES} (or rounding='nearest')"
            )
        return self


class WeightOnlyConfig(QuantizeConfig):
    """Weight-only low-bit quantization; activations stay in floating point.

    bits: bits per stored weight (2 to 8); codes are bit-packed.
    group_size: input weights sharing one scale (and zero point); -1: one per output channel.
    symmetric: scale only, zero point fixed at 2^(bits-1) (nothing stored); else a zero point
        per group (uint8) as well.
    layer_bits: ``{selector: bits}``, selectors in the forms of ``targets``; the first matching
        selector gives a layer its bits, other layers use ``bits``. Each layer is stored at its
        own width (``prunekit.auto.search_bits`` picks them under a size budget).

    Weights that are exactly zero (pruned) stay exactly zero. By default a transformer's layers
    inside its repeated blocks are quantized and the embeddings and LM head are left alone; a
    model without repeated blocks has all its linear layers quantized.
    """

    bits: int = Field(4, ge=2, le=8)
    group_size: int = 128
    symmetric: bool = True
    layer_bits: dict[str, int] = Field(default_factory=dict)

    @field_validator("layer_bits")
    @classmethod
    def _layer_bits_in_range(cls, v: dict[str, int]) -> dict[str, int]:
        return check_layer_bits(v, 2, 8, "bit-packed weight codes")

    @field_validator("group_size")
    @classmethod
    def _group_size_valid(cls, v: int) -> int:
        if v != -1 and v < 1:
            raise ValueError(f"group_size must be -1 (per output channel) or >= 1; got {v}")
        return v


class RTNConfig(WeightOnlyConfig):
    """Round-to-nearest onto the per-group grid; no data needed."""


class GPTQConfig(WeightOnlyConfig):
    """GPTQ (Frantar et al. 2022): columns quantized left to right in blocks of ``block_size``,
    each one's rounding error pushed onto the columns not yet quantized through the inverse
    Hessian of the layer's calibration inputs (H = 2XXᵀ/N, dampened by ``dampening`` × its
    mean diagonal). Transformers are calibrated block by block on the outputs of the already
    quantized blocks.

    act_order: quantize columns in order of decreasing Hessian diagonal (the most active
        inputs first); groups stay contiguous in the stored order ("static groups", scales
        taken from the unquantized weights).
    """

    act_order: bool = False
    dampening: float = Field(0.01, gt=0)
    block_size: int = Field(128, ge=1)
    num_samples: int = Field(128, ge=1)

    needs_data: ClassVar[bool] = True


class QATConfig(QuantizeConfig):
    """Quantization-aware training: Linear and Conv2d layers are swapped for fake-quantized
    versions (straight-through gradients) that ``prunekit.finetune_`` trains like any other;
    ``prunekit.quantize.convert_`` then makes them real quantized layers.

    bits: weight bits, per output channel, symmetric. 8 converts to ``Int8Linear`` (fbgemm
        int8 kernel); fewer to ``WeightOnlyLinear`` codes.
    activation_bits: activations fake-quantized to this many bits with ranges observed while
        training (a moving average of each batch's min/max); ``None``: weights only.
    momentum: weight of each new batch in the observed ranges.
    targets: ``None`` means every ``nn.Linear`` and ``nn.Conv2d`` (groups of 1).
    """

    bits: int = Field(8, ge=2, le=8)
    activation_bits: Literal[8] | None = 8
    momentum: float = Field(0.01, gt=0, le=1)

    needs_training: ClassVar[bool] = True
