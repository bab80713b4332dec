"""ONNX export that is checked: the file passes ``onnx.checker`` and onnxruntime reproduces the
PyTorch outputs at the example's shapes and at changed dynamic dimensions.

The exporter is torch.onnx's dynamo path (``torch.export`` + onnxscript): the TorchScript path
is deprecated since torch 2.9 and mis-exports Hugging Face models called with keyword inputs
(their optional arguments become graph inputs).

``quantize="int8-dynamic"`` hands the float file to onnxruntime's dynamic quantization (int8
weights per output channel for linear layers and embeddings, activations quantized on the fly),
which needs no data; convolutions stay float, as onnxruntime's integer convolution is slower.
A model already quantized in PyTorch (packed int8 weights, ``torch.ops.quantized.*``) does not
export: the error names the module; export the float model and quantize here instead.

Timing the file against PyTorch: ``prunekit.measure.onnx.onnx_latency``.
"""

from prunekit.export.onnx import OPSET, QUANTIZE_MODES, ExportReport, export_onnx

__all__ = ["OPSET", "QUANTIZE_MODES", "ExportReport", "export_onnx"]
