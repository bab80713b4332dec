"""``export_executorch``: a ``.pte`` file for ExecuTorch with the XNNPACK backend, checked by
running it in ExecuTorch's runtime against PyTorch before it is written.

The path is ExecuTorch's own: ``torch.export`` -> (quantization) -> ``to_edge_transform_and_lower``
with the XNNPACK partitioner -> ``to_executorch``. The program is loaded from memory into
``executorch.runtime`` and run on the example input; only then is the file written, atomically.

``quantize``:

- ``"int8"``: static int8 through XNNPACK's quantizer (pt2e: prepare, calibrate on ``data``,
  convert): int8 activations, int8 weights per output channel, for convolutions, linear layers
  and the ops between them that XNNPACK runs in int8.
- ``"int8-dynamic"``: linear layers (transformers' Conv1D too) with int8 weights per output
  channel and activations quantized on the fly (torchao's
  ``Int8DynamicActivationIntxWeightConfig``); no data needed.
- ``"8da4w"``: as ``"int8-dynamic"`` with 4-bit weights in groups of ``GROUP_SIZE`` input
  features; linear layers whose width is not a multiple of it stay float.

The example input fixes the shapes (batch size, sequence length) the program runs at.

Models holding prunekit's own layers export dense (``dense_note`` says which;
:mod:`prunekit.export.dense`): weight-shared layers as float layers holding their codebook
values, int8 and weight-only layers with their dequantized weights; pruned zeros are stored and
multiplied like any weight. Static int8 regions (torch.ao FX) do not export: export the float
model with ``quantize="int8"``.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.atomic import write_bytes
from prunekit.data.batches import split_batch
from prunekit.errors import PrunekitError
from prunekit.export.common import Deviation, human_size, quiet
from prunekit.export.dense import dense_twin
from prunekit.export.diagnose import _op_callers
from prunekit.export.inputs import ModelCall, flat_tensors, one_line, output_names
from prunekit.measure._common import ExampleInputs, evaluating
from prunekit.report import Report

log = logging.getLogger(__name__)

QUANTIZE_MODES = ("int8", "int8-dynamic", "8da4w")
GROUP_SIZE = 32  # 8da4w: input features sharing one 4-bit scale
NUM_SAMPLES = 128  # calibration samples for quantize="int8"
INSTALL = "pip install 'prunekit[executorch]' (executorch==1.5.1, torchao 0.18)"
# Bookkeeping nodes (tuple unpacking) that no backend runs; left out of the delegated share.
NOT_OPS = ("getitem",)
# Op namespaces torch.export and ExecuTorch's edge dialect take.
KNOWN_NAMESPACES = ("aten", "prims", "quantized_decomposed", "torchao")
NOISY_LOGGERS = ("torch.export", "torch._export", "torchao", "executorch", "torch.fx")


@dataclass(kw_only=True)
class ExecuTorchReport(Report):
    """What ``export_executorch`` wrote and how closely ExecuTorch's runtime matched PyTorch.

    ``bytes``: the ``.pte`` file. ``max_abs_diff`` and ``sqnr_db`` (10 log10 of sum y^2 over
    sum (y_ExecuTorch - y)^2 over every output) compare the runtime's outputs with the PyTorch
    model's on the example input (``input_shapes``); for a model with prunekit layers, with
    the dense float model exported in its place (its int8 layers no longer quantize their
    activations; shared and weight-only layers compute the same). A float export is held to
    ``atol + rtol * |PyTorch|``, a quantized one is reported by its SQNR. ``delegated_ops`` of
    ``total_ops`` graph ops run in XNNPACK; ``not_delegated`` counts the others by op.
    ``dense_note``: how prunekit's own layers (weight-shared, quantized, pruned) were written.
    """

    path: str
    bytes: int
    quantize: str | None
    max_abs_diff: float
    sqnr_db: float
    delegated_ops: int
    total_ops: int
    input_shapes: list[list[int]]
    output_names: list[str]
    atol: float
    rtol: float
    not_delegated: dict[str, int] = field(default_factory=dict)
    dense_note: str | None = None

    def title(self) -> str:
        shapes = ", ".join("x".join(map(str, s)) for s in self.input_shapes)
        kind = "float32" if self.quantize is None else self.quantize
        return f"ExecuTorch {self.path}: {human_size(self.bytes)}, {kind}, XNNPACK, input {shapes}"

    def notes(self) -> list[str]:
        share = self.delegated_ops / self.total_ops if self.total_ops else 0.0
        lines = [
            f"delegated to XNNPACK: {self.delegated_ops} of {self.total_ops} ops ({share:.0%})"
        ]
        if self.not_delegated:
            top = sorted(self.not_delegated.items(), key=lambda kv: -kv[1])[:5]
            lines[-1] += "; portable: " + ", ".join(f"{op} x{n}" for op, n in top)
        if self.quantize is None:
            lines.append(
                f"ExecuTorch vs PyTorch: max |diff| {self.max_abs_diff:.2e} "
                f"(atol {self.atol:g}, rtol {self.rtol:g})"
            )
        else:
            lines.append(
                f"ExecuTorch {self.quantize} vs PyTorch float: SQNR {self.sqnr_db:.1f} dB, "
                f"max |diff| {self.max_abs_diff:.2e}"
            )
        if self.dense_note:
            lines.append(f"exported dense: {self.dense_note}")
        lines.append(f"exported and checked in {self.seconds:.1f} s")
        return lines + super().notes()


def export_executorch(
    model: nn.Module,
    path: str | Path,
    example_inputs: ExampleInputs,
    *,
    quantize: str | None = None,
    data: Iterable[Any] | None = None,
    num_samples: int = NUM_SAMPLES,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> ExecuTorchReport:
    """Write ``model`` as an ExecuTorch program (XNNPACK) at ``path``; returns the report.

    ``example_inputs``: one batch as the model takes it (a tensor, a tuple of positional
    arguments or a dict of keyword arguments); its shapes are the program's. ``quantize``: None
    (float32), ``"int8"`` (static, calibrated on up to ``num_samples`` samples of ``data``, an
    iterable of batches), ``"int8-dynamic"`` or ``"8da4w"`` (linear layers; no data). The
    program is run in ExecuTorch's runtime first: a float one must match the model within
    ``atol + rtol * |PyTorch|``. Anything that fails raises ``PrunekitError`` in one line (the
    op or module that cannot export) and writes nothing; ``model`` is not changed.
    """
    start = time.perf_counter()
    path = _check_args(model, path, quantize, data, num_samples, atol, rtol)
    dense, note = dense_twin(model)
    call = ModelCall.of(dense, example_inputs, False, False)
    tensors = _tensors(call.inputs)
    with evaluating(model), evaluating(dense):
        try:
            outputs = call.outputs(dense, call.inputs)
        except Exception as err:
            raise PrunekitError(
                f"example_inputs: the model fails on them: {type(err).__name__}: {one_line(err)}"
            ) from err
        expected, names = flat_tensors(outputs), output_names(outputs)
        flat = _Flat(dense, call)
        with quiet(NOISY_LOGGERS):
            program = _export(flat, tensors, quantize, data, num_samples, call)
            edge = _lower(program, dense, call)
            delegated, total, portable = _delegation(edge)
            buffer = _to_executorch(edge)
        got = _run(buffer, tensors)
    diff, sqnr = _compare(got, expected, names, quantize, atol, rtol)
    write_bytes(path, buffer)
    report = ExecuTorchReport(
        method="export-executorch",
        config={"quantize": quantize, "num_samples": num_samples, "atol": atol, "rtol": rtol},
        path=str(path),
        bytes=len(buffer),
        quantize=quantize,
        max_abs_diff=diff,
        sqnr_db=sqnr,
        delegated_ops=delegated,
        total_ops=total,
        input_shapes=[list(t.shape) for t in tensors],
        output_names=names,
        atol=atol,
        rtol=rtol,
        seconds=time.perf_counter() - start,
        not_delegated=portable,
        dense_note=note,
    )
    log.info("exported %s in %.1f s", path, report.seconds)
    return report


def _check_args(
    model: nn.Module,
    path: str | Path,
    quantize: str | None,
    data: Iterable[Any] | None,
    num_samples: int,
    atol: float,
    rtol: float,
) -> Path:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module; got {type(model).__name__}")
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise PrunekitError(
            f"quantize: expected one of {list(QUANTIZE_MODES)} or None; got {quantize!r}"
        )
    if quantize == "int8" and data is None:
        raise PrunekitError(
            "data: quantize='int8' calibrates activation ranges on data; pass data=batches "
            "(CLI --data SPEC), or use quantize='int8-dynamic', which needs none"
        )
    if not (isinstance(num_samples, int) and num_samples >= 1):
        raise PrunekitError(f"num_samples: must be an integer >= 1; got {num_samples!r}")
    if not (atol >= 0 and rtol >= 0):
        raise PrunekitError(f"atol, rtol: must be >= 0; got atol={atol}, rtol={rtol}")
    try:
        with quiet(NOISY_LOGGERS):  # torchao logs a warning per CUDA library it cannot load
            import executorch.exir  # noqa: F401
            import torchao.quantization  # noqa: F401
    except ImportError as err:
        raise PrunekitError(f"export_executorch needs ExecuTorch ({err}); {INSTALL}") from None
    path = Path(path).expanduser()
    if path.is_dir():
        raise PrunekitError(f"path: {str(path)!r} is a directory; name the .pte file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class _Flat(nn.Module):
    """The model called with its example's tensors as positional inputs (the order the
    runtime takes them), returning its output tensors as a flat tuple."""

    def __init__(self, model: nn.Module, call: ModelCall) -> None:
        super().__init__()
        self.model = model
        self.call = call

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values = iter(tensors)

        def fill(v: Any) -> Any:
            return next(values) if isinstance(v, torch.Tensor) else v

        inputs = self.call.inputs
        if isinstance(inputs, Mapping):
            inputs = {k: fill(v) for k, v in inputs.items()}
        else:
            inputs = tuple(fill(v) for v in inputs)
        args, kwargs = self.call.args_kwargs(inputs)
        return tuple(flat_tensors(self.model(*args, **kwargs)))


def _tensors(inputs: Any) -> tuple[torch.Tensor, ...]:
    values = inputs.values() if isinstance(inputs, Mapping) else inputs
    return tuple(v for v in values if isinstance(v, torch.Tensor))


def _export(
    flat: _Flat,
    tensors: tuple[torch.Tensor, ...],
    quantize: str | None,
    data: Iterable[Any] | None,
    num_samples: int,
    call: ModelCall,
) -> Any:
    if quantize in ("int8-dynamic", "8da4w"):
        flat = copy.deepcopy(flat)
        _quantize_linear_(flat, quantize)
    program = _torch_export(flat, tensors, call)
    if quantize != "int8":
        return program
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    config = get_symmetric_quantization_config(is_per_channel=True)
    quantizer = XNNPACKQuantizer().set_global(config)
    prepared = prepare_pt2e(program.module(), quantizer)
    assert data is not None  # _check_args
    seen = 0
    with torch.no_grad():
        for chunk in _calibration(data, call, num_samples):
            prepared(*chunk)
            seen += 1
    if not seen:
        raise PrunekitError(
            f"data: quantize='int8' needs at least {call.batch} samples to calibrate on "
            f"(the example's batch size); got none"
        )
    return _torch_export(convert_pt2e(prepared), tensors, call)


def _quantize_linear_(model: nn.Module, mode: str) -> None:
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    if mode == "int8-dynamic":
        config = Int8DynamicActivationIntxWeightConfig(
            weight_dtype=torch.int8, weight_granularity=PerAxis(0)
        )
        quantize_(model, config)
        return
    config = Int8DynamicActivationIntxWeightConfig(
        weight_dtype=torch.int4, weight_granularity=PerGroup(GROUP_SIZE)
    )
    quantize_(
        model,
        config,
        filter_fn=lambda m, _: isinstance(m, nn.Linear) and m.in_features % GROUP_SIZE == 0,
    )


def _calibration(
    data: Iterable[Any], call: ModelCall, num_samples: int
) -> Iterator[tuple[torch.Tensor, ...]]:
    """The data's inputs in chunks of the example's batch size (the program's static shape),
    ``num_samples`` samples at most; a remainder smaller than a chunk is left out."""
    taken = 0
    for batch in data:
        inputs, _ = split_batch(batch)
        if isinstance(inputs, torch.Tensor):
            inputs = (inputs,)
        if isinstance(inputs, Mapping):
            inputs = {k: v for k, v in inputs.items() if k in call.names}
        tensors = _tensors(inputs)
        shapes = [tuple(t.shape[1:]) for t in tensors]
        wanted = [tuple(t.shape[1:]) for t in _tensors(call.inputs)]
        if shapes != wanted:
            raise PrunekitError(
                f"data: its batches hold inputs of shapes {shapes} (batch dimension left out) "
                f"but the example's are {wanted}; the program has the example's shapes"
            )
        for i in range(0, int(tensors[0].shape[0]) - call.batch + 1, call.batch):
            if taken >= num_samples:
                return
            yield tuple(t[i : i + call.batch] for t in tensors)
            taken += call.batch


def _torch_export(module: nn.Module, tensors: tuple[torch.Tensor, ...], call: ModelCall) -> Any:
    try:
        with torch.no_grad():
            return torch.export.export(module, tensors, strict=False)
    except Exception as err:
        model = module.model if isinstance(module, _Flat) else module
        raise _explain("torch.export could not trace", model, call, err) from err


def _lower(program: Any, model: nn.Module, call: ModelCall) -> Any:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    except Exception as err:
        raise _explain("ExecuTorch could not lower", model, call, err) from err


def _to_executorch(edge: Any) -> bytes:
    try:
        return bytes(edge.to_executorch().buffer)
    except Exception as err:
        raise PrunekitError(
            f"export_executorch: ExecuTorch could not build the program: "
            f"{type(err).__name__}: {one_line(err)}"
        ) from err


def _explain(what: str, model: nn.Module, call: ModelCall, err: Exception) -> PrunekitError:
    """One line naming the op that failed and, when the forward shows it, the module calling it
    (the ops of namespaces ExecuTorch has no kernels for, such as torch.ops.quantized, first)."""
    chain = _chain(err)
    text = " ".join(str(e) for e in chain)
    callers = _op_callers(model, call)
    named = [f"{ns}.{op}" for ns, op in re.findall(r"\b(aten|prims|quantized)(?:::|\.)(\w+)", text)]
    bad = [op for op in callers if op.split(".")[0] not in KNOWN_NAMESPACES]
    bad += [op for op in named if op in callers or op.startswith("quantized.")]
    where = ""
    if bad:
        op = bad[0]
        caller = callers.get(op)
        by = f", called by module {caller or '<root>'!r} ({_class_name(model, caller)})"
        where = f" (op {op}{by if caller is not None else ''})"
    elif named:
        where = f" (op {named[0]})"
    last = chain[-1]
    hint = ""
    if "data-dependent" in text:
        hint = " (the forward branches on or sizes by tensor values; a program cannot)"
    return PrunekitError(
        f"export_executorch: {what} {type(model).__name__}{where}{hint}: "
        f"{type(last).__name__}: {one_line(last)}"
    )


def _class_name(model: nn.Module, name: str | None) -> str:
    module = dict(model.named_modules()).get(name or "")
    cls = type(module)
    # torch.ao's quantized Linear is called "Linear" too; its module path tells them apart.
    if cls.__module__.startswith("torch."):
        return f"{cls.__module__}.{cls.__qualname__}"
    return cls.__name__


def _chain(err: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    cause: BaseException | None = err
    while cause is not None and len(chain) < 10:
        chain.append(cause)
        cause = cause.__cause__
    return chain


def _delegation(edge: Any) -> tuple[int, int, dict[str, int]]:
    """(ops delegated to XNNPACK, all ops, {op: count} of those not delegated)."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(edge.exported_program().graph_module)
    rows = {k: v for k, v in info.delegation_by_operator.items() if k not in NOT_OPS}
    delegated = sum(v.delegated for v in rows.values())
    portable = {k: v.non_delegated for k, v in rows.items() if v.non_delegated}
    return delegated, delegated + sum(portable.values()), portable


def _run(buffer: bytes, tensors: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    from executorch.runtime import Runtime

    with _stderr_captured() as captured:
        try:
            method = Runtime.get().load_program(buffer).load_method("forward")
            assert method is not None  # the program has a forward: it was exported so
            return [t.clone() for t in method.execute(tensors)]
        except Exception as err:
            said = captured()
            raise PrunekitError(
                f"export_executorch: ExecuTorch's runtime cannot run the program: "
                f"{one_line(err)}{'; it said: ' + said if said else ''}; nothing was written"
            ) from err


def _compare(
    got: list[torch.Tensor],
    expected: list[torch.Tensor],
    names: list[str],
    quantize: str | None,
    atol: float,
    rtol: float,
) -> tuple[float, float]:
    """(max |ExecuTorch - PyTorch|, SQNR in dB) over every output."""
    if len(got) != len(expected):
        raise PrunekitError(
            f"export_executorch: the program returns {len(got)} tensors but the model "
            f"{len(expected)}; nothing was written"
        )
    deviation = Deviation()
    for name, g, e in zip(names, got, expected, strict=True):
        g, e = g.detach().double(), e.detach().cpu().double()
        if g.shape != e.shape:
            raise PrunekitError(
                f"export_executorch: output {name!r} has shape {tuple(g.shape)} in ExecuTorch "
                f"but {tuple(e.shape)} in PyTorch; nothing was written"
            )
        if not torch.isfinite(g).all() and torch.isfinite(e).all():
            raise PrunekitError(
                f"export_executorch: ExecuTorch's output {name!r} is not finite where "
                f"PyTorch's is; nothing was written"
            )
        diff = deviation.add(g, e)
        if quantize is None and not torch.allclose(g, e, atol=atol, rtol=rtol):
            raise PrunekitError(
                f"export_executorch: ExecuTorch's output {name!r} differs from PyTorch's by up "
                f"to {diff:.3g} (allowed: atol {atol:g} + rtol {rtol:g} * |PyTorch|); nothing "
                f"was written. Raise atol/rtol if that is precise enough"
            )
    return deviation.worst, deviation.sqnr_db


@contextmanager
def _stderr_captured() -> Iterator[Any]:
    """The runtime's C++ logging (CPU probing on first load, errors) goes to a file rather
    than the user's terminal; the yielded function returns its last line."""
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)

        def last_line() -> str:
            sink.seek(0)
            lines = [ln for ln in sink.read().decode(errors="replace").splitlines() if ln.strip()]
            return lines[-1].strip()[:300] if lines else ""

        try:
            yield last_line
        finally:
            os.dup2(saved, 2)
            os.close(saved)
