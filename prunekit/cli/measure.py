"""``prunekit measure SPEC_OR_DIR``: accuracy, size, MACs and latency of one model;
``--runtime torch|onnxruntime|executorch|all``: file size, latency, peak memory and accuracy of
the model in each runtime it deploys to (``prunekit.measure.runtimes``)."""

from __future__ import annotations

from pathlib import Path

import typer

from prunekit.artifact.manifest import MANIFEST, read_manifest
from prunekit.cli.common import (
    check_data_fits,
    check_data_spec,
    console,
    is_text,
    print_json,
    require,
    resolve_data,
    show,
)
from prunekit.errors import PrunekitError, quote
from prunekit.measure import Measurement
from prunekit.measure import measure as measure_model
from prunekit.measure.disk import saved_sizes
from prunekit.measure.runtimes import QUANTIZE_MODES, RUNTIMES, measure_runtimes
from prunekit.measure.tasks import text_metrics
from prunekit.specs import load_model


def measure(
    model: str = typer.Argument(
        ..., metavar="SPEC_OR_DIR", help="builtin:NAME, py:FILE:FN, or a saved directory."
    ),
    data: str | None = typer.Option(None, help="Data SPEC for accuracy and example inputs."),
    weights: str | None = typer.Option(None, help="A .safetensors file for py: models."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    latency: bool = typer.Option(True, help="Measure CPU latency (takes a few seconds)."),
    seq_len: int = typer.Option(128, help="Tokens per window or line for text:FILE data."),
    runtime: str | None = typer.Option(
        None,
        help=f"Measure in these runtimes instead: {', '.join(RUNTIMES)} (comma-separated) or "
        f"all; file size, latency, peak memory and accuracy in each.",
    ),
    batch_size: int | None = typer.Option(
        None, help="Time batch 1 and this batch size (default 64; 8 for text)."
    ),
    quantize: str | None = typer.Option(
        None,
        help=f"With --runtime: each runtime runs its own int8 form of the model "
        f"({', '.join(QUANTIZE_MODES)}; int8 and smoothquant calibrate on the data's training "
        f"split).",
    ),
) -> None:
    """Measure a model: accuracy (or perplexity on text), parameters, non-zeros, bytes, MACs,
    latency; with --runtime, the same model in each runtime it deploys to."""
    require(seq_len >= 2, "--seq-len", seq_len, "≥ 2")
    require(batch_size is None or batch_size >= 1, "--batch-size", batch_size, "≥ 1")
    runtimes = parse_runtimes(runtime) if runtime is not None else None
    if quantize is not None and (runtimes is None or quantize not in QUANTIZE_MODES):
        raise PrunekitError(
            f"--quantize: expected int8 or int8-dynamic together with --runtime (or smoothquant: "
            f"int8-dynamic after SmoothQuant); got "
            f"{quote(quantize)}{'' if runtimes is not None else ' without --runtime'}"
        )
    check_data_spec(data)
    if runtimes is not None and weights is None and _needs_its_class(model):
        raise PrunekitError(
            f"{model}: --runtime needs the model's class, which prunekit does not import; in "
            f"Python: pk.measure_runtimes(pk.load(DIR, model=YourModel()), data=...)"
        )
    if weights is None and _needs_its_class(model):
        # A user's own model: prunekit cannot build its class (it never imports code a folder
        # names), but sizes, bytes and bits per non-zero are in the artifact itself.
        result = Measurement(**saved_sizes(model))
        if json_out:
            print_json({"model": model, **result.to_dict()})
        else:
            show(str(result))
            console.print(
                "Accuracy, MACs and latency need the model: in Python, "
                "pk.measure(pk.load(DIR, model=YourModel()), data=...)."
            )
        return
    net, source = load_model(model, weights=weights)
    splits = resolve_data(data, source, needed=False, model=net, seq_len=seq_len)
    if splits is not None:
        check_data_fits(net, splits)
    text = splits is not None and is_text(splits)
    test = splits.loader("test", batch_size=16 if text else 256) if splits else None
    sizes = tuple(sorted({1, batch_size or (8 if text else 64)}))
    if runtimes is not None:
        if test is None:
            raise PrunekitError(
                f"{model}: no dataset is on record for this model, so there is nothing to run "
                f"it on; pass --data SPEC"
            )
        report = measure_runtimes(
            net,
            test,
            runtimes=runtimes,
            batch_sizes=sizes,
            latency=latency,
            accuracy=not text,
            metrics=text_metrics(splits) if text else None,
            quantize=quantize,
            calibration_data=splits.loader("train", batch_size=16 if text else 256)
            if quantize in ("int8", "smoothquant")
            else None,
        )
        if json_out:
            print_json({"model": model, "source": source, **report.to_dict()})
        else:
            show(str(report))
        return
    result = measure_model(
        net,
        test,
        latency=latency,
        accuracy=not text,
        metrics=text_metrics(splits) if text else None,
        batch_sizes=sizes,
    )
    if json_out:
        print_json({"model": model, "source": source, **result.to_dict()})
    else:
        show(str(result))


def parse_runtimes(text: str) -> tuple[str, ...]:
    """``"all"`` -> every runtime; ``"onnxruntime,executorch"`` -> those two."""
    names = tuple(RUNTIMES) if text == "all" else tuple(n.strip() for n in text.split(","))
    if not names or any(n not in RUNTIMES for n in names) or len(set(names)) != len(names):
        raise PrunekitError(
            f"--runtime: expected {', '.join(RUNTIMES)} (comma-separated) or all; got {quote(text)}"
        )
    return names


def _needs_its_class(spec: str) -> bool:
    folder = Path(spec).expanduser()
    if not (folder / MANIFEST).is_file():
        return False
    kind = read_manifest(folder)["source"].get("kind")
    return kind not in ("builtin", "hf")


def register(app: typer.Typer) -> None:
    app.command("measure")(measure)
