"""ONNX files in onnxruntime: a module that runs one, and its latency against PyTorch's.

``onnx_latency`` times the PyTorch model and ONNX files in one interleaved run (see
``prunekit.measure.latency``), so their ratios are side by side on a shared machine.
onnxruntime gets as many threads as PyTorch, and its idle threads sleep rather than spin, as
PyTorch's do under ``OMP_WAIT_POLICY=PASSIVE``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.measure._common import ExampleInputs
from prunekit.measure.latency import Latency, time_models


def session(path: str | Path, threads: int | None = None, spinning: bool = False) -> Any:
    """An onnxruntime CPU session on the file at ``path`` with ``threads`` intra-op threads
    (default ``torch.get_num_threads()``); see ``OnnxModule`` for ``spinning``."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise PrunekitError(
            "onnxruntime is not installed; pip install 'prunekit[export]'"
        ) from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModule(nn.Module):
    """An ONNX file run by onnxruntime on CPU, called like the model it came from.

    Positional tensors feed the graph's inputs in order, keyword tensors by name; returns one
    tensor, or a tuple of tensors for several outputs. ``threads`` defaults to
    ``torch.get_num_threads()``. ``spinning=False`` stops idle worker threads from busy-waiting,
    as ``OMP_WAIT_POLICY=PASSIVE`` does for PyTorch; on a shared machine spinning steals cores.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None, spinning: bool = False):
        super().__init__()
        self.path = str(path)
        self.session = session(path, threads, spinning)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor, ...]:
        feed = dict(zip(self.input_names, args, strict=False))
        feed.update({k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)})
        missing = [n for n in self.input_names if n not in feed]
        if missing or len(args) > len(self.input_names):
            raise PrunekitError(
                f"{self.path}: the graph takes inputs {self.input_names}; got "
                f"{len(args)} positional and keywords {sorted(kwargs)}"
            )
        arrays = {n: np.ascontiguousarray(feed[n].detach().cpu().numpy()) for n in self.input_names}
        outputs = [torch.from_numpy(o) for o in self.session.run(None, arrays)]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


@dataclass(frozen=True)
class OnnxLatency:
    """PyTorch and onnxruntime latencies from one interleaved run, on the same inputs.

    ``pytorch``: the model's; ``onnx``: one per file, in the order of ``paths``.
    ``speedup(i)``: batch size -> PyTorch ms / onnxruntime ms for file ``i`` (> 1: ONNX faster).
    """

    pytorch: Latency
    onnx: list[Latency]
    paths: list[str]

    def speedup(self, i: int = 0) -> dict[int, float]:
        return {b: ms / self.onnx[i].median_ms[b] for b, ms in self.pytorch.median_ms.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "pytorch_ms": self.pytorch.median_ms,
            "onnx": [
                {"path": p, "ms": lat.median_ms, "speedup": self.speedup(i)}
                for i, (p, lat) in enumerate(zip(self.paths, self.onnx, strict=True))
            ],
            "threads": self.pytorch.threads,
            "method": self.pytorch.method,
        }

    def __str__(self) -> str:
        files = [Path(p).name for p in self.paths]
        head = ["batch", "PyTorch ms", *(f"{f} ms" for f in files)]
        head += [f"PyTorch/{f}" for f in files]
        rows = [
            [
                str(b),
                f"{ms:.3f}",
                *(f"{lat.median_ms[b]:.3f}" for lat in self.onnx),
                *(f"{self.speedup(i)[b]:.2f}" for i in range(len(self.onnx))),
            ]
            for b, ms in self.pytorch.median_ms.items()
        ]
        widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]
        table = [
            "  ".join(x.rjust(w) for x, w in zip(r, widths, strict=True)) for r in [head, *rows]
        ]
        note = f"PyTorch/FILE > 1: onnxruntime is faster; {self.pytorch.method}"
        return "\n".join([*table, note])


def onnx_latency(
    model: nn.Module,
    paths: str | Path | Sequence[str | Path],
    example_inputs: ExampleInputs,
    *,
    batch_sizes: Sequence[int] = (1, 64),
    min_run_time: float = 0.5,
    warmup: int = 3,
    spinning: bool = False,
) -> OnnxLatency:
    """Time ``model`` in PyTorch and each ONNX file in onnxruntime, interleaved (see
    ``prunekit.measure.time_models``), on ``example_inputs`` cut or repeated to each batch size.

    onnxruntime gets as many threads as PyTorch (``torch.get_num_threads()``); the files need a
    dynamic batch for batch sizes other than the one exported.
    """
    files = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not files:
        raise PrunekitError("paths: pass at least one ONNX file to time")
    runners = [OnnxModule(f, spinning=spinning) for f in files]
    timed = time_models(
        [model, *runners],
        example_inputs,
        batch_sizes=batch_sizes,
        min_run_time=min_run_time,
        warmup=warmup,
    )
    return OnnxLatency(pytorch=timed[0], onnx=timed[1:], paths=[str(f) for f in files])
