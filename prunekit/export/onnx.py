"""``export_onnx``: the ONNX file, checked by ``onnx.checker`` and in onnxruntime, and optionally
quantized to int8 by onnxruntime. Models prunekit quantized export through their twin
(:mod:`prunekit.export.twin`)."""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.export.common import Deviation, human_size, quiet
from prunekit.export.diagnose import HINTS, explain
from prunekit.export.inputs import ModelCall, flat_tensors, one_line, output_names
from prunekit.export.twin import export_twin
from prunekit.measure._common import ExampleInputs, evaluating
from prunekit.measure.onnx import session
from prunekit.report import Report

log = logging.getLogger(__name__)

OPSET = 20
MIN_OPSET = 18  # the dynamo exporter's lowest
QUANTIZE_MODES = ("int8-dynamic",)
STATIC = "int8-static"  # what a model holding torch.ao static int8 regions exports as
# Linear layers and embeddings. Convolutions stay float: onnxruntime 1.32's ConvInteger ran
# builtin:vgg-bn 4x slower than its float Conv (batch 64, 2 threads: 153 vs 39 ms).
INT8_OP_TYPES = ["MatMul", "Gemm", "Gather"]
# Protobuf caps a file at 2 GiB; bigger models keep their weights in FILE.data beside it.
EXTERNAL_DATA_BYTES = 1 << 30
# onnxruntime's int8 kernels can round a requantized activation one step away from PyTorch's
# (their requantization arithmetic and float summation differ), and the step propagates: a
# static int8 export is accepted at this SQNR against the PyTorch int8 model (measured: 40-49
# dB, often identical). A wrong scale, zero point or layout gives < 20 dB.
STATIC_MIN_SQNR_DB = 30.0
# Exporter chatter (torchvision missing, constant-folding attempts) that tells users nothing.
NOISY_LOGGERS = ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")


@dataclass(kw_only=True)
class ExportReport(Report):
    """What ``export_onnx`` wrote and how closely onnxruntime matched PyTorch.

    ``bytes``: the ONNX file (plus ``FILE.data`` for external weights). ``max_abs_diff``: the
    largest |onnxruntime - PyTorch| of the float export over every output at every checked batch
    size (``batch_sizes``) and, with a dynamic sequence, length (``sequence_lengths``), each
    within ``atol + rtol * |PyTorch|``. With ``quantize``, ``path`` holds the int8 model,
    ``float_bytes`` is what the float export took, and ``quantized_max_abs_diff`` and
    ``quantized_sqnr_db`` (10 log10 of sum y^2 over sum (y_int8 - y)^2, all outputs and checked
    shapes) measure the int8 model against PyTorch; they are reported, not bounded.
    ``method`` is ``"export-onnx"``; ``config`` holds the call's settings (opset, quantize).

    A model quantized by prunekit exports its quantized layers as ``forms`` says (form -> how
    many layers). Weight-only layers keep their codes (MatMulNBits) and are checked like a
    float model. Static int8 regions export as QDQ graphs that onnxruntime runs with its int8
    kernels: ``quantize`` is then ``"int8-static"`` and ``max_abs_diff`` (equal to
    ``quantized_max_abs_diff``) compares them with the PyTorch int8 model; the export is
    refused below ``STATIC_MIN_SQNR_DB``.
    """

    path: str
    bytes: int
    opset: int
    max_abs_diff: float
    input_names: list[str]
    output_names: list[str]
    batch_sizes: list[int]
    dynamic_batch: bool
    sequence_lengths: list[int]
    atol: float
    rtol: float
    quantize: str | None = None
    float_bytes: int | None = None
    quantized_max_abs_diff: float | None = None
    quantized_sqnr_db: float | None = None
    forms: dict[str, int] = field(default_factory=dict)

    def title(self) -> str:
        dims = "dynamic batch" if self.dynamic_batch else "static batch"
        if self.sequence_lengths:
            dims += " and sequence"
        return f"ONNX {self.path}: {human_size(self.bytes)}, opset {self.opset}, {dims}"

    def notes(self) -> list[str]:
        where = f"batch sizes {', '.join(map(str, self.batch_sizes))}"
        if self.sequence_lengths:
            where += f", sequence lengths {', '.join(map(str, self.sequence_lengths))}"
        bound = f"atol {self.atol:g}, rtol {self.rtol:g}"
        if self.quantize == STATIC:
            bound = f"int8 vs int8: SQNR {self.quantized_sqnr_db:.1f} dB, at least "
            bound += f"{STATIC_MIN_SQNR_DB:g} required"
        lines = [
            f"inputs {', '.join(self.input_names)} -> outputs {', '.join(self.output_names)}",
            f"onnxruntime vs PyTorch: max |diff| {self.max_abs_diff:.2e} at {where} ({bound})",
        ]
        if self.forms:
            lines.append("quantized layers as written:")
            lines += [f"  {n} x {form}" for form, n in self.forms.items()]
        if self.quantize not in (None, STATIC):
            lines.append(
                f"{self.quantize} in onnxruntime (linear and embedding weights int8 per channel): "
                f"{human_size(self.float_bytes or 0)} -> {human_size(self.bytes)}; "
                f"vs PyTorch: SQNR {self.quantized_sqnr_db:.1f} dB, "
                f"max |diff| {self.quantized_max_abs_diff:.2e}"
            )
        return [*lines, f"exported and checked in {self.seconds:.1f} s", *super().notes()]


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example_inputs: ExampleInputs,
    *,
    opset: int = OPSET,
    dynamic_batch: bool = True,
    dynamic_sequence: bool = False,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    quantize: str | None = None,
) -> ExportReport:
    """Write ``model`` as an ONNX file at ``path``, checked in onnxruntime; returns the report.

    ``example_inputs``: one batch as the model takes it: a tensor, a tuple of positional
    arguments or a dict of keyword arguments (Hugging Face). Its tensors become the graph's
    inputs, named after the forward's parameters (or the dict's keys); other values are fixed in
    the graph, and Hugging Face models run with ``use_cache=False``. With ``dynamic_batch`` the
    first dimension of every input is free; with ``dynamic_sequence`` also the second of every
    integer input of two or more dimensions (token ids, attention masks). The file is written
    only once it passes ``onnx.checker`` and onnxruntime's outputs are within
    ``atol + rtol * |PyTorch|`` of the model's at the example's shapes and with each dynamic
    dimension changed; otherwise a ``PrunekitError`` says what differed, and nothing is written.
    ``quantize="int8-dynamic"`` writes onnxruntime's dynamically quantized int8 model instead.
    A model quantized by prunekit exports as its quantized layers allow (see ``ExportReport``):
    int8-dynamic layers through onnxruntime's int8-dynamic, weight-only layers as MatMulNBits,
    static int8 regions as QDQ graphs. The model is left as it was (modes restored).
    """
    start = time.perf_counter()
    path = _check_args(model, path, opset, atol, rtol, quantize)
    reference, twin = model, export_twin(model)
    static, forms, translations = False, {}, None
    if twin is not None:
        if twin.static_int8 and quantize is not None:
            raise PrunekitError(
                f"quantize: the model holds static int8 regions, which export as int8 QDQ "
                f"graphs already; leave quantize unset (got {quantize!r})"
            )
        if twin.dynamic_int8:
            # fbgemm's int8 kernels have no ONNX form: export the same weights as float layers
            # and let onnxruntime quantize them again (per channel, the grid they lie on).
            quantize, reference = quantize or "int8-dynamic", twin.model
        if twin.nbits:
            from prunekit.export.nbits import translation_table

            translations = translation_table()
        model, static, forms = twin.model, twin.static_int8, dict(twin.forms)
    call = ModelCall.of(model, example_inputs, dynamic_batch, dynamic_sequence)
    with (
        evaluating(model),
        evaluating(reference),
        tempfile.TemporaryDirectory(dir=path.parent, prefix=".onnx-") as tmp,
    ):
        try:
            outputs = call.outputs(reference, call.inputs)
        except Exception as err:
            raise PrunekitError(
                f"example_inputs: the model fails on them: {type(err).__name__}: {one_line(err)}"
            ) from err
        names = output_names(outputs)
        float_file = Path(tmp) / ("float.onnx" if quantize else path.name)
        _export(model, call, names, float_file, opset, translations)
        checks = call.checks()
        tolerance = (math.inf, 0.0) if static else (atol, rtol)
        diff, sqnr = _deviation(reference, call, float_file, checks, tolerance)
        report = ExportReport(
            method="export-onnx",
            config={"opset": opset, "quantize": quantize, "atol": atol, "rtol": rtol},
            path=str(path),
            bytes=_file_bytes(float_file),
            opset=opset,
            max_abs_diff=diff,
            input_names=call.names,
            output_names=names,
            batch_sizes=sorted({b for b, _ in checks}),
            dynamic_batch=dynamic_batch,
            sequence_lengths=sorted({t for _, t in checks if t is not None}, reverse=True),
            atol=atol,
            rtol=rtol,
            forms=forms,
        )
        if static:
            if sqnr < STATIC_MIN_SQNR_DB:
                raise PrunekitError(
                    f"export_onnx: onnxruntime's int8 output differs from the PyTorch int8 "
                    f"model's at SQNR {sqnr:.1f} dB (max |diff| {diff:.3g}; expected >= "
                    f"{STATIC_MIN_SQNR_DB:g} dB: rounding differences only); nothing was written"
                )
            report = replace(
                report, quantize=STATIC, quantized_max_abs_diff=diff, quantized_sqnr_db=sqnr
            )
        elif quantize is not None:
            report = _quantize(reference, call, float_file, Path(tmp) / path.name, report, quantize)
        _move_into_place(Path(tmp), path)
    report = replace(report, seconds=time.perf_counter() - start)
    log.info("exported %s in %.1f s", path, report.seconds)
    return report


def _check_args(
    model: nn.Module, path: str | Path, opset: int, atol: float, rtol: float, quantize: str | None
) -> Path:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module; got {type(model).__name__}")
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise PrunekitError(f"opset: the exporter writes opset {MIN_OPSET} or newer; got {opset!r}")
    if not (atol >= 0 and rtol >= 0):
        raise PrunekitError(f"atol, rtol: must be >= 0; got atol={atol}, rtol={rtol}")
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise PrunekitError(
            f"quantize: expected one of {list(QUANTIZE_MODES)} or None; got {quantize!r}"
        )
    path = Path(path).expanduser()
    if path.is_dir():
        raise PrunekitError(f"path: {str(path)!r} is a directory; name the .onnx file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _export(
    model: nn.Module,
    call: ModelCall,
    names: list[str],
    file: Path,
    opset: int,
    translations: dict[Any, Any] | None = None,
) -> None:
    args, kwargs = call.args_kwargs(call.inputs)
    try:
        with quiet(NOISY_LOGGERS):
            program = torch.onnx.export(
                model,
                args,
                kwargs=kwargs,
                input_names=call.names,
                output_names=names,
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=call.dynamic_shapes(),
                custom_translation_table=translations,
                verbose=False,
            )
            assert program is not None  # dynamo=True without a file returns the program
            weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
            program.save(str(file), external_data=weights > EXTERNAL_DATA_BYTES)
    except ImportError as err:
        raise PrunekitError(
            f"export_onnx needs onnx and onnxscript ({err}); pip install 'prunekit[export]'"
        ) from None
    except Exception as err:
        raise explain(model, call, err) from err
    _check_file(file)


def _check_file(file: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(file))
    except onnx.checker.ValidationError as err:
        raise PrunekitError(f"export_onnx: the exported file is not valid ONNX: {err}") from err


def _quantize(
    model: nn.Module, call: ModelCall, float_file: Path, out: Path, report: ExportReport, mode: str
) -> ExportReport:
    assert mode == "int8-dynamic"
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    prepared = float_file.with_name("prepared.onnx")
    big = report.bytes > EXTERNAL_DATA_BYTES
    with quiet(NOISY_LOGGERS):
        # Shape inference and graph fusions first, as onnxruntime's quantizer asks. Its
        # symbolic shape inference gives up on some graphs with a free sequence length
        # (MiniLM: "Incomplete symbolic shape inference"); the quantizer needs the weights'
        # shapes, which are constant, so ONNX's own shape inference is enough then.
        # When it gives up it saves its partial graph (and its weights) into the current
        # directory, so it runs from the scratch directory the files live in.
        source, target = str(float_file.resolve()), str(prepared.resolve())
        with _working_dir(prepared.parent):
            try:
                quant_pre_process(source, target, auto_merge=True, save_as_external_data=big)
            except Exception as err:  # onnxruntime raises a bare Exception
                log.info("symbolic shape inference failed (%s); ONNX shape inference only", err)
                quant_pre_process(
                    source, target, skip_symbolic_shape=True, save_as_external_data=big
                )
        quantize_dynamic(
            str(prepared),
            str(out),
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=INT8_OP_TYPES,
            use_external_data_format=big,
        )
    _check_file(out)
    diff, sqnr = _deviation(model, call, out, call.checks(), (math.inf, 0))
    return replace(
        report,
        bytes=_file_bytes(out),
        quantize=mode,
        float_bytes=report.bytes,
        quantized_max_abs_diff=diff,
        quantized_sqnr_db=sqnr,
    )


@contextmanager
def _working_dir(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _deviation(
    model: nn.Module,
    call: ModelCall,
    file: Path,
    checks: list[tuple[int, int | None]],
    tolerance: tuple[float, float],
) -> tuple[float, float]:
    """(max |onnxruntime - PyTorch|, SQNR in dB) over every output at each (batch size, sequence
    length) in ``checks``; raises if an output is off by more than ``atol + rtol * |PyTorch|``
    for ``(atol, rtol) = tolerance``."""
    runner = session(file)
    names = [o.name for o in runner.get_outputs()]
    atol, rtol = tolerance
    deviation = Deviation()
    for batch, length in checks:
        inputs = call.resized(batch, length)
        at = f"batch size {batch}" + (f", sequence length {length}" if length else "")
        hint = HINTS["sequence" if length != call.sequence else "batch"]
        try:
            expected = flat_tensors(call.outputs(model, inputs))
        except Exception as err:
            raise PrunekitError(
                f"export_onnx: the model itself fails at {at} (the example's batch size is "
                f"{call.batch}): {one_line(err)}{hint}"
            ) from err
        try:
            got = runner.run(None, call.feed(inputs))
        except Exception as err:
            raise PrunekitError(
                f"export_onnx: onnxruntime cannot run the exported file at {at}: {one_line(err)}"
                f"{hint if (batch, length) != checks[0] else ''}"
            ) from err
        if len(got) != len(expected):
            raise PrunekitError(
                f"export_onnx: the ONNX graph has {len(got)} outputs but the model returns "
                f"{len(expected)} tensors"
            )
        for name, g, e in zip(names, got, expected, strict=True):
            g, e = torch.from_numpy(np.asarray(g)).double(), e.detach().cpu().double()
            if g.shape != e.shape:
                raise PrunekitError(
                    f"export_onnx: output {name!r} has shape {tuple(g.shape)} in onnxruntime "
                    f"but {tuple(e.shape)} in PyTorch at {at}"
                )
            diff = deviation.add(g, e)
            if not torch.allclose(g, e, atol=atol, rtol=rtol, equal_nan=True):
                raise PrunekitError(
                    f"export_onnx: onnxruntime's output {name!r} differs from PyTorch's by up to "
                    f"{diff:.3g} at {at} (allowed: atol {atol:g} + rtol {rtol:g} * |PyTorch|); "
                    f"nothing was written. Raise atol/rtol if that is precise enough"
                )
    return deviation.worst, deviation.sqnr_db


def _file_bytes(file: Path) -> int:
    data = file.with_name(file.name + ".data")
    return file.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def _move_into_place(tmp: Path, path: Path) -> None:
    # The weights file first: the graph only appears once everything it references is there.
    data = path.name + ".data"
    if (tmp / data).is_file():
        os.replace(tmp / data, path.with_name(data))
    os.replace(tmp / path.name, path)
