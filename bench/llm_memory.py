"""Time and peak memory of one-shot pruning LLaMA-shaped bf16 models on this CPU.

Models: transformers.LlamaForCausalLM with random weights (seeded), built in bf16. For each
shape and method (SparseGPT 50 %, Wanda 50 %; in-memory only: magnitude 50 % per layer and
global, structured magnitude 50 % of the heads and FFN channels, weight-only int4 RTN and GPTQ):
  in-memory   the model is built in the process, then ``prune_`` runs; measured: the rise of
              the process's peak resident memory (VmHWM, reset just before) over its resident
              memory before the call, as a multiple of the model's bytes (target: <= 0.75x).
  block-wise  the model is saved as a safetensors folder first (another process); then
              ``prunekit.prune_folder`` prunes it into a new folder reading one block at a time;
              measured: the process's peak resident memory over its resident memory before the
              call (imports, torch's own), as a multiple of the model's bytes: below 1x means a
              model larger than the memory available would fit.
Each measurement runs in a fresh subprocess, after a warm-up prune of a tiny model (torch's
kernels and lazy imports are then loaded, not counted). Calibration: random token ids,
``--samples`` sequences of ``--tokens`` tokens (few, so the 1.1B shape finishes on 2 cores).

    python -m bench.llm_memory [--shapes 134m 1.1b] [--samples 8] [--tokens 128]
    python -m bench.llm_memory --runs 1.1b:sparsegpt:in-memory --add   # one more row, kept rows
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, machine, write

SHAPES = {
    # The issue's ~119M-parameter class (this shape: 134M, untied embeddings).
    "134m": dict(hidden_size=768, num_hidden_layers=12, intermediate_size=2048,
                 num_attention_heads=12, num_key_value_heads=12, vocab_size=32000),
    # TinyLlama-1.1B's shape (grouped-query attention, 4 kv heads, 22 blocks): 1.10B parameters.
    "1.1b": dict(hidden_size=2048, num_hidden_layers=22, intermediate_size=5632,
                 num_attention_heads=32, num_key_value_heads=4, vocab_size=32000),
    # The same widths with 16 blocks (836M), measured first.
    "836m": dict(hidden_size=2048, num_hidden_layers=16, intermediate_size=5632,
                 num_attention_heads=32, num_key_value_heads=4, vocab_size=32000),
}  # fmt: skip
METHODS = ("sparsegpt", "wanda", "magnitude", "magnitude-global", "channel", "rtn", "gptq")
BLOCK_WISE = ("sparsegpt", "wanda")  # the methods prune_folder runs
QUANTIZE = ("rtn", "gptq")
MIB = 1 << 20


def _model(shape: str) -> Any:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(**SHAPES[shape], max_position_embeddings=2048)
    torch.set_default_dtype(torch.bfloat16)  # built in bf16: no fp32 copy ever exists
    try:
        return transformers.LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(torch.float32)


def _config(method: str, samples: int) -> Any:
    import prunekit as pk

    if method == "magnitude":
        return pk.MagnitudeConfig(sparsity=0.5)
    if method == "magnitude-global":
        return pk.MagnitudeConfig(sparsity=0.5, scope="global")
    if method == "channel":
        return pk.MagnitudeConfig(sparsity=0.5, pattern="channel")
    if method == "rtn":
        return pk.RTNConfig(bits=4, group_size=128)
    if method == "gptq":
        return pk.GPTQConfig(bits=4, group_size=128, num_samples=samples)
    if method == "sparsegpt":
        # refine=False: the 2023 algorithm. The mask refinement (the default) swaps weights per
        # row and solves each layer twice, which on 2 shared cores would not let the 1B shape
        # finish; it adds per-layer transients only (test_low_precision measures it within the
        # bound).
        return pk.SparseGPTConfig(sparsity=0.5, num_samples=samples, refine=False)
    return pk.WandaConfig(sparsity=0.5, num_samples=samples)


def _compress(model: Any, method: str, samples: int, data: list[Any]) -> float | None:
    """Run ``method`` on ``model``; returns the sparsity reached (structured: the fraction of
    the parameters removed; quantization: None)."""
    import prunekit as pk

    if method in QUANTIZE:
        pk.quantize_(model, _config(method, samples), data=data)
        return None
    report = pk.prune_(model, _config(method, samples), data=data)
    return report.params_removed if method == "channel" else report.sparsity


def _calibration(samples: int, tokens: int) -> list[dict[str, Any]]:
    import torch

    g = torch.Generator().manual_seed(1)
    return [
        {"input_ids": torch.randint(0, 32000, (1, tokens), generator=g)} for _ in range(samples)
    ]


def _warm_up(method: str) -> None:
    """Prune a tiny model once so torch's kernels and prunekit's lazy imports are loaded."""
    import torch
    import transformers

    config = transformers.LlamaConfig(
        hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=2,
        num_key_value_heads=2, vocab_size=100,
    )  # fmt: skip
    tiny = transformers.LlamaForCausalLM(config).to(torch.bfloat16).eval()
    _compress(tiny, method, 2, [{"input_ids": torch.randint(0, 100, (1, 32))}] * 2)


def _worker(args: argparse.Namespace) -> dict[str, Any]:
    import gc

    from prunekit.memory import peak_rss

    _warm_up(args.method)
    data = _calibration(args.samples, args.tokens)
    if args.mode == "save":
        _model(args.shape).save_pretrained(args.folder, max_shard_size="1GB")
        return {}
    if args.mode == "in-memory":
        model = _model(args.shape)
        model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        gc.collect()
        start = time.perf_counter()
        with peak_rss() as peak:
            sparsity = _compress(model, args.method, args.samples, data)
        dtype = str(next(model.parameters()).dtype)
    else:
        from prunekit.prune.folder import prune_folder

        model_bytes = sum(f.stat().st_size for f in Path(args.folder).glob("*.safetensors"))
        gc.collect()
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=Path(args.folder).parent) as tmp, peak_rss() as peak:
            report = prune_folder(
                args.folder, Path(tmp) / "out", _config(args.method, args.samples), data
            )
        sparsity = report.sparsity
        dtype = "bfloat16 (folder)"
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "model_mib": round(model_bytes / MIB),
        "rise_mib": round(peak.rise / MIB),
        "ratio": round(peak.rise / model_bytes, 3),
        "sparsity": None if sparsity is None else round(sparsity, 4),
        "dtype": dtype,
    }


def _run(argv: list[str]) -> dict[str, Any]:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "bench.llm_memory", "--worker", *argv]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--modes", nargs="+", default=["in-memory", "block-wise"])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument(
        "--runs", nargs="+", help="SHAPE:METHOD:MODE triples instead of every combination"
    )
    parser.add_argument(
        "--add", action="store_true", help="keep the rows of the last results for other runs"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="wanda", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args)))
        return
    common = ["--samples", str(args.samples), "--tokens", str(args.tokens)]
    runs = [tuple(r.split(":")) for r in args.runs] if args.runs else [
        (shape, method, mode)
        for shape in args.shapes
        for method in args.methods
        for mode in args.modes
        if mode == "in-memory" or method in BLOCK_WISE
    ]  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory(prefix="llm-memory-") as tmp:
        for shape, method, mode in runs:
            folder = Path(tmp) / shape
            if mode == "block-wise" and not folder.exists():
                _run(["--mode", "save", "--shape", shape, "--folder", str(folder), *common])
            argv = ["--mode", mode, "--shape", shape, "--method", method, *common]
            result = _run([*argv, "--folder", str(folder)])
            rows.append({"shape": shape, "method": method, "mode": mode, **result,
                         "cpu": machine()["cpu"]})  # fmt: skip
            print(rows[-1], flush=True)
    if args.add:
        done = {(r["shape"], r["method"], r["mode"]) for r in rows}
        last = json.loads((RESULTS / "llm_memory.json").read_text())
        if (last["samples"], last["tokens"]) != (args.samples, args.tokens):
            raise SystemExit("--add: the last results used another calibration size")
        kept = [r for r in last["rows"] if (r["shape"], r["method"], r["mode"]) not in done]
        rows = kept + rows
    info = machine()
    lines = [
        "# One-shot pruning of LLaMA-shaped bf16 models: time and peak memory",
        "",
        f"Last run: {info['cpu']} ({info['cores']} cores, shared with other jobs; wall times "
        f"are indicative; each row names its CPU), torch {info['torch']}. Random weights, "
        "bf16; calibration "
        f"{args.samples} x {args.tokens} random tokens; sparsity 50 %; int4 weight-only "
        "quantization with group size 128.",
        "",
        "Shapes: 134m = hidden 768, 12 blocks, FFN 2048, vocab 32000 (the issue's ~119M class); "
        "1.1b = TinyLlama-1.1B's shape (hidden 2048, FFN 5632, 32 heads / 4 kv heads, vocab "
        "32000, 22 blocks), 1.10B parameters; 836m = the same with 16 blocks. SparseGPT with "
        "refine=False (the 2023 "
        "algorithm). magnitude-global: scope='global'; channel: MagnitudeConfig(pattern="
        "'channel'), half the attention heads and FFN channels of every block (its sparsity "
        "column: the fraction of the model's parameters removed); rtn / gptq: int4 weight-only "
        "quantization of the blocks' linear layers. Each row is its own subprocess; rows may "
        "come from separate runs (--add).",
        "",
        "Peak rise: the process's peak resident memory during the call over its resident "
        "memory before it (in-memory: the loaded model is not counted; block-wise: nothing of "
        "the model is loaded before). Ratio: peak rise / model bytes.",
        "",
        "| shape | params MiB (bf16) | method | mode | seconds | peak rise MiB | ratio | sparsity "
        "| dtype after | CPU |",
        "|---|---:|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        sparsity = "-" if r["sparsity"] is None else f"{r['sparsity']:.3f}"
        lines.append(
            f"| {r['shape']} | {r['model_mib']} | {r['method']} | {r['mode']} | {r['seconds']} "
            f"| {r['rise_mib']} | {r['ratio']:.2f} | {sparsity} | {r['dtype']} | {r['cpu']} |"
        )
    payload = {"machine": info, "samples": args.samples, "tokens": args.tokens, "rows": rows}
    write("llm_memory", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
