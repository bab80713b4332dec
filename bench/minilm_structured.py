"""Structured pruning of the real all-MiniLM-L6-v2: attention heads and FFN neurons removed
until the encoder needs 2× fewer MACs, then measured side by side with the dense model; and at
the same MACs, low-rank factorization (``factorize_``: every Linear split by truncated SVD,
ranks from one energy threshold searched to the MAC target).

No recovery training (that is knowledge distillation's job): the figures show what structured
pruning alone costs on a pretrained transformer, and what it buys in measured CPU latency.
Retrieval: WordNet definition→words on 1,000 held-out synsets; fidelity: mean cosine of the
sentence embeddings to the dense model's on the held-out gloss lines.

    python -m bench.minilm_structured [--macs-reduction 2.0]
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import torch

import prunekit as pk
from bench.common import machine, write
from prunekit.data import load_data
from prunekit.data.batches import split_batch
from prunekit.measure.latency import time_models
from prunekit.measure.macs import count_macs
from prunekit.measure.render import markdown_table
from prunekit.measure.retrieval import retrieval_scores, wordnet_retrieval
from prunekit.measure.text import embedding_fidelity
from prunekit.models.hf import load_tokenizer
from prunekit.specs import load_model

SEQ_LEN = 128


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--macs-reduction", type=float, default=2.0)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    dense, source = load_model("builtin:minilm")
    tok = load_tokenizer(source["path"])
    splits = load_data(source["dataset"], tokenizer=tok, seq_len=SEQ_LEN, mode="lines")
    task = wordnet_retrieval(1000)
    test = splits.loader("test", batch_size=32)
    example, _ = split_batch(next(iter(splits.loader("train", batch_size=32))))

    def score(m: torch.nn.Module) -> dict[str, float]:
        r = retrieval_scores(m, tok, task)
        return {
            "recall@1": r.recall_at_1,
            "MRR": r.mrr,
            "fidelity": embedding_fidelity(m, dense, test),
        }

    variants = {
        "heads + FFN, same ratio per layer": pk.MagnitudeConfig(
            pattern="channel", macs_reduction=args.macs_reduction, round_to=8
        ),
        "heads + FFN, global ranking": pk.MagnitudeConfig(
            pattern="channel", macs_reduction=args.macs_reduction, round_to=8, scope="global"
        ),
        "low-rank SVD, every Linear": pk.LowRankConfig(
            macs_reduction=args.macs_reduction, round_to=8
        ),
    }
    base = score(dense)
    dense_macs = count_macs(dense, example).dense
    rows = [["dense", f"{sum(p.numel() for p in dense.parameters()):,}", f"{dense_macs:,}",
             "1.00×", *(f"{v:.3f}" for v in base.values()), "1.00×", "1.00×", "–"]]  # fmt: skip
    results: list[dict[str, Any]] = [{"variant": "dense", "macs": dense_macs, **base}]
    for name, cfg in variants.items():
        model = copy.deepcopy(dense)
        start = time.perf_counter()
        if isinstance(cfg, pk.LowRankConfig):
            kept = _factorize(model, cfg, example)
        else:
            kept = _prune(model, cfg, example)
        seconds = time.perf_counter() - start
        params = sum(p.numel() for p in model.parameters())
        macs = count_macs(model, example).dense
        got = score(model)
        lat_dense, lat_pruned = time_models([dense, model], example, batch_sizes=(1, 32))
        speed = {b: lat_dense.median_ms[b] / lat_pruned.median_ms[b] for b in (1, 32)}
        print(f"{name}: {got} macs {dense_macs / macs:.2f}× speed {speed} ({seconds:.1f} s)",
              flush=True)  # fmt: skip
        results.append({
            "variant": name, "config": cfg.to_dict(), "params": params, "macs": macs,
            "macs_reduction": dense_macs / macs, "speedup_b1": speed[1], "speedup_b32": speed[32],
            **kept,
            "latency_ms": {"dense": lat_dense.median_ms, "pruned": lat_pruned.median_ms},
            "seconds": seconds, **got,
        })  # fmt: skip
        rows.append([name, f"{params:,}", f"{macs:,}", f"{dense_macs / macs:.2f}×",
                     *(f"{v:.3f}" for v in got.values()), f"{speed[1]:.2f}×", f"{speed[32]:.2f}×",
                     kept["kept"]])  # fmt: skip
    info = machine()
    md = (
        "# Structured pruning of all-MiniLM-L6-v2 (real weights, no recovery training)\n\n"
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
        f"({info['torch_threads']} threads), {info['date']}. Target: {args.macs_reduction}× "
        f"fewer MACs (counted by PyTorch's FlopCounterMode on a batch of 32 gloss lines, "
        f"attention included); magnitude (L1) scores, kept widths multiples of 8; low-rank: "
        f"ranks multiples of 8 from one energy threshold for every Linear. Speed-up: "
        f"dense latency / pruned latency, both timed interleaved in this run "
        f"({lat_dense.method}). Retrieval on {task.name}; fidelity on {len(splits.test)} "
        f"held-out gloss lines.\n\n"
        + markdown_table(
            [
                "model",
                "params",
                "MACs (b=32)",
                "MACs ÷",
                "recall@1",
                "MRR",
                "fidelity",
                "speed-up b=1",
                "speed-up b=32",
                "kept",
            ],
            rows,
        )
    )
    payload = {"machine": info, "args": vars(args), "results": results}
    js, out = write("minilm_structured", payload, md)
    print(f"wrote {js} and {out}")
    return payload


def _prune(model: torch.nn.Module, cfg: pk.PruneConfig, example: Any) -> dict[str, Any]:
    report = pk.prune_(model, cfg, example_inputs=example)
    heads = [g for g in report.groups if g.kind == "head"]
    ffn = [g for g in report.groups if g.kind == "channel"]
    kept: dict[str, Any] = {
        "heads_kept": sum(g.after for g in heads),
        "heads_total": sum(g.before for g in heads),
        "ffn_kept": sum(g.after for g in ffn),
        "ffn_total": sum(g.before for g in ffn),
    }
    kept["kept"] = (
        f"{kept['heads_kept']}/{kept['heads_total']} heads, "
        f"{kept['ffn_kept']}/{kept['ffn_total']} FFN"
    )
    return kept


def _factorize(model: torch.nn.Module, cfg: pk.LowRankConfig, example: Any) -> dict[str, Any]:
    report = pk.factorize_(model, cfg, example_inputs=example)
    assert report.budget is not None
    kept = sum(r.rank for r in report.layers) / sum(r.full_rank for r in report.layers)
    return {
        "ranks": report.ranks,
        "energy": report.budget["energy"],
        "kept": f"{len(report.layers)} Linear at {kept:.0%} of rank (energy "
        f"{report.budget['energy']:.3f})",
    }


if __name__ == "__main__":
    main()
