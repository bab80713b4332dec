"""ExecuTorch (XNNPACK) against PyTorch eager: .pte size, batch-1 latency and accuracy.

For every model: the trained fp32 model in PyTorch, and the two programs ``pk.export_executorch``
writes for it, fp32 and static int8 (XNNPACK's quantizer, per-channel weights, calibrated on
training images), run by ExecuTorch's runtime from Python. The three are timed interleaved
(``prunekit.measure.time_models``) at batch 1, the shape the programs have; accuracy is each
one's own, on the Fashion-MNIST test images one at a time (``--accuracy-samples`` of them).

    python -m bench.executorch [--only lenet300 lenet5 vgg-bn] [--min-run-time 1.0]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

import prunekit as pk
from bench.common import machine, write
from prunekit.data import load_data
from prunekit.data.batches import split_batch
from prunekit.measure.latency import time_models
from prunekit.measure.render import markdown_table
from prunekit.measure.runtimes import PteModule

MODELS = ("lenet300", "lenet5", "vgg-bn")
VARIANTS = ("PyTorch fp32", "ExecuTorch fp32", "ExecuTorch int8")
CALIBRATION_SAMPLES = 512


def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    correct = 0
    with torch.inference_mode():
        for i in range(len(images)):
            correct += int(model(images[i : i + 1]).argmax(1).item() == labels[i].item())
    return 100.0 * correct / len(images)


def case(name: str, tmp: Path, min_run_time: float, samples: int) -> dict[str, Any]:
    data = load_data("fashion-mnist")
    dense = pk.models.pretrained(name, progress=False)
    images, labels = split_batch(next(iter(data.loader("test", batch_size=samples))))
    example = images[:1]
    train = data.loader("train", batch_size=64, shuffle=False)
    fp32 = pk.export_executorch(dense, tmp / f"{name}.pte", example)
    int8 = pk.export_executorch(
        dense,
        tmp / f"{name}-int8.pte",
        example,
        quantize="int8",
        data=train,
        num_samples=CALIBRATION_SAMPLES,
    )
    models = [dense, PteModule({1: fp32.path}), PteModule({1: int8.path})]
    timed = time_models(models, example, batch_sizes=(1,), min_run_time=min_run_time)
    assert labels is not None
    accuracy = [_accuracy(m, images, labels) for m in models]
    print(f"{name}: {accuracy} {[t.median_ms for t in timed]}", flush=True)
    return {
        "model": name,
        "bytes": {"fp32": fp32.bytes, "int8": int8.bytes},
        "max_abs_diff_fp32": fp32.max_abs_diff,
        "sqnr_db_int8": int8.sqnr_db,
        "delegated": {
            "fp32": [fp32.delegated_ops, fp32.total_ops],
            "int8": [int8.delegated_ops, int8.total_ops],
        },
        "latency_ms": {v: t.median_ms[1] for v, t in zip(VARIANTS, timed, strict=True)},
        "latency_method": timed[0].method,
        "accuracy": dict(zip(VARIANTS, accuracy, strict=True)),
        "accuracy_samples": len(images),
    }


def table(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        ms, base = r["latency_ms"], r["latency_ms"]["PyTorch fp32"]
        size = r["bytes"]
        rows.append(
            [
                r["model"],
                f"{size['fp32'] / 1e3:.0f} kB",
                f"{size['int8'] / 1e3:.0f} kB ({size['fp32'] / size['int8']:.1f}× smaller)",
                f"{r['sqnr_db_int8']:.1f}",
                *(f"{ms[v]:.3f} ({base / ms[v]:.2f}×)" for v in VARIANTS),
                *(f"{r['accuracy'][v]:.2f}" for v in VARIANTS),
            ]
        )
    head = ["model", ".pte fp32", ".pte int8", "int8 SQNR dB"]
    head += [f"{v} ms" for v in VARIANTS] + [f"top-1 %, {v}" for v in VARIANTS]
    return markdown_table(head, rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--min-run-time", type=float, default=1.0)
    parser.add_argument("--accuracy-samples", type=int, default=10_000)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="prunekit-executorch-") as tmp:
        results = [
            case(name, Path(tmp), args.min_run_time, args.accuracy_samples) for name in args.only
        ]
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count

    info = {**machine(), "executorch_threads": _threadpool_get_thread_count()}
    md = (
        "# ExecuTorch (XNNPACK) vs PyTorch eager\n\n"
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
        f"({info['torch_threads']} threads), ExecuTorch 1.5.1 (XNNPACK threadpool: "
        f"{info['executorch_threads']} threads), {info['date']}. Programs written by "
        "`pk.export_executorch` (each run in ExecuTorch's runtime against PyTorch before it is "
        "written); int8: XNNPACK's static quantizer, per-channel weights, calibrated on "
        f"{CALIBRATION_SAMPLES} training images. Latency at batch 1 (the programs' shape), "
        f"{results[0]['latency_method']}, called from Python; in brackets, PyTorch fp32's "
        "latency over this one's (> 1: faster). Top-1 % on the first "
        f"{results[0]['accuracy_samples']:,} Fashion-MNIST test images, each runtime's own "
        "outputs.\n\n" + table(results)
    )
    js, out = write("executorch", {"machine": info, "args": vars(args), "results": results}, md)
    print(md)
    print(f"wrote {js} and {out}")
    return {"results": results}


if __name__ == "__main__":
    main()
