"""Quantization: int8 post-training (dynamic, static), weight-only low-bit (RTN, GPTQ), QAT.

    report = prunekit.quantize_(model, prunekit.Int8DynamicConfig())          # CPU int8 kernels
    report = prunekit.quantize_(model, prunekit.GPTQConfig(bits=4), data=calib)  # smaller
    prunekit.quantize_(model, prunekit.QATConfig()); prunekit.finetune_(model, train)
    prunekit.quantize.convert_(model)

Every quantized layer is a module swapped in (``prunekit.surgery.swaps``) whose state is plain
tensors, so ``prunekit.save`` writes it with safetensors and ``prunekit.load`` rebuilds it.
"""

from prunekit.quantize.api import int8_dynamic_, quantize_, rtn_
from prunekit.quantize.calibrated import gptq_
from prunekit.quantize.config import (
    GPTQConfig,
    Int8DynamicConfig,
    Int8StaticConfig,
    QATConfig,
    QuantizeConfig,
    RTNConfig,
    SmoothQuantConfig,
    WeightOnlyConfig,
)
from prunekit.quantize.layers import Int8Linear, WeightOnlyLinear
from prunekit.quantize.qat import QATConv2d, QATLinear, convert_, prepare_qat_, qat_
from prunekit.quantize.report import LayerQuant, QuantizeReport
from prunekit.quantize.smooth import SmoothQuantReport, SmoothReport, smooth_, smoothquant_
from prunekit.quantize.static import StaticInt8Region, int8_static_
from prunekit.registry import register

register(
    "int8-dynamic",
    "quantize",
    Int8DynamicConfig,
    "int8 weights per channel, activations quantized per batch; fbgemm CPU kernel",
    int8_dynamic_,
    example={"min_features": 0},
)
register(
    "smoothquant",
    "quantize",
    SmoothQuantConfig,
    "SmoothQuant: activation outliers folded from norms into the weights, then int8-dynamic",
    smoothquant_,
    example={"min_features": 0, "num_samples": 8},
)
register(
    "int8-static",
    "quantize",
    Int8StaticConfig,
    "int8 weights and calibrated activations, BN folded, ReLU fused (torch.ao FX; CPU CNNs)",
    int8_static_,
    # The repairs on: they run the plain conversion too, then change its weights and biases.
    example={
        "num_samples": 64,
        "equalize": True,
        "bias_correction": True,
        "rounding": "adaround",
        "rounding_iterations": 10,
    },
)
register(
    "rtn", "quantize", RTNConfig, "weight-only low-bit, round to nearest per group", rtn_,
    example={"bits": 4, "group_size": 16},
)  # fmt: skip
register(
    "gptq",
    "quantize",
    GPTQConfig,
    "weight-only low-bit with Hessian error feedback from calibration data (GPTQ)",
    gptq_,
    example={"bits": 4, "group_size": 16, "num_samples": 32},
)
register(
    "qat",
    "quantize",
    QATConfig,
    "fake-quantized layers to train (straight-through), then convert_ to int8",
    qat_,
    example={"bits": 8},
)

__all__ = [
    "GPTQConfig",
    "Int8DynamicConfig",
    "Int8Linear",
    "Int8StaticConfig",
    "LayerQuant",
    "QATConfig",
    "QATConv2d",
    "QATLinear",
    "QuantizeConfig",
    "QuantizeReport",
    "RTNConfig",
    "SmoothQuantConfig",
    "SmoothQuantReport",
    "SmoothReport",
    "StaticInt8Region",
    "WeightOnlyConfig",
    "WeightOnlyLinear",
    "convert_",
    "prepare_qat_",
    "quantize_",
    "smooth_",
]
