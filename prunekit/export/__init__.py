"""ONNX export that is checked: the file passes ``onnx.checker`` and onnxruntime reproduces the
PyTorch outputs at the example's shapes and at changed dynamic dimensions.

The exporter is torch.onnx's dynamo path (``torch.export`` + onnxscript): the TorchScript path
is deprecated since torch 2.9 and mis-exports Hugging Face models called with keyword inputs
(their optional arguments become graph inputs).

``quantize="int8-dynamic"`` hands the float file to onnxruntime's dynamic quantization (int8
weights per output channel for linear layers and embeddings, activations quantized on the fly),
which needs no data; convolutions stay float, as onnxruntime's integer convolution is slower.

Models quantized by prunekit export as what they compute (``prunekit.export.twin``):
int8-dynamic layers through onnxruntime's int8-dynamic; weight-only low-bit layers as
onnxruntime's MatMulNBits on their own codes (exact, small file); static int8 regions as QDQ
graphs carrying torch.ao's calibrated scales, which onnxruntime runs with its int8 kernels.
Other modules calling ``torch.ops.quantized.*`` do not export: the error names the module.

``export_executorch`` (:mod:`prunekit.export.executorch`) writes an ExecuTorch ``.pte`` program
for the XNNPACK backend, float32 or quantized there (static int8, dynamic int8, 8da4w), checked
in ExecuTorch's runtime before the file is written.

Timing the file against PyTorch: ``prunekit.measure.onnx.onnx_latency``.
"""

from prunekit.export.executorch import ExecuTorchReport, export_executorch
from prunekit.export.onnx import (
    OPSET,
    QUANTIZE_MODES,
    STATIC_MIN_SQNR_DB,
    ExportReport,
    export_onnx,
)

__all__ = [
    "OPSET",
    "QUANTIZE_MODES",
    "STATIC_MIN_SQNR_DB",
    "ExecuTorchReport",
    "ExportReport",
    "export_executorch",
    "export_onnx",
]
