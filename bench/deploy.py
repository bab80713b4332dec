"""Deployment: every built-in model, compressed as a user would ship it, in PyTorch, onnxruntime
and ExecuTorch side by side.

For each model and variant, ``pk.measure_runtimes`` writes the file each runtime loads (the
prunekit artifact, ``.onnx``, ``.pte``), and measures its size, latency at batch 1 and a batched
size (the runtimes interleaved), and the task metric on that runtime's own outputs. An int8
variant hands each runtime the float model and ``quantize=``: PyTorch and onnxruntime run the
model ``quantize_`` makes, ExecuTorch XNNPACK's quantized program.

  lenet300  fp32 · int8 · Deep Compression (90 % magnitude + 1 epoch, 4-bit k-means)
  lenet5    fp32 · structured (2× fewer MACs, 1 epoch) · structured + int8
  vgg-bn    fp32 · structured (3× fewer MACs, widths ×8, 2 epochs) · structured + int8
  minilm    fp32 · int8-dynamic · SparseGPT 2:4 + int8-dynamic (sentences padded to 32 tokens)
  gpt-tiny  fp32 · int8-dynamic (128-token windows)

The speed-up column divides the model's fp32 PyTorch latency by each row's; the fp32 row and the
others are separate interleaved runs minutes apart on the same machine.

    python -m bench.deploy [--only lenet300 vgg-bn ...] [--min-run-time 1.0]
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import prunekit as pk
from bench.common import machine, write
from prunekit.data import load_data
from prunekit.data.batches import split_batch, take_samples
from prunekit.measure.render import markdown_table
from prunekit.measure.retrieval import retrieval_scores, wordnet_retrieval
from prunekit.measure.tasks import text_metrics
from prunekit.models.hf import load_tokenizer
from prunekit.specs import load_model

MODELS = ("lenet300", "lenet5", "vgg-bn", "minilm", "gpt-tiny")
IMAGE_SAMPLES = 2000  # test images each runtime classifies
SHORT = 32  # tokens: MiniLM's sentences are padded to this (fixed-shape programs)


@dataclass
class Variant:
    name: str
    model: nn.Module
    quantize: str | None = None


@dataclass
class Task:
    """A model's variants, how its runtimes are fed and scored."""

    variants: Callable[[], list[Variant]]
    data: Any  # labelled batches for top-1, or None
    example: Any
    batch: int
    metrics: Callable[[nn.Module], dict[str, float]] | None = None
    calibration: Any = None


def _images(name: str) -> Task:
    data = load_data("fashion-mnist")
    train = data.loader("train", batch_size=128, shuffle=True)
    calibration = list(take_samples(data.loader("train", batch_size=64), 512))
    test = data.loader("test", batch_size=256)
    example = split_batch(next(iter(test)))[0][:1]

    def variants() -> list[Variant]:
        dense = pk.models.pretrained(name, progress=False).eval()
        if name == "lenet300":
            dc = copy.deepcopy(dense)
            pk.prune_(dc, pk.MagnitudeConfig(sparsity=0.9, scope="global"))
            pk.finetune_(dc, train, epochs=1, progress=False)
            pk.share_weights_(dc, pk.KMeansConfig(bits=4))
            return [
                Variant("fp32", dense),
                Variant("int8", dense, "int8"),
                Variant("Deep Compression", dc),
            ]
        reduction, epochs = (2.0, 1) if name == "lenet5" else (3.0, 2)
        small = copy.deepcopy(dense)
        config = pk.MagnitudeConfig(pattern="channel", macs_reduction=reduction, round_to=8)
        pk.prune_(small, config, example_inputs=(example,))
        pk.finetune_(small, train, epochs=epochs, progress=False)
        return [
            Variant("fp32", dense),
            Variant(f"structured {reduction:g}× MACs", small),
            Variant(f"structured {reduction:g}× MACs + int8", small, "int8"),
        ]

    return Task(variants, test, example, 64, calibration=calibration)


def _minilm() -> Task:
    model, source = load_model("builtin:minilm")
    tok = load_tokenizer(source["path"])
    splits = load_data(source["dataset"], tokenizer=tok, seq_len=SHORT, mode="lines")
    calibration = list(take_samples(splits.loader("train", batch_size=32), 128))
    task = wordnet_retrieval(1000)
    example = dict(
        tok(["a short sentence"], padding="max_length", max_length=SHORT, return_tensors="pt")
    )

    def metrics(m: nn.Module) -> dict[str, float]:
        r = retrieval_scores(m, tok, task, batch_size=32, max_length=SHORT, fixed_length=True)
        return {"recall@1": 100 * r.recall_at_1}

    def variants() -> list[Variant]:
        sparse = copy.deepcopy(model)
        pk.prune_(sparse, pk.SparseGPTConfig(pattern="2:4"), data=calibration)
        return [
            Variant("fp32", model),
            Variant("int8-dynamic", model, "int8-dynamic"),
            Variant("SparseGPT 2:4 + int8-dynamic", sparse, "int8-dynamic"),
        ]

    return Task(variants, None, example, 32, metrics)


def _gpt_tiny() -> Task:
    model, source = load_model("builtin:gpt-tiny")
    tok = load_tokenizer(source["path"])
    splits = load_data(source["dataset"], tokenizer=tok, seq_len=128, mode="stream")
    perplexity = text_metrics(splits)

    def metrics(m: nn.Module) -> dict[str, float]:
        return {"perplexity": next(iter(perplexity(m).values()))}

    example = split_batch(next(iter(splits.loader("test", batch_size=1))))[0]
    return Task(
        lambda: [Variant("fp32", model), Variant("int8-dynamic", model, "int8-dynamic")],
        None,
        example,
        8,
        metrics,
    )


TASKS: dict[str, Callable[[], Task]] = {
    "lenet300": lambda: _images("lenet300"),
    "lenet5": lambda: _images("lenet5"),
    "vgg-bn": lambda: _images("vgg-bn"),
    "minilm": _minilm,
    "gpt-tiny": _gpt_tiny,
}


def run(name: str, min_run_time: float) -> list[dict[str, Any]]:
    task = TASKS[name]()
    rows = []
    for v in task.variants():
        start = time.perf_counter()
        report = pk.measure_runtimes(
            v.model,
            task.data,
            example_inputs=task.example,
            batch_sizes=(1, task.batch),
            min_run_time=min_run_time,
            num_samples=IMAGE_SAMPLES,
            metrics=task.metrics,
            quantize=v.quantize,
            calibration_data=task.calibration if task.calibration is not None else task.data,
        )
        for r in report.runtimes:
            quality = (
                100 * r.accuracy if r.accuracy is not None else next(iter(r.metrics.values()), None)
            )
            rows.append(
                {
                    "model": name,
                    "variant": v.name,
                    "runtime": r.runtime,
                    "file": r.file,
                    "bytes": r.bytes,
                    "latency_ms": {str(b): ms for b, ms in r.latency_ms.items()},
                    "batch": task.batch,
                    "quality": quality,
                    "metric": "top-1 %" if r.accuracy is not None else next(iter(r.metrics), None),
                    "note": r.note,
                    "error": r.error,
                }
            )
            print(f"{name:9} {v.name:32} {r.runtime:12} {_cells(rows[-1])}", flush=True)
        print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    return rows


def _cells(row: dict[str, Any]) -> str:
    if row["error"]:
        return f"error: {row['error'][:80]}"
    ms, b = row["latency_ms"], str(row["batch"])
    return (
        f"{row['bytes'] / 1e6:.2f} MB  b1 {ms.get('1', 0):.3f} ms  b{b} {ms.get(b, 0):.2f} ms  "
        f"{row['metric']} {row['quality']}"
    )


def table(rows: list[dict[str, Any]]) -> str:
    base = {
        (r["model"], b): r["latency_ms"][b]
        for r in rows
        if r["variant"] == "fp32" and r["runtime"] == "torch" and not r["error"]
        for b in r["latency_ms"]
    }
    out = []
    for r in rows:
        if r["error"]:
            out.append(
                [r["model"], r["variant"], r["runtime"], "–", "–", "–", "–", r["error"][:60]]
            )
            continue
        cells = []
        for b in ("1", str(r["batch"])):
            ms, ref = r["latency_ms"].get(b), base.get((r["model"], b))
            cells.append(
                "–" if ms is None else f"{ms:.3f} ({ref / ms:.1f}×)" if ref else f"{ms:.3f}"
            )
        quality = "–" if r["quality"] is None else f"{r['quality']:.2f} {r['metric']}"
        out.append(
            [
                r["model"],
                r["variant"],
                r["runtime"],
                f"{r['bytes'] / 1e3:,.0f} kB",
                *cells,
                quality,
                "",
            ]
        )
    head = ["model", "variant", "runtime", "file", "ms @ b1 (speed-up)", "ms @ batched (speed-up)"]
    return markdown_table([*head, "quality", "error"], out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--min-run-time", type=float, default=1.0)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = [row for name in args.only for row in run(name, args.min_run_time)]
    info = machine()
    batched = ", ".join(dict.fromkeys(f"{r['model']} {r['batch']}" for r in rows))
    md = (
        "# Deployment: each built-in model in PyTorch, onnxruntime and ExecuTorch\n\n"
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
        f"({info['torch_threads']} threads; onnxruntime and ExecuTorch's XNNPACK on as many), "
        f"{info['date']}. `python -m bench.deploy`: each row is `pk.measure_runtimes` on that "
        "variant; file = what the runtime loads (prunekit artifact, .onnx, batch-1 .pte); "
        "latency median of ≥ 5 timed blocks after warm-up, the three runtimes interleaved; "
        "speed-up = the model's fp32 PyTorch latency ÷ this row's (a separate run minutes "
        f"apart). Batched size: {batched}. Quality on each runtime's own outputs: top-1 on "
        f"{IMAGE_SAMPLES:,} Fashion-MNIST test images; MiniLM recall@1 on 1,000 held-out "
        f"WordNet definitions → words, padded to {SHORT} tokens; gpt-tiny perplexity on its "
        "held-out windows. int8 rows: each runtime's own int8 (PyTorch/onnxruntime: "
        "`quantize_`; ExecuTorch: XNNPACK's quantizer). Pruned and weight-shared models run "
        "dense in onnxruntime and ExecuTorch (their files hold every weight).\n\n" + table(rows)
    )
    js, out = write("deploy", {"machine": info, "args": vars(args), "rows": rows}, md)
    print(md)
    print(f"wrote {js} and {out}")
    return {"rows": rows}


if __name__ == "__main__":
    main()
