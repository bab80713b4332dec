"""One model in each runtime it deploys to: file size, latency, peak memory and task metric.

``measure_runtimes`` writes the model as each runtime loads it (the prunekit artifact for
PyTorch, an ``.onnx`` file for onnxruntime, ``.pte`` programs for ExecuTorch) into a temporary
directory, then measures every runtime the same way: the file's bytes, its latency at each batch
size (all runtimes timed in one interleaved run, see ``prunekit.measure.latency``), the peak
resident memory added by loading the file and running it, and accuracy (or the given metrics)
on that runtime's own outputs. A runtime that cannot take the model gets a row saying why; the
others still run. With ``quantize``, each runtime runs its own int8 form of the float model:
PyTorch and onnxruntime the model ``quantize_`` makes, ExecuTorch XNNPACK's quantized program.
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import gc
import logging
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.data.batches import first_batch, split_batch
from prunekit.errors import PrunekitError
from prunekit.export.inputs import one_line
from prunekit.measure._common import ExampleInputs, call, evaluating, resize
from prunekit.measure.accuracy import IGNORE_INDEX, top1_accuracy
from prunekit.measure.disk import measure_artifact
from prunekit.measure.latency import time_models
from prunekit.report import Report

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnxruntime", "executorch")
QUANTIZE_MODES = ("int8", "int8-dynamic", "smoothquant")
# The ONNX file is exported and checked at this batch (dynamic); a batch of one would let the
# exporter specialise the batch dimension.
ONNX_EXAMPLE_BATCH = 2
MEMORY_METHOD = (
    "peak resident memory (VmHWM) while loading the runtime's file (torch: copying the model) "
    "and running one batch of each size, minus the resident memory just before; one process, "
    "peak reset between runtimes"
)

MISSING = "–"  # a cell without a value (en dash: the table still aligns it as a number)

Metrics = Callable[[nn.Module], dict[str, float]]


@dataclass
class RuntimeResult:
    """One runtime's row. ``file``: what it loads (``bytes`` on disk); ``latency_ms``: batch
    size -> median ms per call; ``peak_rss_bytes``: see ``MEMORY_METHOD`` (None where the
    system cannot say); ``accuracy``: top-1 over ``accuracy_samples`` labelled samples, on this
    runtime's outputs; ``metrics``: the task metrics, likewise; ``note``: how the runtime holds
    the model, where that differs from PyTorch (quantized by the export, delegated ops);
    ``error``: why the runtime could not take the model (every other field is then empty)."""

    runtime: str
    file: str | None = None
    bytes: int | None = None
    latency_ms: dict[int, float] = field(default_factory=dict)
    peak_rss_bytes: int | None = None
    accuracy: float | None = None
    accuracy_samples: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    note: str | None = None
    error: str | None = None


@dataclass(kw_only=True)
class RuntimeReport(Report):
    """``measure_runtimes``'s table: one ``RuntimeResult`` per runtime asked for, in order.

    ``batch_sizes``: the timed batch sizes; ``threads``: PyTorch's and onnxruntime's intra-op
    threads; ``latency_method`` and ``memory_method`` say how each column was measured.
    """

    runtimes: list[RuntimeResult]
    batch_sizes: list[int]
    threads: int
    latency_method: str | None = None
    memory_method: str = MEMORY_METHOD

    def title(self) -> str:
        return f"runtimes ({self.seconds:.1f} s)"

    def table(self) -> tuple[list[str], list[list[str]]]:
        names = self._metric_names()
        # Columns no runtime has a value for (accuracy without labels, notes) are left out.
        accuracy = any(r.accuracy is not None for r in self.runtimes)
        notes = any(r.error or r.note for r in self.runtimes)
        columns = ["runtime", "file", "size", *(f"ms @ batch {b}" for b in self.batch_sizes)]
        columns += ["peak memory", *(["top-1 %"] if accuracy else [])]
        columns += [*(n.split(" (")[0] for n in names), *(["note"] if notes else [])]
        rows = []
        for r in self.runtimes:
            if r.error is not None:
                rows.append([r.runtime, *[MISSING] * (len(columns) - 2), _cut(r.error)])
                continue
            row = [r.runtime, r.file or MISSING, _size(r.bytes)]
            row += [_ms(r.latency_ms.get(b)) for b in self.batch_sizes]
            row.append(_size(r.peak_rss_bytes))
            if accuracy:
                row.append(MISSING if r.accuracy is None else f"{100 * r.accuracy:.2f}")
            row += [f"{r.metrics[n]:.4g}" if n in r.metrics else MISSING for n in names]
            rows.append([*row, _cut(r.note or "")] if notes else row)
        return columns, rows

    def _metric_names(self) -> list[str]:
        return sorted({m for r in self.runtimes for m in r.metrics})

    def notes(self) -> list[str]:
        # What the table's cells cut short: each runtime's full reason or note, metric names.
        lines = [
            f"{r.runtime}: {text}"
            for r in self.runtimes
            if (text := r.error or r.note) and _cut(text) != text
        ]
        lines += [f"{n.split(' (')[0]}: {n}" for n in self._metric_names() if " (" in n]
        if self.latency_method:
            lines.append(f"latency: {self.latency_method}; onnxruntime on as many threads")
        lines.append(f"memory: {self.memory_method}")
        samples = {r.accuracy_samples for r in self.runtimes if r.accuracy_samples}
        if samples:
            lines.append(f"top-1 on {', '.join(map(str, sorted(samples)))} labelled samples")
        if any(r.runtime == "executorch" and r.error is None for r in self.runtimes):
            lines.append(
                "executorch: XNNPACK, one program per batch size (fixed shapes), the batch-1 "
                "program's size shown; other batches run in chunks of the largest"
            )
        return lines + super().notes()


def measure_runtimes(
    model: nn.Module,
    data: Iterable[Any] | None = None,
    *,
    example_inputs: ExampleInputs | None = None,
    runtimes: Sequence[str] = RUNTIMES,
    batch_sizes: Sequence[int] = (1, 64),
    latency: bool = True,
    min_run_time: float = 0.5,
    num_samples: int | None = None,
    accuracy: bool = True,
    metrics: Metrics | None = None,
    quantize: str | None = None,
    calibration_data: Iterable[Any] | None = None,
) -> RuntimeReport:
    """Measure ``model`` in each of ``runtimes`` (``"torch"``, ``"onnxruntime"``,
    ``"executorch"``); returns a ``RuntimeReport`` with one row per runtime.

    ``data``: re-iterable batches; with labels, top-1 accuracy is measured on each runtime's
    own outputs (over the first ``num_samples`` samples if given; ``accuracy=False`` skips it),
    and ``metrics(module)`` adds task metrics computed on a module that runs the runtime.
    ``example_inputs`` (default: the first batch of ``data``) is cut or repeated to each of
    ``batch_sizes`` for latency (``min_run_time`` seconds per runtime and size;
    ``latency=False`` skips it) and fixes the shapes of the ExecuTorch programs, one per batch
    size. A runtime whose export or run fails gets a row with ``error`` set; ``model`` is not
    changed.

    ``quantize``: ``"int8"`` (static, calibrated on ``calibration_data``, default ``data``),
    ``"int8-dynamic"`` or ``"smoothquant"`` (int8-dynamic after SmoothQuant's scales, read from
    the calibration data): ``model`` is the float model and each runtime runs its own int8 form
    of it. PyTorch runs a copy quantized by ``quantize_`` (``Int8StaticConfig``,
    ``Int8DynamicConfig`` or ``SmoothQuantConfig``), onnxruntime that copy exported, ExecuTorch
    the program ``export_executorch(quantize=...)`` makes (XNNPACK's quantizer; for
    smoothquant, its dynamic int8 of the smoothed float model).
    """
    start = time.perf_counter()
    inputs = _check_args(model, data, example_inputs, runtimes, batch_sizes)
    calibration = calibration_data if calibration_data is not None else data
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise PrunekitError(f"quantize: expected one of {QUANTIZE_MODES} or None; got {quantize!r}")
    if quantize in ("int8", "smoothquant") and calibration is None:
        raise PrunekitError(f"quantize={quantize!r} calibrates: pass data= or calibration_data=")
    sizes = sorted(set(batch_sizes))
    results = {name: RuntimeResult(name) for name in runtimes}
    modules: dict[str, nn.Module] = {}
    with tempfile.TemporaryDirectory(prefix="prunekit-runtimes-") as tmp, evaluating(model):
        try:
            with torch.inference_mode():
                # PyTorch's one-time setup (kernel caches, threads) is not the model's memory.
                call(model, resize(inputs, 1))
        except Exception as err:
            raise PrunekitError(f"example_inputs: the model fails on them: {_reason(err)}") from err
        writers: dict[str, Any] = dict(_WRITERS)
        quantized: nn.Module | Exception = model
        floating: nn.Module | Exception = model  # what ExecuTorch's own quantizer starts from
        if quantize is not None:
            mode = "int8-dynamic" if quantize == "smoothquant" else quantize
            writers["executorch"] = partial(_executorch, quantize=mode, data=calibration)
            if "torch" in runtimes or "onnxruntime" in runtimes:
                quantized = _torch_int8(model, quantize, calibration)
            if quantize == "smoothquant" and "executorch" in runtimes:
                floating = _smoothed(model, calibration)
        for name in runtimes:
            result = results[name]
            try:
                source = floating if name == "executorch" else quantized
                if isinstance(source, Exception):
                    raise source
                written = writers[name](source, inputs, sizes, Path(tmp))
                result.file, result.bytes, result.note = written.file, written.bytes, written.note
                if quantize is not None and name == "torch":
                    result.note = f"{quantize} by quantize_"
                modules[name], result.peak_rss_bytes = _load_and_run(written.load, inputs, sizes)
            except Exception as err:
                log.info("%s cannot take the model: %s", name, err)
                results[name] = RuntimeResult(name, error=_reason(err))
        timed_method = None
        if latency and modules:
            timed = time_models(
                list(modules.values()), inputs, batch_sizes=sizes, min_run_time=min_run_time
            )
            for name, lat in zip(modules, timed, strict=True):
                results[name].latency_ms = dict(lat.median_ms)
            timed_method = timed[0].method
        for name, module in modules.items():
            _task_metrics(results[name], module, data, num_samples, accuracy, metrics)
        # Sessions and programs hold the temporary files open: release them before cleanup.
        modules.clear()
    return RuntimeReport(
        method="measure-runtimes",
        config={
            "runtimes": list(runtimes),
            "batch_sizes": sizes,
            "min_run_time": min_run_time,
            "quantize": quantize,
        },
        seconds=time.perf_counter() - start,
        runtimes=list(results.values()),
        batch_sizes=sizes,
        threads=torch.get_num_threads(),
        latency_method=timed_method,
    )


def _check_args(
    model: nn.Module,
    data: Iterable[Any] | None,
    example_inputs: ExampleInputs | None,
    runtimes: Sequence[str],
    batch_sizes: Sequence[int],
) -> ExampleInputs:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module; got {type(model).__name__}")
    if isinstance(runtimes, str) or not runtimes:
        raise PrunekitError(f"runtimes: expected a list of names from {list(RUNTIMES)}")
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown or len(set(runtimes)) != len(runtimes):
        raise PrunekitError(
            f"runtimes: expected distinct names from {list(RUNTIMES)}; got {list(runtimes)}"
        )
    if not batch_sizes or any(not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise PrunekitError(f"batch_sizes: expected positive integers; got {batch_sizes!r}")
    if data is not None and iter(data) is data:
        raise PrunekitError(
            f"data: got a one-shot iterator ({type(data).__name__}); each runtime reads it, "
            f"so pass a list of batches or a DataLoader"
        )
    if example_inputs is not None:
        return example_inputs
    if data is None:
        raise PrunekitError("example_inputs: pass example_inputs or data to run the model on")
    return split_batch(first_batch(data))[0]


@dataclass(frozen=True)
class _Written:
    """The file a runtime loads, its bytes, a note on how it holds the model, and ``load()``
    which returns a module running it."""

    file: str
    bytes: int
    note: str | None
    load: Callable[[], nn.Module]


def _torch_int8(model: nn.Module, mode: str, data: Iterable[Any] | None) -> nn.Module | Exception:
    """A copy of ``model`` that ``quantize_`` made int8, or why it could not."""
    from prunekit.quantize import (
        Int8DynamicConfig,
        Int8StaticConfig,
        SmoothQuantConfig,
        quantize_,
    )

    configs = {"int8": Int8StaticConfig, "smoothquant": SmoothQuantConfig}
    config = configs.get(mode, Int8DynamicConfig)()
    twin = copy.deepcopy(model)
    try:
        quantize_(twin, config, data=data)
    except Exception as err:
        return err
    return twin


def _smoothed(model: nn.Module, data: Iterable[Any] | None) -> nn.Module | Exception:
    """A float copy of ``model`` with SmoothQuant's scales folded in, or why not."""
    from prunekit.quantize import SmoothQuantConfig, smooth_

    twin = copy.deepcopy(model)
    try:
        smooth_(twin, SmoothQuantConfig(), data)
    except Exception as err:
        return err
    return twin


def _torch(model: nn.Module, inputs: Any, sizes: list[int], tmp: Path) -> _Written:
    size = measure_artifact(model)
    # The model as a loaded artifact holds it: its own weights, in memory.
    return _Written("prunekit artifact", size.bytes, None, lambda: copy.deepcopy(model))


def _onnx(model: nn.Module, inputs: Any, sizes: list[int], tmp: Path) -> _Written:
    from prunekit.export.onnx import export_onnx
    from prunekit.measure.onnx import OnnxModule

    path = tmp / "model.onnx"
    report = export_onnx(model, path, resize(inputs, ONNX_EXAMPLE_BATCH))
    note = f"{report.quantize} in onnxruntime" if report.quantize else None
    return _Written(path.name, report.bytes, note, lambda: OnnxModule(path))


def _executorch(
    model: nn.Module,
    inputs: Any,
    sizes: list[int],
    tmp: Path,
    quantize: str | None = None,
    data: Iterable[Any] | None = None,
) -> _Written:
    from prunekit.export.executorch import export_executorch

    reports = {
        b: export_executorch(
            model, tmp / f"model-b{b}.pte", resize(inputs, b), quantize=quantize, data=data
        )
        for b in sizes
    }
    paths = {b: r.path for b, r in reports.items()}
    first = reports[sizes[0]]
    note = (
        f"{quantize + ' ' if quantize else ''}XNNPACK {first.delegated_ops}/{first.total_ops} ops"
    )
    if threads := _executorch_threads():
        note += f", {threads} threads"
    if first.dense_note:
        note += f"; exported dense: {first.dense_note}"
    return _Written(Path(first.path).name, first.bytes, note, lambda: PteModule(paths))


def _executorch_threads() -> int | None:
    try:
        from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the call is marked experimental
        return int(_threadpool_get_thread_count())


_WRITERS = {"torch": _torch, "onnxruntime": _onnx, "executorch": _executorch}


class PteModule(nn.Module):
    """ExecuTorch programs of one model, one per batch size, called like the model.

    ``paths``: batch size -> ``.pte`` file. The input tensors (positional, or keyword in the
    order the program was exported with) go to the program of their batch size; another batch
    size runs in chunks of the largest, the last one padded by repeating its final sample.
    Returns the first output tensor, or a tuple of them for several.
    """

    def __init__(self, paths: Mapping[int, str | Path]) -> None:
        super().__init__()
        from executorch.runtime import Runtime

        runtime = Runtime.get()
        self.methods = {
            b: runtime.load_program(Path(p)).load_method("forward") for b, p in paths.items()
        }

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor, ...]:
        tensors = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)]
        n = int(tensors[0].shape[0])
        if n in self.methods:
            outputs = self._run(n, tensors)
        else:
            step = max(self.methods)
            chunks = [self._run(step, _padded(tensors, i, step)) for i in range(0, n, step)]
            outputs = [torch.cat(parts)[:n] for parts in zip(*chunks, strict=True)]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def _run(self, n: int, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        return [t.clone() for t in self.methods[n].execute(tuple(t.contiguous() for t in tensors))]


def _padded(tensors: list[torch.Tensor], start: int, step: int) -> list[torch.Tensor]:
    out = []
    for t in tensors:
        part = t[start : start + step]
        if len(part) < step:
            part = torch.cat([part, part[-1:].expand(step - len(part), *part.shape[1:])])
        out.append(part)
    return out


def _load_and_run(
    load: Callable[[], nn.Module], inputs: Any, sizes: list[int]
) -> tuple[nn.Module, int | None]:
    """The runtime's module, loaded and run once at each batch size; and the peak resident
    memory that added (see ``MEMORY_METHOD``)."""
    batches = [resize(inputs, b) for b in sizes]
    before = _reset_peak()
    module = load()
    with torch.inference_mode():
        for batch in batches:
            call(module, batch)
    peak = _status_kb("VmHWM")
    grown = None if before is None or peak is None else max(0, peak - before) * 1024
    return module, grown


def _reset_peak() -> int | None:
    """Resident kB after returning freed memory to the system and resetting the peak (Linux);
    None where the kernel offers neither."""
    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc is not None:
        trim = getattr(ctypes.CDLL(libc), "malloc_trim", None)
        if trim is not None:
            trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _status_kb("VmRSS")


def _status_kb(key: str) -> int | None:
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def _task_metrics(
    result: RuntimeResult,
    module: nn.Module,
    data: Iterable[Any] | None,
    num_samples: int | None,
    accuracy: bool,
    metrics: Metrics | None,
) -> None:
    try:
        if data is not None and accuracy:
            acc = top1_accuracy(module, data, num_samples=num_samples)
            if acc is not None:
                result.accuracy, result.accuracy_samples = acc
        if metrics is not None:
            if result.runtime != "torch":
                module = _HuggingFaceOutputs(module)
            result.metrics = {name: float(v) for name, v in metrics(module).items()}
    except Exception as err:
        failed = f"task metric failed: {_reason(err)}"
        result.note = f"{result.note}; {failed}" if result.note else failed


class _HuggingFaceOutputs(nn.Module):
    """A runtime's module answering as a Hugging Face model does, for the task metrics: its
    first output as ``logits`` and ``last_hidden_state``, and with ``labels`` the causal-LM
    ``loss`` (next-token cross-entropy, ``-100`` ignored), computed from those logits."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Any, labels: torch.Tensor | None = None, **kwargs: Any) -> Any:
        out = self.module(*args, **kwargs)
        first = out[0] if isinstance(out, tuple) else out
        loss = None
        if labels is not None:
            logits = first[:, :-1].float()
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                labels[:, 1:].reshape(-1).to(logits.device),
                ignore_index=IGNORE_INDEX,
            )
        return SimpleNamespace(loss=loss, logits=first, last_hidden_state=first)


def _reason(err: Exception) -> str:
    text = one_line(err)
    return text if isinstance(err, PrunekitError) else f"{type(err).__name__}: {text}"


def _cut(text: str, limit: int = 40) -> str:
    """A table cell's share of ``text``; the notes under the table hold the rest."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _size(n: int | None) -> str:
    if n is None:
        return MISSING
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _ms(ms: float | None) -> str:
    return MISSING if ms is None else f"{ms:.3f}"
