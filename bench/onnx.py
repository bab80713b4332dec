"""PyTorch or onnxruntime? Each compressed model timed in both, side by side, with its quality.

For every model: the fp32 model and its compressed form in PyTorch, and the ONNX files
``pk.export_onnx`` writes for both, run by onnxruntime (CPU, as many threads as PyTorch, idle
threads sleeping). All four are timed interleaved in one run (``prunekit.measure.time_models``),
so the ratios hold on a shared machine; quality is measured on each runtime's own outputs.
  - VGG-BN (Fashion-MNIST): int8 static (calibrated, BN folded) → a QDQ graph in onnxruntime.
  - LeNet-5 (Fashion-MNIST): the same.
  - LeNet-300-100: 4-bit round-to-nearest weights → onnxruntime's MatMulNBits.
  - all-MiniLM-L6-v2 (real weights, 128 tokens): int8 dynamic → onnxruntime's int8 dynamic.

    python -m bench.onnx [--only vgg-bn lenet5 lenet300 minilm] [--min-run-time 1.0]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import prunekit as pk
from bench.common import machine, write
from prunekit.data import load_data
from prunekit.data.batches import split_batch
from prunekit.measure.accuracy import top1_accuracy
from prunekit.measure.latency import time_models
from prunekit.measure.onnx import OnnxModule
from prunekit.measure.render import markdown_table

VARIANTS = ("PyTorch fp32", "PyTorch compressed", "onnxruntime fp32", "onnxruntime compressed")


def _fashion_case(name: str, compress: Callable[[nn.Module, Any], str]) -> Callable[..., dict]:
    def case(tmp: Path, min_run_time: float) -> dict[str, Any]:
        data = load_data("fashion-mnist")
        test = data.loader("test", batch_size=500)
        dense = pk.models.pretrained(name, progress=False)
        example, _ = split_batch(next(iter(test)))
        example = example[:64]
        small = copy.deepcopy(dense)
        method = compress(small, data.loader("train", batch_size=64))
        models = _export_pair(dense, small, (example,), tmp, name, {})

        def quality(m: nn.Module) -> float:
            return 100.0 * top1_accuracy(m, test)[0]

        return _measure(name, method, "top-1 %", models, example, (1, 64), quality, min_run_time)

    return case


def _int8_static(model: nn.Module, calib: Any) -> str:
    pk.quantize_(model, pk.Int8StaticConfig(), data=calib)
    return "int8 static → QDQ"


def _rtn4(model: nn.Module, calib: Any) -> str:
    pk.quantize_(model, pk.RTNConfig(bits=4, group_size=32))
    return "4-bit RTN g32 → MatMulNBits"


def _minilm(tmp: Path, min_run_time: float) -> dict[str, Any]:
    from prunekit.measure.retrieval import retrieval_scores, wordnet_retrieval
    from prunekit.models.hf import load_tokenizer
    from prunekit.specs import load_model

    dense, source = load_model("builtin:minilm")
    tok = load_tokenizer(source["path"])
    splits = load_data(source["dataset"], tokenizer=tok, seq_len=128, mode="lines")
    example, _ = split_batch(next(iter(splits.loader("test", batch_size=32))))
    small = copy.deepcopy(dense)
    pk.quantize_(small, pk.Int8DynamicConfig())
    task = wordnet_retrieval(1000)
    models = _export_pair(dense, small, example, tmp, "minilm", {"dynamic_sequence": True})

    def quality(m: nn.Module) -> float:
        return retrieval_scores(m, tok, task).recall_at_1

    return _measure(
        "minilm", "int8 dynamic", "recall@1", models, example, (1, 32), quality, min_run_time
    )


def _export_pair(
    dense: nn.Module, small: nn.Module, example: Any, tmp: Path, name: str, options: dict
) -> dict[str, Any]:
    fp32 = pk.export_onnx(dense, tmp / f"{name}-fp32.onnx", example_inputs=example, **options)
    comp = pk.export_onnx(small, tmp / f"{name}-small.onnx", example_inputs=example, **options)
    return {
        "models": [dense, small, OnnxModule(fp32.path), OnnxModule(comp.path)],
        "reports": {"fp32": fp32, "compressed": comp},
    }


def _measure(
    name: str,
    method: str,
    metric: str,
    exported: dict[str, Any],
    example: Any,
    batch_sizes: tuple[int, ...],
    quality: Callable[[nn.Module], float],
    min_run_time: float,
) -> dict[str, Any]:
    models = exported["models"]
    reports = exported["reports"]
    timed = time_models(models, example, batch_sizes=batch_sizes, min_run_time=min_run_time)
    scores = [quality(m) for m in models]
    print(f"{name}: {scores} {[t.median_ms for t in timed]}", flush=True)
    return {
        "model": name,
        "method": method,
        "metric": metric,
        "batch_sizes": list(batch_sizes),
        "quality": dict(zip(VARIANTS, scores, strict=True)),
        "latency_ms": {v: t.median_ms for v, t in zip(VARIANTS, timed, strict=True)},
        "latency_method": timed[0].method,
        "onnx_bytes": {k: r.bytes for k, r in reports.items()},
        "onnx_max_abs_diff": {k: r.max_abs_diff for k, r in reports.items()},
        "compressed_forms": getattr(reports["compressed"], "forms", None),
    }


CASES: dict[str, Callable[[Path, float], dict[str, Any]]] = {
    "vgg-bn": _fashion_case("vgg-bn", _int8_static),
    "lenet5": _fashion_case("lenet5", _int8_static),
    "lenet300": _fashion_case("lenet300", _rtn4),
    "minilm": _minilm,
}


def table(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        base = r["latency_ms"]["PyTorch fp32"]
        for i, b in enumerate(r["batch_sizes"]):
            cells = []
            for v in VARIANTS:
                ms = r["latency_ms"][v][b]
                cells.append(f"{ms:.3f} ({base[b] / ms:.2f}×)")
            q = [f"{r['quality'][v]:.4g}" for v in VARIANTS] if i == 0 else [""] * 4
            label = f"{r['model']}, {r['method']} ({r['metric']})" if i == 0 else ""
            rows.append([label, str(b), *cells, *q])
    head = ["model, compression (quality)", "batch", *(f"{v} ms" for v in VARIANTS)]
    head += [f"quality, {v}" for v in VARIANTS]
    return markdown_table(head, rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--min-run-time", type=float, default=1.0)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    results = []
    with tempfile.TemporaryDirectory(prefix="prunekit-onnx-") as tmp:
        for name in args.only:
            results.append(CASES[name](Path(tmp), args.min_run_time))
    info = machine()
    md = (
        "# PyTorch vs onnxruntime for compressed models\n\n"
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
        f"({info['torch_threads']} threads), {info['date']}. Latency: "
        f"{results[0]['latency_method']}; in brackets, PyTorch fp32's latency over this "
        "one's (> 1: faster). ONNX files written by `pk.export_onnx` (checked against PyTorch "
        "before writing); onnxruntime with as many threads as PyTorch, idle threads sleeping. "
        "Quality is each runtime's own: top-1 % on the 10,000 Fashion-MNIST test images, "
        "recall@1 of WordNet definition→words retrieval on 1,000 held-out synsets for MiniLM.\n\n"
        + table(results)
    )
    js, out = write("onnx", {"machine": info, "args": vars(args), "results": results}, md)
    print(md)
    print(f"wrote {js} and {out}")
    return {"results": results}


if __name__ == "__main__":
    main()
