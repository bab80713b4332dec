"""CPU int8 that is really faster, measured: MiniLM with prunekit's int8-dynamic vs fp32 and
vs torch's own ``quantize_dynamic``; plus weight-only 4-bit (RTN, GPTQ) for size.

  minilm   the real pretrained all-MiniLM-L6-v2; WordNet definition→words retrieval on 1,000
           held-out synsets (recall@1, MRR) and embedding fidelity (mean cosine to the fp32
           model) on the held-out gloss lines, as in bench/oneshot.py.
  latency  prunekit.measure.latency.time_models, all variants interleaved, batch 1 and 32 of
           128-token sequences (no padding), torch's default threads.
  layers   one Linear alone, fp32 vs Int8Linear, at a few widths and row counts: where the
           per-batch activation quantization pays off (the basis of ``min_features``).
  cnn      built-in CPU CNNs (vgg-bn, lenet5, digits-cnn), fp32 vs int8-static: test accuracy,
           latency at batch 1 and 64, size (bench/results/quantize_cnn.md).

    python -m bench.quantize [--skip-weight-only] [--skip-minilm] [--cnns vgg-bn] [--min-run-time 2]
"""

from __future__ import annotations

import argparse
import copy
import os
import time
import warnings
from typing import Any

import torch
from torch import nn

from bench.common import machine, write
from bench.oneshot import minilm_task
from prunekit.data import load_data
from prunekit.measure.accuracy import top1_accuracy
from prunekit.measure.latency import time_models
from prunekit.measure.render import markdown_table
from prunekit.models.registry import model_info
from prunekit.quantize import (
    GPTQConfig,
    Int8DynamicConfig,
    Int8Linear,
    Int8StaticConfig,
    RTNConfig,
    quantize_,
)
from prunekit.specs import load_model

SEQ_LEN = 128
BATCHES = (1, 32)
# The two layers whose int8 version moved the embeddings most (1 − cosine to fp32, one layer
# quantized at a time with 7-bit activations, 256 held-out lines): the FFN output projections
# of blocks 0 and 1 (45e-4 and 23e-4 of the 204e-4 the 37 layers add up to).
SENSITIVE = [r"re:^encoder\.layer\.[01]\.output\.dense$"]


def torch_dynamic(model: nn.Module) -> nn.Module:
    """torch.ao's quantize_dynamic with per-channel int8 weights (the reference)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(copy.deepcopy(model), {nn.Linear: per_channel_dynamic_qconfig})


def timing_inputs(vocab: int, batch: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, vocab, (batch, SEQ_LEN), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def layer_table(min_run_time: float) -> tuple[list[dict[str, Any]], str]:
    """fp32 Linear vs Int8Linear alone, square layers, by width and rows per call."""
    results, rows = [], []
    for width in (64, 128, 256, 384, 768):
        for n in (1, 32, 128):
            torch.manual_seed(0)
            dense = nn.Linear(width, width).eval()
            int8 = Int8Linear.from_layer(dense)
            x = torch.randn(n, width)
            fp, q = time_models([dense, int8], x, batch_sizes=(n,), min_run_time=min_run_time)
            speedup = fp.median_ms[n] / q.median_ms[n]
            results.append(
                {
                    "width": width,
                    "rows": n,
                    "fp32_ms": fp.median_ms[n],
                    "int8_ms": q.median_ms[n],
                    "speedup": speedup,
                }
            )
            rows.append(
                [
                    str(width),
                    str(n),
                    f"{fp.median_ms[n] * 1000:.1f}",
                    f"{q.median_ms[n] * 1000:.1f}",
                    f"{speedup:.2f}×",
                ]
            )
    table = markdown_table(["width", "rows", "fp32 µs", "int8 µs", "speed-up"], rows)
    return results, table


def cnn_table(names: list[str], min_run_time: float) -> tuple[list[dict[str, Any]], str]:
    """Built-in CPU CNNs: fp32 vs int8-static (torch.ao FX), test accuracy and latency."""
    results, rows = [], []
    for name in names:
        dense, _ = load_model(f"builtin:{name}")
        data = load_data(model_info(name).data_spec())
        train = data.loader("train", batch_size=64, seed=0)
        test = data.loader("test", batch_size=500)
        int8 = copy.deepcopy(dense)
        start = time.perf_counter()
        report = quantize_(int8, Int8StaticConfig(num_samples=256), data=train)
        seconds = time.perf_counter() - start
        acc = [top1_accuracy(m, test)[0] for m in (dense, int8)]
        x = next(iter(test))[0]
        fp, q = time_models([dense, int8], x, batch_sizes=(1, 64), min_run_time=min_run_time)
        speedup = {b: fp.median_ms[b] / q.median_ms[b] for b in (1, 64)}
        results.append(
            {
                "model": name,
                "accuracy_fp32": acc[0],
                "accuracy_int8": acc[1],
                "fp32_ms": fp.median_ms,
                "int8_ms": q.median_ms,
                "speedup": speedup,
                "bytes_before": report.bytes_before,
                "bytes_after": report.bytes_after,
                "regions": [r.name for r in report.layers],
                "seconds": seconds,
            }
        )
        rows.append(
            [
                name,
                f"{acc[0]:.4f}",
                f"{acc[1]:.4f}",
                f"{fp.median_ms[1]:.2f} / {q.median_ms[1]:.2f}",
                f"{speedup[1]:.2f}×",
                f"{fp.median_ms[64]:.1f} / {q.median_ms[64]:.1f}",
                f"{speedup[64]:.2f}×",
                f"{report.bytes_before / report.bytes_after:.2f}×",
            ]
        )
        print(f"  {name}: {results[-1]}", flush=True)
    columns = [
        "model",
        "fp32 acc",
        "int8 acc",
        "b1 ms fp32 / int8",
        "speed-up b1",
        "b64 ms fp32 / int8",
        "speed-up b64",
        "smaller",
    ]
    return results, markdown_table(columns, rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-weight-only", action="store_true")
    parser.add_argument("--skip-layers", action="store_true")
    parser.add_argument("--min-run-time", type=float, default=2.0)
    parser.add_argument(
        "--cnns",
        nargs="*",
        default=["vgg-bn", "lenet5", "digits-cnn"],
        help="built-in CNNs for the int8-static table (bench/results/"
        "quantize_cnn.md); none to skip",
    )
    parser.add_argument("--skip-minilm", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    payload: dict[str, Any] = {}
    if args.cnns:
        payload["cnn"] = cnn_main(args.cnns, args.min_run_time)
    if not args.skip_minilm:
        payload["minilm"] = minilm_main(args)
    return payload


def cnn_main(names: list[str], min_run_time: float) -> dict[str, Any]:
    results, table = cnn_table(names, min_run_time)
    info = machine()
    md = (
        "# CPU int8-static: built-in CNNs, fp32 vs int8 (torch.ao FX, x86 backend)\n\n"
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
        f"({info['torch_threads']} threads), {info['date']}; OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, load average {os.getloadavg()[0]:.1f}.\n"
        "Calibration: 256 training images. Accuracy on the test split. Latency: fp32 and int8 "
        "interleaved (prunekit.measure.latency.time_models, channels_last for both).\n\n"
        f"{table}\n"
    )
    payload = {"machine": info, "results": results}
    write("quantize_cnn", payload, md)
    print(md)
    return payload


def minilm_main(args: argparse.Namespace) -> dict[str, Any]:
    dense, calib, score, setting, _ = minilm_task()
    base = score(dense, dense)
    print(f"minilm fp32: {base}", flush=True)

    variants: dict[str, tuple[nn.Module, dict[str, Any]]] = {}
    ours = copy.deepcopy(dense)
    start = time.perf_counter()
    report = quantize_(ours, Int8DynamicConfig())
    variants["prunekit int8-dynamic"] = (
        ours,
        {"seconds": time.perf_counter() - start, "layers": len(report.layers)},
    )
    keep = copy.deepcopy(dense)
    report = quantize_(keep, Int8DynamicConfig(ignore=SENSITIVE))
    variants["prunekit int8-dynamic, FFN-out of blocks 0-1 fp32"] = (
        keep,
        {"layers": len(report.layers), "ignore": SENSITIVE},
    )
    variants["torch quantize_dynamic"] = (torch_dynamic(dense), {})
    if not args.skip_weight_only:
        for name, cfg in [
            ("rtn 4-bit g128", RTNConfig(bits=4, group_size=128)),
            ("gptq 4-bit g128", GPTQConfig(bits=4, group_size=128)),
        ]:
            m = copy.deepcopy(dense)
            start = time.perf_counter()
            r = quantize_(m, cfg, data=calib)
            variants[name] = (
                m,
                {
                    "seconds": time.perf_counter() - start,
                    "bytes_before": r.bytes_before,
                    "bytes_after": r.bytes_after,
                },
            )

    results: list[dict[str, Any]] = [{"variant": "fp32", **base}]
    rows = [["fp32", *(f"{v:.4f}" for v in base.values()), "–"]]
    for name, (model, extra) in variants.items():
        got = score(model, dense)
        print(f"  {name}: {got} {extra}", flush=True)
        results.append({"variant": name, **got, **extra})
        delta = 100 * (got["recall@1"] - base["recall@1"])
        rows.append([name, *(f"{v:.4f}" for v in got.values()), f"{delta:+.2f}"])
    quality = markdown_table(["variant", *base.keys(), "Δ recall@1 (points)"], rows)

    timed = {"fp32": dense, **{k: v[0] for k, v in variants.items() if "bit" not in k}}
    inputs = timing_inputs(dense.config.vocab_size)
    load_before = os.getloadavg()[0]
    latencies = time_models(
        list(timed.values()), inputs, batch_sizes=BATCHES, min_run_time=args.min_run_time
    )
    load = f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    lat_rows, lat_results = [], []
    fp = latencies[0]
    for name, lat in zip(timed, latencies, strict=True):
        cells = [name]
        for b in BATCHES:
            cells += [f"{lat.median_ms[b]:.1f}", f"{fp.median_ms[b] / lat.median_ms[b]:.2f}×"]
        lat_rows.append(cells)
        lat_results.append({"variant": name, "median_ms": lat.median_ms, "rounds": lat.rounds})
        print(f"  latency {name}: {lat.median_ms}", flush=True)
    columns = ["variant"]
    for b in BATCHES:
        columns += [f"batch {b} ms", f"speed-up b{b}"]
    latency = markdown_table(columns, lat_rows)

    layers_md, layer_results = "", []
    if not args.skip_layers:
        layer_results, layers_md = layer_table(min(args.min_run_time, 0.5))

    info = machine()
    md = (
        "# CPU int8: MiniLM, prunekit int8-dynamic vs fp32 vs torch quantize_dynamic\n\n"
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
        f"({info['torch_threads']} threads), {info['date']}.\n\n"
        f"## Quality\n\n{setting}.\n\n{quality}\n\n"
        f"## Latency\n\nall-MiniLM-L6-v2, {SEQ_LEN}-token sequences, {fp.method}; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, {load} (a shared "
        f"machine: the ratios of interleaved runs are the result, not the absolute times).\n\n"
        f"{latency}\n"
        + (
            f"\n## One layer alone (square Linear, fp32 vs Int8Linear)\n\n{layers_md}\n"
            if layers_md
            else ""
        )
    )
    payload = {
        "load": load,
        "machine": info,
        "quality": results,
        "latency": lat_results,
        "layers": layer_results,
        "method": fp.method,
    }
    write("quantize", payload, md)
    print(md)
    return payload


if __name__ == "__main__":
    main()
