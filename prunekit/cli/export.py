"""``prunekit export DIR --onnx FILE``: write a model as ONNX, checked in onnxruntime;
``prunekit export DIR --executorch FILE.pte``: as an ExecuTorch program (XNNPACK), checked in
ExecuTorch's runtime.

Example inputs come from ``--input-shape`` (random values of that shape), else the first test
batch of ``--data``, else of the dataset the model's source records (a builtin's, or the one a
``prunekit prune`` run used). An ExecuTorch program has the example's shapes: its example is
one sample (batch 1) unless ``--input-shape`` says otherwise; ``--quantize int8`` calibrates on
the training split of the same data.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import typer

from prunekit.cli.common import (
    check_data_fits,
    check_data_spec,
    check_out_file,
    print_json,
    require,
    resolve_data,
    show,
)
from prunekit.data.batches import first_batch, split_batch
from prunekit.errors import PrunekitError, quote
from prunekit.export import OPSET, export_onnx
from prunekit.export.executorch import QUANTIZE_MODES as PTE_QUANTIZE_MODES
from prunekit.export.executorch import export_executorch
from prunekit.export.onnx import MIN_OPSET
from prunekit.export.onnx import QUANTIZE_MODES as ONNX_QUANTIZE_MODES
from prunekit.measure.onnx import onnx_latency
from prunekit.specs import load_model

EXAMPLE_BATCH = 4
CALIBRATION_BATCH = 32
MAX_EXAMPLE_VALUES = 1 << 26  # 256 MiB of float32


def export(
    model: str = typer.Argument(
        ...,
        metavar="DIR",
        help="A directory written by prunekit (pk.save), or any model SPEC: builtin:NAME, "
        "hf:PATH, py:FILE.py:FUNCTION.",
    ),
    onnx: Path | None = typer.Option(None, "--onnx", help="The .onnx file to write."),
    executorch: Path | None = typer.Option(
        None, "--executorch", help="The .pte file to write (ExecuTorch, XNNPACK backend)."
    ),
    data: str | None = typer.Option(
        None,
        help="Data SPEC whose first test batch is the example input (default: the model's); "
        "with --executorch --quantize int8 its training split calibrates.",
    ),
    input_shape: str | None = typer.Option(
        None, help="Random example input of this shape instead of data, e.g. 1,1,28,28."
    ),
    quantize: str | None = typer.Option(
        None,
        help=f"Quantize: {', '.join(ONNX_QUANTIZE_MODES)} in onnxruntime (--onnx); "
        f"{', '.join(PTE_QUANTIZE_MODES)} in XNNPACK (--executorch).",
    ),
    opset: int = typer.Option(OPSET, help="ONNX opset version."),
    static_batch: bool = typer.Option(
        False, "--static-batch", help="Fix the batch size to the example's (default: dynamic)."
    ),
    dynamic_sequence: bool = typer.Option(
        False, "--dynamic-sequence", help="Let token-id inputs vary in sequence length too."
    ),
    atol: float = typer.Option(1e-4, help="Absolute tolerance of onnxruntime vs PyTorch."),
    rtol: float = typer.Option(1e-3, help="Relative tolerance of onnxruntime vs PyTorch."),
    latency: bool = typer.Option(
        False, "--latency", help="Also time the file in onnxruntime against PyTorch (batch 1, 64)."
    ),
    weights: str | None = typer.Option(None, help="A .safetensors file for py: models."),
    seq_len: int = typer.Option(128, help="Tokens per window or line for text:FILE data."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Export a model to ONNX (checked with onnx.checker and onnxruntime) or ExecuTorch
    (checked in ExecuTorch's runtime)."""
    if (onnx is None) == (executorch is None):
        raise PrunekitError("--onnx FILE or --executorch FILE.pte: pass exactly one of them")
    if data is not None and input_shape is not None:
        raise PrunekitError("--data and --input-shape: pass one of them, not both")
    modes = ONNX_QUANTIZE_MODES if executorch is None else PTE_QUANTIZE_MODES
    if quantize is not None and quantize not in modes:
        raise PrunekitError(
            f"--quantize: expected one of {', '.join(modes)}"
            f"{' with --executorch' if executorch is not None else ''}; got {quote(quantize)}"
        )
    if executorch is not None:
        onnx_only = {
            "--opset": opset != OPSET,
            "--static-batch": static_batch,
            "--dynamic-sequence": dynamic_sequence,
            "--latency": latency,
        }
        if any(onnx_only.values()):
            used = ", ".join(k for k, v in onnx_only.items() if v)
            raise PrunekitError(
                f"{used}: ONNX options; an ExecuTorch program has the example's fixed shapes "
                f"(set them with --input-shape)"
            )
        if quantize == "int8" and input_shape is not None:
            raise PrunekitError(
                "--quantize int8 calibrates on data: pass --data SPEC instead of --input-shape"
            )
    shape = parse_shape(input_shape) if input_shape is not None else None
    require(opset >= MIN_OPSET, "--opset", opset, f"{MIN_OPSET} or newer")
    require(atol >= 0, "--atol", atol, "≥ 0")
    require(rtol >= 0, "--rtol", rtol, "≥ 0")
    require(seq_len >= 2, "--seq-len", seq_len, "≥ 2")
    check_data_spec(data)
    check_out_file(onnx or executorch, "--onnx" if executorch is None else "--executorch")
    net, source = load_model(model, weights=weights)
    splits = None
    if shape is not None:
        inputs = random_inputs(net, shape)
    else:
        splits = resolve_data(data, source, needed=False, model=net, seq_len=seq_len)
        if splits is None:
            raise PrunekitError(
                f"{model}: no dataset is on record for this model, so there is no example "
                f"input; pass --data SPEC or --input-shape (e.g. 1,1,28,28)"
            )
        check_data_fits(net, splits)
        batch = EXAMPLE_BATCH if executorch is None else 1
        inputs = split_batch(first_batch(splits.loader("test", batch_size=batch)))[0]
    if executorch is not None:
        pte = _export_executorch(net, executorch, inputs, quantize, splits, atol, rtol)
        if json_out:
            print_json({"model": model, "export": pte.to_dict()})
        else:
            show(str(pte))
        return
    assert onnx is not None
    report = export_onnx(
        net,
        onnx,
        inputs,
        opset=opset,
        dynamic_batch=not static_batch,
        dynamic_sequence=dynamic_sequence,
        atol=atol,
        rtol=rtol,
        quantize=quantize,
    )
    result: dict[str, Any] = {"model": model, "export": report.to_dict()}
    timed = None
    if latency:
        sizes = (1, 64) if not static_batch else (report.batch_sizes[0],)
        timed = onnx_latency(net, onnx, inputs, batch_sizes=sizes)
        result["latency"] = timed.to_dict()
    if json_out:
        print_json(result)
        return
    show(str(report))
    if timed is not None:
        show(str(timed))


def _export_executorch(
    net: Any, path: Path, inputs: Any, quantize: str | None, splits: Any, atol: float, rtol: float
) -> Any:
    calibration = None
    if quantize == "int8":
        calibration = splits.loader("train", batch_size=CALIBRATION_BATCH, shuffle=False)
    return export_executorch(
        net, path, inputs, quantize=quantize, data=calibration, atol=atol, rtol=rtol
    )


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,1,28,28"`` -> ``(1, 1, 28, 28)``; the first number is the batch size."""
    try:
        shape = tuple(int(x) for x in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) < 1 or any(n < 1 for n in shape):
        raise PrunekitError(
            f"--input-shape: expected positive integers separated by commas, batch first, "
            f"e.g. 1,1,28,28; got {quote(text)}"
        )
    if math.prod(shape) > MAX_EXAMPLE_VALUES:
        raise PrunekitError(
            f"--input-shape {quote(text)}: {math.prod(shape):,} values; an example input holds "
            f"at most {MAX_EXAMPLE_VALUES:,}: use batch 1 and the model's own input size"
        )
    return shape


def random_inputs(model: Any, shape: tuple[int, ...]) -> Any:
    """Seeded example inputs of ``shape``: token ids for a Hugging Face text model (keyword
    ``input_ids``), standard normal values otherwise."""
    g = torch.Generator().manual_seed(0)
    name = getattr(model, "main_input_name", None)
    if name == "input_ids":
        vocab = int(getattr(model.config, "vocab_size", 2))
        return {name: torch.randint(0, vocab, shape, generator=g)}
    x = torch.randn(shape, generator=g)
    return {name: x} if isinstance(name, str) else x


def register(app: typer.Typer) -> None:
    app.command("export")(export)
