"""Weight-only low-bit layers as onnxruntime's ``com.microsoft.MatMulNBits``, fed with
prunekit's own codes, scales and zero points, so the file keeps the low-bit weights and
onnxruntime computes what ``WeightOnlyLinear`` computes.

MatMulNBits dequantizes ``(code - zero_point) * scale`` per block of ``block_size`` weights
along the input dimension (a power of two, at least 16) from codes packed low bits first,
2, 4 or 8 bits each: prunekit's grid and packing order. 3-bit codes are stored in the 4-bit
form (with their zero points), 5- to 7-bit codes in the 8-bit form. A group of
``group_size`` weights becomes ``group_size / block_size`` blocks with the same scale when a
power of two of at least 16 divides it (one group per row allows any block size); a layer
whose groups cannot be cut that way exports its dequantized float weight instead.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.quantize.grid import pack_codes, unpack_codes
from prunekit.quantize.layers import WeightOnlyLinear

DOMAIN = "com.microsoft"
OP = "prunekit::matmul_nbits"
MIN_BLOCK = 16


def container_bits(bits: int) -> int:
    """The MatMulNBits width that holds ``bits``-bit codes: 2, 4 or 8."""
    return 2 if bits <= 2 else 4 if bits <= 4 else 8


def block_size(layer: WeightOnlyLinear) -> int | None:
    """The MatMulNBits block size for ``layer`` (the one giving the smallest file), or None when
    no power of two of at least 16 fits its groups."""
    k, group = layer.in_features, layer.group_size
    width = container_bits(layer.bits)
    per_block = 4 + (0 if _default_zero(layer) else width / 8)  # a float32 scale, a zero point
    best: tuple[float, int] | None = None
    block = MIN_BLOCK
    while block < 2 * k:
        if group % block == 0 or group >= k:
            blocks = math.ceil(k / block)
            size = blocks * (block * width / 8 + per_block)
            if best is None or size <= best[0]:
                best = (size, block)
        block *= 2
    return None if best is None else best[1]


def _default_zero(layer: WeightOnlyLinear) -> bool:
    # MatMulNBits' default zero point is 2^(bits - 1) of its own width.
    return layer.symmetric and layer.bits == container_bits(layer.bits)


class NBitsLinear(nn.Module):
    """A ``WeightOnlyLinear`` as MatMulNBits operands: ``qweight`` uint8 ``[out, k_blocks,
    block_size * bits / 8]``, ``scales`` float32 ``[out * k_blocks]``, ``zero_points`` uint8
    (packed like the codes, one row of ``k_blocks`` per output) or None for the op's default
    ``2^(bits - 1)``; ``bias`` float32 ``[out]`` or None."""

    def __init__(self, layer: WeightOnlyLinear, block: int) -> None:
        super().__init__()
        out, k = layer.out_features, layer.in_features
        self.k, self.n, self.block = k, out, block
        self.bits = container_bits(layer.bits)
        blocks = math.ceil(k / block)
        codes = unpack_codes(layer.codes, layer.bits, k)
        codes = F.pad(codes, (0, blocks * block - k))  # padded codes meet no input column
        self.register_buffer("qweight", pack_codes(codes, self.bits).reshape(out, blocks, -1))
        groups = layer.scales.float()
        index = torch.arange(blocks, device=groups.device) * block // layer.group_size
        self.register_buffer("scales", groups[:, index].reshape(-1).contiguous())
        if _default_zero(layer):
            self.zero_points = None
        else:
            zeros = (
                torch.full_like(groups, 2 ** (layer.bits - 1))
                if layer.symmetric
                else layer.zeros.float()
            )[:, index].to(torch.uint8)
            self.register_buffer("zero_points", pack_codes(zeros, self.bits).reshape(-1))
        bias = None if layer.bias is None else layer.bias.detach().float().clone()
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.prunekit.matmul_nbits(
            x, self.qweight, self.scales, self.zero_points, self.k, self.n, self.bits, self.block
        )
        return y if self.bias is None else y + self.bias


def _dequantize(
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zero_points: torch.Tensor | None,
    k: int,
    n: int,
    bits: int,
    block: int,
) -> torch.Tensor:
    """The float weight ``[n, k]`` MatMulNBits computes with."""
    blocks = qweight.shape[1]
    codes = unpack_codes(qweight.reshape(n, -1), bits, blocks * block).float()
    if zero_points is None:
        zeros = torch.full((n, blocks), float(2 ** (bits - 1)), device=qweight.device)
    else:
        zeros = unpack_codes(zero_points.reshape(n, -1), bits, blocks).float()
    scale = scales.reshape(n, blocks)
    w = (codes.reshape(n, blocks, block) - zeros[..., None]) * scale[..., None]
    return w.reshape(n, -1)[:, :k]


@torch.library.custom_op(OP, mutates_args=())
def matmul_nbits(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zero_points: torch.Tensor | None,
    k: int,
    n: int,
    bits: int,
    block: int,
) -> torch.Tensor:
    """``x @ W.T`` with W dequantized from MatMulNBits operands (see :class:`NBitsLinear`)."""
    return x @ _dequantize(qweight, scales, zero_points, k, n, bits, block).to(x.dtype).T


@matmul_nbits.register_fake
def _(x, qweight, scales, zero_points, k, n, bits, block):  # type: ignore[no-untyped-def]
    return x.new_empty((*x.shape[:-1], n))


def translation_table() -> dict:
    """torch.onnx's ``custom_translation_table`` entry writing MatMulNBits nodes."""
    import onnxscript

    _register_schema()
    ms = onnxscript.values.Opset(DOMAIN, 1)

    def matmul_nbits_onnx(x, qweight, scales, zero_points, k: int, n: int, bits: int, block: int):  # type: ignore[no-untyped-def]
        return ms.MatMulNBits(
            x, qweight, scales, zero_points, K=k, N=n, bits=bits, block_size=block
        )

    return {torch.ops.prunekit.matmul_nbits.default: matmul_nbits_onnx}


def _register_schema() -> None:
    """Teach onnx (and so the exporter's graph builder and ``onnx.checker``) the contrib op's
    signature; onnxruntime defines it, onnx does not."""
    import onnx
    from onnx.defs import OpSchema

    if onnx.defs.has("MatMulNBits", DOMAIN):
        return
    param, optional = OpSchema.FormalParameter, OpSchema.FormalParameterOption.Optional
    attr = OpSchema.Attribute
    schema = OpSchema(
        "MatMulNBits",
        DOMAIN,
        1,
        doc="onnxruntime's block-quantized matrix multiplication",
        inputs=[
            param("A", "T1"),
            param("B", "T2"),
            param("scales", "T1"),
            param("zero_points", "T3", param_option=optional),
            param("g_idx", "T4", param_option=optional),
            param("bias", "T1", param_option=optional),
        ],
        outputs=[param("Y", "T1")],
        type_constraints=[
            ("T1", ["tensor(float)", "tensor(float16)"], ""),
            ("T2", ["tensor(uint8)"], ""),
            ("T3", ["tensor(uint8)", "tensor(float)", "tensor(float16)"], ""),
            ("T4", ["tensor(int32)"], ""),
        ],
        attributes=[
            attr("K", OpSchema.AttrType.INT, ""),
            attr("N", OpSchema.AttrType.INT, ""),
            attr("bits", OpSchema.AttrType.INT, ""),
            attr("block_size", OpSchema.AttrType.INT, ""),
            attr("accuracy_level", OpSchema.AttrType.INT, "", required=False),
        ],
    )
    onnx.defs.register_schema(schema)
