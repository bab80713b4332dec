"""SmoothQuant before int8-dynamic, measured: a post-norm encoder and a pre-norm decoder.

minilm    the real all-MiniLM-L6-v2 (BERT, post-norm): WordNet definition→words retrieval
          (recall@1, MRR) on ``--queries`` held-out synsets, embedding fidelity (mean cosine to
          fp32) on the held-out gloss lines. fp32 · int8-dynamic · smoothquant at each α. A
          post-norm model's norm output is also its residual, so no scale folds; the
          "run-time multiply" row smooths the LayerNorm readers anyway (``x / s`` computed
          before each int8 layer): the most folding could have given.
gpt-tiny  builtin:gpt-tiny (GPT-2, pre-norm: the scales fold into ln_1/ln_2), perplexity on
          the held-out windows; every variant with ``min_features=0`` (its layers are 128-512
          wide, below int8-dynamic's default of 256 for some).
latency   PyTorch, each model's variants interleaved (prunekit.measure.latency.time_models).
export    the smoothed gpt-tiny in onnxruntime (its int8 layers as onnxruntime int8-dynamic)
          and ExecuTorch (the smoothed float model through XNNPACK's dynamic int8), perplexity
          on each runtime's own outputs, against the unsmoothed model the same way.

  python -m bench.smoothquant [--queries 5000] [--alphas 0.5 0.75] [--skip-export]
"""

from __future__ import annotations

import argparse
import copy
import os
from typing import Any

import torch
from torch import nn

import prunekit as pk
from bench.common import machine, write
from bench.oneshot import gpt_tiny_task
from bench.quantize import timing_inputs
from prunekit.data import load_data
from prunekit.data.batches import split_batch, take_samples
from prunekit.layout import canonical
from prunekit.measure.latency import time_models
from prunekit.measure.render import markdown_table
from prunekit.measure.retrieval import retrieval_scores, wordnet_retrieval
from prunekit.measure.text import embedding_fidelity
from prunekit.models.hf import load_tokenizer
from prunekit.quantize import Int8DynamicConfig, Int8Linear, SmoothQuantConfig, quantize_, smooth_
from prunekit.quantize.smooth import smoothing_scales
from prunekit.quantize.smooth_trace import channel_max, is_norm, norm_uses
from prunekit.specs import load_model

CALIBRATION = 128  # samples, as bench/oneshot.py and bench/quantize.py


class _MultiplyFirst(nn.Module):
    """``int8(x / s)`` with the weight columns times ``s``: smoothing kept as a run-time
    multiply, for a layer whose norm cannot carry the scale."""

    def __init__(self, layer: nn.Module, s: torch.Tensor) -> None:
        super().__init__()
        scaled = copy.deepcopy(layer)
        with torch.no_grad():
            canonical(scaled, scaled.weight).mul_(s)
        self.int8 = Int8Linear.from_layer(scaled)
        self.register_buffer("inverse", 1 / s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.int8(x * self.inverse)


@torch.no_grad()
def multiply_first(dense: nn.Module, calib: list[Any], alpha: float) -> nn.Module:
    """int8-dynamic with every LayerNorm's readers smoothed by a run-time multiply."""
    model = copy.deepcopy(dense)
    norms = {n: m for n, m in model.named_modules() if is_norm(m)}
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    uses = norm_uses(model, split_batch(calib[0])[0], norms, linears)
    act = channel_max(model, calib, norms)
    swaps = {}
    for norm, use in uses.items():
        if not use.readers:
            continue
        w = torch.cat([linears[r].weight.abs() for r in use.readers]).amax(dim=0)
        s = smoothing_scales(act[norm], w, alpha)
        swaps.update({r: _MultiplyFirst(linears[r], s) for r in use.readers})
    quantize_(model, Int8DynamicConfig(ignore=list(swaps)))
    for name, module in swaps.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, module)
    return model


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def minilm(args: argparse.Namespace) -> dict[str, Any]:
    dense, source = load_model("builtin:minilm")
    tok = load_tokenizer(source["path"])
    splits = load_data(source["dataset"], tokenizer=tok, seq_len=128, mode="lines")
    calib = list(take_samples(splits.loader("train", batch_size=32), CALIBRATION))
    test = splits.loader("test", batch_size=32)
    task = wordnet_retrieval(args.queries)

    variants: dict[str, nn.Module] = {"fp32": dense}
    variants["int8-dynamic"] = copy.deepcopy(dense)
    quantize_(variants["int8-dynamic"], Int8DynamicConfig())
    notes: dict[str, Any] = {}
    for alpha in args.alphas:
        model = copy.deepcopy(dense)
        report = quantize_(model, SmoothQuantConfig(alpha=alpha), data=calib)
        name = f"smoothquant α={alpha}"
        variants[name] = model
        notes[name] = {
            "norms_smoothed": len(report.smoothing.groups),
            "unsmoothed": len(report.smoothing.unsmoothed),
            "why": next(iter(report.smoothing.unsmoothed.values()), None),
        }
    variants["run-time multiply α=0.5 (not foldable)"] = multiply_first(dense, calib, 0.5)

    rows, results, scored = [], [], {}
    for name, model in variants.items():
        twin = next((k for k, m in scored.items() if same_weights(m[0], model)), None)
        if twin is not None:  # bit-identical weights: identical scores (deterministic kernels)
            got = {**scored[twin][1], "scored_as": twin}
        else:
            r = retrieval_scores(model, tok, task)
            got = {
                "recall@1": 100 * r.recall_at_1,
                "MRR": r.mrr,
                "fidelity": embedding_fidelity(model, dense, test),
            }
        scored[name] = (model, got)
        results.append({"variant": name, **got, **notes.get(name, {})})
        delta = got["recall@1"] - scored["fp32"][1]["recall@1"]
        print(f"  minilm {name}: {results[-1]}", flush=True)
        rows.append(
            [name, f"{got['recall@1']:.2f}", f"{delta:+.2f}", f"{got['MRR']:.4f}",
             f"{got['fidelity']:.4f}", str(notes.get(name, {}).get("norms_smoothed", "–"))]
        )  # fmt: skip
    quality = markdown_table(
        ["variant", "recall@1 %", "Δ points", "MRR", "fidelity", "norms smoothed"], rows
    )
    timed = {k: v for k, v in variants.items() if k != f"smoothquant α={args.alphas[-1]}"}
    latency, lat_results = _latency(timed, timing_inputs(dense.config.vocab_size), (1, 32), args)
    setting = (
        f"recall@1/MRR on wordnet-definitions-{args.queries} ({args.queries:,} held-out "
        f"definitions → words; one query = {100 / args.queries:.2f} points); fidelity on "
        f"{len(splits.test)} held-out gloss lines; calibration {CALIBRATION} training gloss lines"
    )
    first = notes[f"smoothquant α={args.alphas[0]}"]
    shared = [r["variant"] for r in results if "scored_as" in r]
    explained = (
        f"smoothquant smoothed {first['norms_smoothed']} norms; all {first['unsmoothed']} "
        f'quantized layers stayed unsmoothed, e.g. "{first["why"]}". '
        + (
            f"{', '.join(shared)}: weights bit-identical to int8-dynamic (checked), so the "
            f"scores shown are int8-dynamic's. "
            if shared
            else ""
        )
        + "run-time multiply: every LayerNorm's readers smoothed anyway, x / s computed before "
        "each int8 layer (an elementwise multiply per layer at run time): what folding could "
        "give at best if the residual allowed it."
    )
    noise = (
        "smoothquant α=0.5 runs the same weights as int8-dynamic here: the gap between those two "
        "rows is the run-to-run noise."
    )
    return {
        "setting": setting,
        "quality": results,
        "latency": lat_results,
        "md": f"{setting}.\n\n{quality}\n\n{explained}\n\nLatency, 128-token sequences:\n\n"
        f"{latency} {noise if shared else ''}",
    }


def gpt_tiny(args: argparse.Namespace) -> dict[str, Any]:
    dense, calib, score, setting, _ = gpt_tiny_task()
    variants: dict[str, nn.Module] = {"fp32": dense}
    variants["int8-dynamic"] = copy.deepcopy(dense)
    quantize_(variants["int8-dynamic"], Int8DynamicConfig(min_features=0))
    notes: dict[str, Any] = {}
    for alpha in args.alphas:
        model = copy.deepcopy(dense)
        report = quantize_(model, SmoothQuantConfig(alpha=alpha, min_features=0), data=calib)
        variants[f"smoothquant α={alpha}"] = model
        groups = report.smoothing.groups
        notes[f"smoothquant α={alpha}"] = {
            "norms_smoothed": len(groups),
            "layers_smoothed": sum(len(g.readers) for g in groups),
            "unsmoothed": len(report.smoothing.unsmoothed),
            "flatness_before": sum(g.flatness_before for g in groups) / max(len(groups), 1),
            "flatness_after": sum(g.flatness_after for g in groups) / max(len(groups), 1),
        }
    rows, results = [], []
    for name, model in variants.items():
        got = score(model, dense)
        results.append({"variant": name, **got, **notes.get(name, {})})
        print(f"  gpt-tiny {name}: {results[-1]}", flush=True)
        smoothed = notes.get(name, {})
        cells = (
            [
                f"{smoothed['norms_smoothed']} ({smoothed['layers_smoothed']} layers)",
                f"{smoothed['flatness_before']:.1f} → {smoothed['flatness_after']:.1f}",
            ]
            if smoothed
            else ["–", "–"]
        )
        rows.append([name, f"{got['perplexity']:.2f}", *cells])
    quality = markdown_table(
        ["variant", "perplexity", "norms smoothed", "norm output max/mean"], rows
    ) + (
        "\n\nnorm output max/mean: the largest channel's range over the mean channel's, "
        "averaged over the smoothed norms (1 = flat). The unsmoothed layers are attn.c_proj and "
        "mlp.c_proj, whose input is not a norm's output, as in any pre-norm block."
    )
    example = split_batch(calib[0])[0]
    timed = {k: v for k, v in variants.items() if k != f"smoothquant α={args.alphas[-1]}"}
    latency, lat_results = _latency(timed, example, (1, 8), args)
    out = {"setting": setting, "quality": results, "latency": lat_results}
    md = (
        f"{setting}; calibration {CALIBRATION} windows.\n\n{quality}\n\n"
        f"Latency, 128-token windows:\n\n{latency}"
    )
    if not args.skip_export:
        out["export"], export_md = export(dense, calib, score, args.alphas[0])
        md += f"\n\nExport (α={args.alphas[0]}):\n\n{export_md}"
    out["md"] = md
    return out


def export(
    dense: nn.Module, calib: list[Any], score: Any, alpha: float
) -> tuple[list[dict[str, Any]], str]:
    """The smoothed model in onnxruntime and ExecuTorch, perplexity on each runtime's outputs."""
    config = SmoothQuantConfig(alpha=alpha, min_features=0)
    smoothed = copy.deepcopy(dense)
    smooth_(smoothed, config, calib)
    # input_ids alone: the windows perplexity is measured on carry no attention mask.
    example = {"input_ids": split_batch(calib[0])[0]["input_ids"][:1]}
    rows, results = [], []
    for label, float_model in (("int8-dynamic", dense), (f"smoothquant α={alpha}", smoothed)):
        int8 = copy.deepcopy(float_model)
        quantize_(int8, Int8DynamicConfig(min_features=0))
        for runtime, model, quantize in (
            ("onnxruntime", int8, None),
            ("executorch", float_model, "int8-dynamic"),
        ):
            report = pk.measure_runtimes(
                model,
                example_inputs=example,
                runtimes=(runtime,),
                latency=False,
                accuracy=False,
                metrics=lambda m: score(m, dense),
                quantize=quantize,
                batch_sizes=(1,),
            )
            r = report.runtimes[0]
            got = r.metrics.get("perplexity")
            results.append({"variant": label, "runtime": runtime, "perplexity": got,
                            "bytes": r.bytes, "note": r.note, "error": r.error})  # fmt: skip
            print(f"  export {label} {runtime}: {results[-1]}", flush=True)
            size = "–" if r.bytes is None else f"{r.bytes / 1e3:,.0f} kB"
            rows.append([label, runtime, "–" if got is None else f"{got:.2f}", size, r.error or ""])
    return results, markdown_table(["variant", "runtime", "perplexity", "file", "error"], rows)


def _latency(
    models: dict[str, nn.Module], inputs: Any, sizes: tuple[int, ...], args: argparse.Namespace
) -> tuple[str, list[dict[str, Any]]]:
    load = os.getloadavg()[0]
    timed = time_models(
        list(models.values()), inputs, batch_sizes=sizes, min_run_time=args.min_run_time
    )
    rows, results, fp = [], [], timed[0]
    for name, lat in zip(models, timed, strict=True):
        cells = [name]
        for b in sizes:
            cells += [f"{lat.median_ms[b]:.1f}", f"{fp.median_ms[b] / lat.median_ms[b]:.2f}×"]
        rows.append(cells)
        results.append({"variant": name, "median_ms": lat.median_ms, "rounds": lat.rounds})
    columns = ["variant"] + [c for b in sizes for c in (f"batch {b} ms", f"vs fp32 b{b}")]
    caption = (
        f"\n\n{fp.method}; load average {load:.1f} before, {os.getloadavg()[0]:.1f} after (a "
        f"shared machine: the interleaved ratios are the result, not the absolute times)."
    )
    return markdown_table(columns, rows) + caption, results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.75])
    parser.add_argument("--models", nargs="+", default=["minilm", "gpt-tiny"])
    parser.add_argument("--skip-export", action="store_true")
    parser.add_argument("--min-run-time", type=float, default=2.0)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    info = machine()
    payload: dict[str, Any] = {"machine": info}
    sections = []
    runs = {"minilm": minilm, "gpt-tiny": gpt_tiny}
    for name in args.models:
        payload[name] = runs[name](args)
        sections.append(f"## {name}\n\n{payload[name].pop('md')}")
    md = (
        "# SmoothQuant + int8-dynamic: MiniLM (post-norm) and gpt-tiny (pre-norm)\n\n"
        f"Machine: {info['cpu']}, {info['cores']} cores shared with other jobs, torch "
        f"{info['torch']} ({info['torch_threads']} threads), OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, {info['date']}. "
        "`python -m bench.smoothquant`. int8-dynamic: prunekit's Int8DynamicConfig (fbgemm, "
        "weights per output channel, activations per batch). smoothquant: SmoothQuantConfig "
        "(scales folded into the norms, then the same int8-dynamic).\n\n" + "\n\n".join(sections)
    )
    write("smoothquant", payload, md)
    print(md)
    return payload


if __name__ == "__main__":
    main()
