"""Static int8 regions as QDQ graphs: what torch.ao's converted graph computes, written with
explicit quantize/dequantize pairs that torch.onnx translates to QuantizeLinear/DequantizeLinear
and onnxruntime fuses into its int8 kernels (QLinearConv, QGemm, int8 MaxPool).

The converted graph (``StaticInt8Region.graph``) is rewritten node by node. A quantized tensor
becomes its float value after ``quantize -> dequantize`` with the scale and zero point torch.ao
calibrated; each quantized convolution or linear layer becomes ``DQ(int8 weight), DQ(int32
bias) -> Conv/Gemm -> ReLU -> Q -> DQ`` with the layer's per-channel weight scales and output
grid (``QDQLayer``); ops that keep values on their grid (max pooling, flattening, ReLU) are
followed by a ``Q -> DQ`` with the input's grid, which changes nothing numerically and lets
onnxruntime keep the tensor in int8 between layers.

Weights must stay int8 behind a DequantizeLinear: given a float weight between QDQ activations,
onnxruntime quantizes it itself (per tensor) to fuse QGemm, which cost the zoo MLP 35 dB of
agreement with PyTorch.
"""

from __future__ import annotations

import copy
import operator
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
import torch.ao.quantization.fx._decomposed  # registers the quantized_decomposed ops
import torch.nn.functional as F
from torch import fx, nn

from prunekit.errors import PrunekitError

QD = torch.ops.quantized_decomposed
INT32 = torch.iinfo(torch.int32)
RANGES = {torch.quint8: (0, 255, torch.uint8), torch.qint8: (-128, 127, torch.int8)}
CONVS = {nnq.Conv1d: F.conv1d, nnq.Conv2d: F.conv2d, nnq.Conv3d: F.conv3d}
RELU_FUSED = (nniq.ConvReLU1d, nniq.ConvReLU2d, nniq.ConvReLU3d, nniq.LinearReLU)
# Modules, functions and methods whose int8 output keeps their int8 input's scale and zero
# point (torch's quantized average pooling rounds onto the input's grid).
SAME_GRID_MODULES = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.Unflatten,
    nn.ReLU,
    nn.Dropout,
    nn.Identity,
    nnq.Dropout,
    nnq.MaxPool2d,
)
SAME_GRID_FUNCTIONS = (
    torch.flatten,
    torch.reshape,
    torch.relu,
    torch.squeeze,
    torch.unsqueeze,
    torch.transpose,
    torch.permute,
    F.relu,
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    F.avg_pool2d,
    F.adaptive_avg_pool2d,
    F.dropout,
    operator.getitem,
)
SAME_GRID_METHODS = (
    "view",
    "reshape",
    "flatten",
    "permute",
    "transpose",
    "contiguous",
    "squeeze",
    "unsqueeze",
    "relu",
)
SIZE_METHODS = ("size", "dim")
ADDS = {"add": False, "add_relu": True}


@dataclass(frozen=True)
class Grid:
    """A per-tensor activation grid: ``x = (q - zero_point) * scale``, q in [qmin, qmax]."""

    scale: float
    zero_point: int
    qmin: int
    qmax: int
    dtype: torch.dtype

    @classmethod
    def of(cls, scale: Any, zero_point: Any, qdtype: torch.dtype) -> Grid:
        if qdtype not in RANGES:
            raise PrunekitError(f"export_onnx: activations of type {qdtype} have no ONNX form")
        qmin, qmax, dtype = RANGES[qdtype]
        return cls(float(scale), int(zero_point), qmin, qmax, dtype)

    @property
    def args(self) -> tuple[float, int, int, int, torch.dtype]:
        return (self.scale, self.zero_point, self.qmin, self.qmax, self.dtype)

    def fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        return QD.dequantize_per_tensor(QD.quantize_per_tensor(x, *self.args), *self.args)


def _weight(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """A torch.ao layer's weight: int8 values and float32 scales ``[out]`` (symmetric)."""
    w = layer.weight()
    if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        assert w.q_per_channel_axis() == 0, "weights are quantized per output channel"
        scales, zeros = w.q_per_channel_scales(), w.q_per_channel_zero_points()
    else:
        scales = torch.full((w.shape[0],), w.q_scale(), dtype=torch.float64)
        zeros = torch.full((w.shape[0],), w.q_zero_point(), dtype=torch.long)
    if bool((zeros != 0).any()) or w.dtype != torch.qint8:
        raise PrunekitError(
            f"export_onnx: {type(layer).__name__} has {w.dtype} weights with non-zero zero "
            f"points; the ONNX export handles torch.ao's symmetric int8 weights"
        )
    return w.int_repr().clone(), scales.float().clone()


def _bias(
    layer: nn.Module, weight_scale: torch.Tensor, source: Grid
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """A torch.ao layer's bias as int32 ``[out]`` on the scale ``source.scale * weight_scale``
    (returned too), as the int8 kernels of both PyTorch and onnxruntime add it; None if none."""
    scale = weight_scale * torch.tensor(source.scale, dtype=torch.float32)
    bias = layer.bias()
    if bias is None:
        return None, scale
    return torch.round(bias.detach().float() / scale).clamp(INT32.min, INT32.max).int(), scale


class QDQLayer(nn.Module):
    """A torch.ao quantized convolution or linear layer (ReLU fused or not) as ``DQ(int8
    weight), DQ(int32 bias) -> Conv/Gemm -> ReLU -> Q -> DQ`` on an input dequantized from grid
    ``source``: the pattern onnxruntime turns into QLinearConv or QGemm.

    State: ``weight`` int8 ``[out, in / groups, *kernel]`` with ``weight_scale`` float32
    ``[out]``; ``bias`` int32 ``[out]`` on scale ``bias_scale = source.scale * weight_scale``
    (the form both libraries' int8 kernels add it in) or None. The zero points (all 0) are
    explicit: onnxruntime 1.32 fuses a QDQ Gemm into QGemm only with them.
    """

    def __init__(self, layer: nn.Module, source: Grid) -> None:
        super().__init__()
        if getattr(layer, "padding_mode", "zeros") != "zeros":
            raise PrunekitError(
                f"export_onnx: a quantized convolution with padding_mode "
                f"{layer.padding_mode!r} has no ONNX form here; keep it in float (ignore)"
            )
        weight, scale = _weight(layer)
        self.register_buffer("weight", weight)
        self.register_buffer("weight_scale", scale)
        self.register_buffer("weight_zero", torch.zeros(scale.shape, dtype=torch.int8))
        bias, bias_scale = _bias(layer, scale, source)
        self.register_buffer("bias", bias)
        self.register_buffer("bias_scale", bias_scale)
        self.register_buffer("bias_zero", torch.zeros(scale.shape, dtype=torch.int32))
        self.conv = next((f for kind, f in CONVS.items() if isinstance(layer, kind)), None)
        self.options = {}
        if self.conv is not None:
            self.options = {
                "stride": layer.stride,
                "padding": layer.padding,
                "dilation": layer.dilation,
                "groups": layer.groups,
            }
        self.relu = isinstance(layer, RELU_FUSED)
        self.out = Grid.of(layer.scale, layer.zero_point, torch.quint8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = QD.dequantize_per_channel(
            self.weight, self.weight_scale, self.weight_zero, 0, -128, 127, torch.int8
        )
        b = None
        if self.bias is not None:
            b = QD.dequantize_per_channel(
                self.bias, self.bias_scale, self.bias_zero, 0, INT32.min, INT32.max, torch.int32
            )
        y = F.linear(x, w, b) if self.conv is None else self.conv(x, w, b, **self.options)
        return self.out.fake_quant(torch.relu(y) if self.relu else y)


def qdq_graph(graph: fx.GraphModule, where: str) -> tuple[fx.GraphModule, Counter[str]]:
    """The QDQ form of a graph converted by torch.ao FX (see the module docstring) and how many
    convolutions and linear layers it has ({"conv": n, "linear": m}); ``where`` names the
    region in errors."""
    rewriter = _Rewriter(graph, where)
    return rewriter.run(), rewriter.forms


class _Rewriter:
    def __init__(self, source: fx.GraphModule, where: str) -> None:
        self.source, self.where = source, where
        self.root = nn.Module()
        self.graph = fx.Graph()
        self.env: dict[fx.Node, Any] = {}
        self.grids: dict[fx.Node, Grid] = {}
        self.attrs: dict[fx.Node, Any] = {}
        self.forms: Counter[str] = Counter()
        self.count = 0

    def run(self) -> fx.GraphModule:
        for node in self.source.graph.nodes:
            if node.op == "get_attr":
                self.attrs[node] = _fetch(self.source, node.target)
            elif node.op == "placeholder":
                self.env[node] = self.graph.placeholder(node.name)
            elif node.op == "output":
                self.graph.output(self._map(node.args[0]))
            elif node.op == "call_module":
                self._module(node)
            else:
                self._call(node)
        module = fx.GraphModule(self.root, self.graph)
        module.eval()
        return module

    def _map(self, value: Any) -> Any:
        def one(v: Any) -> Any:
            if not isinstance(v, fx.Node):
                return v
            if v in self.env:
                return self.env[v]
            return self._constant(v)

        return fx.node.map_aggregate(value, one)

    def _constant(self, node: fx.Node) -> fx.Node:
        value = self.attrs[node]
        name = self._name("const")
        if isinstance(value, torch.Tensor):
            self.root.register_buffer(name, value.detach().clone())
        else:
            setattr(self.root, name, value)
        self.env[node] = self.graph.get_attr(name)
        return self.env[node]

    def _name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}".replace(".", "_")

    def _add_module(self, stem: str, module: nn.Module) -> str:
        name = self._name(stem)
        self.root.add_module(name, module)
        return name

    def _requantize(self, node: fx.Node, new: fx.Node, grid: Grid) -> None:
        q = self.graph.call_function(QD.quantize_per_tensor.default, (new, *grid.args))
        self.env[node] = self.graph.call_function(QD.dequantize_per_tensor.default, (q, *grid.args))
        self.grids[node] = grid

    def _grid_in(self, node: fx.Node) -> Grid | None:
        grids = [self.grids[a] for a in node.all_input_nodes if a in self.grids]
        return grids[0] if grids else None

    def _unsupported(self, what: str) -> PrunekitError:
        return PrunekitError(
            f"export_onnx: static int8 region {self.where!r} applies {what} to int8 values, "
            f"which the ONNX export does not translate; keep that layer in float "
            f"(Int8StaticConfig ignore=[...]) or choose other regions with targets=[...]"
        )

    def _module(self, node: fx.Node) -> None:
        module = self.source.get_submodule(str(node.target))
        grid = self._grid_in(node)
        if isinstance(module, (nnq.Linear, *CONVS)):
            if grid is None:
                raise self._unsupported(f"{type(module).__name__} to a float tensor")
            self.forms["conv" if isinstance(module, tuple(CONVS)) else "linear"] += 1
            name = self._add_module(str(node.target), QDQLayer(module, grid))
            self.env[node] = self.graph.call_module(name, (self.env[node.args[0]],))
            self.grids[node] = self.root.get_submodule(name).out
            return
        if grid is not None and not isinstance(module, SAME_GRID_MODULES):
            raise self._unsupported(f"module {node.target!r} ({type(module).__name__})")
        if grid is None and ".quantized" in type(module).__module__:
            raise self._unsupported(f"module {node.target!r} ({type(module).__name__})")
        name = self._add_module(str(node.target), copy.deepcopy(module))
        new = self.graph.call_module(name, self._map(node.args), self._map(node.kwargs))
        if grid is None:
            self.env[node] = new
        else:
            self._requantize(node, new, grid)

    def _call(self, node: fx.Node) -> None:
        target = node.target
        if target is torch.quantize_per_tensor:
            x, scale, zero, qdtype = node.args
            self._requantize(
                node, self._map(x), Grid.of(self._value(scale), self._value(zero), qdtype)
            )
            return
        if node.op == "call_method" and target == "dequantize":
            self.env[node] = self._map(node.args[0])
            return
        if str(target).startswith("quantized."):  # torch.ops.quantized.*: int8 in, int8 out
            op = str(target).split(".")[1]
            if op not in ADDS:
                raise self._unsupported(f"torch.ops.{target}")
            a, b = (self._map(v) for v in node.args[:2])
            y = self.graph.call_function(operator.add, (a, b))
            if ADDS[op]:
                y = self.graph.call_function(torch.relu, (y,))
            scale, zero = (self._value(v) for v in node.args[2:4])
            self._requantize(node, y, Grid.of(scale, zero, torch.quint8))
            return
        grid = self._grid_in(node)
        new = self.graph.create_node(
            node.op, target, self._map(node.args), self._map(node.kwargs), node.name
        )
        if grid is None or target in SIZE_METHODS or target is getattr:
            self.env[node] = new
            return
        if target is torch.cat:
            if len({self.grids.get(a) for a in node.all_input_nodes}) != 1:
                raise self._unsupported("torch.cat of tensors on different grids")
        elif not (
            (node.op == "call_function" and target in SAME_GRID_FUNCTIONS)
            or (node.op == "call_method" and target in SAME_GRID_METHODS)
        ):
            raise self._unsupported(getattr(target, "__name__", str(target)))
        self._requantize(node, new, grid)

    def _value(self, arg: Any) -> Any:
        """A scalar argument: a get_attr node's value, or the argument itself."""
        return self.attrs[arg] if isinstance(arg, fx.Node) else arg


def _fetch(module: nn.Module, target: Any) -> Any:
    value: Any = module
    for part in str(target).split("."):
        value = getattr(value, part)
    return value
