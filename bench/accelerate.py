"""Does `pk.accelerate_` make pruned models faster in PyTorch? Dense vs the chosen kernels.

For each model: prune, then time the pruned model as it is (dense kernels on zero-filled
weights: as fast as the unpruned model) against copies after ``pk.accelerate_`` swapped each
layer to the fastest kernel measured on its own inputs (dense, CSR sparse, int8 dynamic), one
copy chosen at batch sizes 1 and 64 (a kernel must win at both) and one at 64 only. All are
timed interleaved in one run (``prunekit.measure.time_models``), so the ratio holds on a
shared machine; the outputs are compared on the example batch.
  - LeNet-300-100 (Fashion-MNIST), 95 % unstructured sparsity (magnitude, global), top-1 %.
  - all-MiniLM-L6-v2 (real weights, 32-token sentences), its encoder's Linear layers at 90 %
    (magnitude, per layer), recall@1 of WordNet retrieval.

    python -m bench.accelerate [--only lenet300 minilm] [--min-run-time 1.0] [--seq-len 32]
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import prunekit as pk
from bench.common import machine, write
from prunekit.data import load_data
from prunekit.data.batches import split_batch
from prunekit.measure._common import call
from prunekit.measure.latency import time_models
from prunekit.measure.render import markdown_table

BATCH_SIZES = (1, 64)
ENCODER = "re:^encoder\\."


def _lenet300(args: argparse.Namespace) -> dict[str, Any]:
    from prunekit.measure.accuracy import top1_accuracy

    data = load_data("fashion-mnist")
    test = data.loader("test", batch_size=500)
    model = pk.models.pretrained("lenet300", progress=False)
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.95, scope="global"))
    example, _ = split_batch(next(iter(test)))

    def quality(m: nn.Module) -> float:
        return 100.0 * top1_accuracy(m, test)[0]

    return _case("lenet300", "95 % unstructured (global)", "top-1 %", model, example[:64],
                 {}, quality, args)  # fmt: skip


def _minilm(args: argparse.Namespace) -> dict[str, Any]:
    from prunekit.measure.retrieval import retrieval_scores, wordnet_retrieval
    from prunekit.models.hf import load_tokenizer
    from prunekit.specs import load_model

    model, source = load_model("builtin:minilm")
    tok = load_tokenizer(source["path"])
    splits = load_data(source["dataset"], tokenizer=tok, seq_len=args.seq_len, mode="lines")
    example, _ = split_batch(next(iter(splits.loader("test", batch_size=64))))
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.9, scope="layer", targets=[ENCODER]))
    task = wordnet_retrieval(1000)

    def quality(m: nn.Module) -> float:
        return retrieval_scores(m, tok, task).recall_at_1

    method = f"encoder Linear 90 % unstructured ({args.seq_len} tokens)"
    return _case("minilm", method, "recall@1", model, example, {"targets": [ENCODER]},
                 quality, args)  # fmt: skip


# accelerate_'s batch_sizes for each accelerated copy: a kernel must win at all of them.
VARIANTS = {"accelerated (b=1, 64)": [1, 64], "accelerated (b=64)": [64]}


def _case(
    name: str,
    method: str,
    metric: str,
    pruned: nn.Module,
    example: Any,
    options: dict[str, Any],
    quality: Callable[[nn.Module], float],
    args: argparse.Namespace,
) -> dict[str, Any]:
    pruned.eval()
    models, reports = {"dense": pruned}, {}
    for variant, sizes in VARIANTS.items():
        models[variant] = copy.deepcopy(pruned)
        reports[variant] = pk.accelerate_(models[variant], example, batch_sizes=sizes, **options)
        print(reports[variant], flush=True)
    with torch.no_grad():
        ref = _output(pruned, example)
        outs = {v: _output(models[v], example) for v in VARIANTS}
    timed = time_models(list(models.values()), example, batch_sizes=BATCH_SIZES,
                        min_run_time=args.min_run_time)  # fmt: skip
    latency = {v: t.median_ms for v, t in zip(models, timed, strict=True)}
    scores = {v: quality(m) for v, m in models.items()}
    result = {
        "model": name,
        "method": method,
        "metric": metric,
        "latency_ms": latency,
        "latency_method": timed[0].method,
        "quality": scores,
        "variants": {},
    }
    for v in VARIANTS:
        delta = outs[v] - ref
        result["variants"][v] = {
            "speedup": {b: latency["dense"][b] / latency[v][b] for b in BATCH_SIZES},
            "max_abs_diff": float(delta.abs().max()),
            "relative_diff": float(delta.norm() / ref.norm()),
            "kernels": reports[v].swapped,
            "layers_kept_dense": reports[v].skipped,
            "accelerate_seconds": reports[v].seconds,
            "report": reports[v].to_dict(),
        }
        print(f"{name} {v}: {result['variants'][v]['speedup']}, quality {scores[v]}", flush=True)
    return result


def _output(model: nn.Module, example: Any) -> torch.Tensor:
    """The model's output tensor (a Hugging Face encoder's last hidden state)."""
    out = call(model, example)
    return out if isinstance(out, torch.Tensor) else out[0]


CASES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "lenet300": _lenet300,
    "minilm": _minilm,
}


def table(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        for v, info in r["variants"].items():
            counts: dict[str, int] = {}
            for kernel in info["kernels"].values():
                counts[kernel] = counts.get(kernel, 0) + 1
            total = len(info["report"]["layers"])
            kernels = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none"
            for i, b in enumerate(BATCH_SIZES):
                dense, fast = r["latency_ms"]["dense"][b], r["latency_ms"][v][b]
                first = i == 0
                quality = f"{r['quality']['dense']:.4g} → {r['quality'][v]:.4g}"
                rows.append([
                    f"{r['model']}, {r['method']}" if first else "",
                    v if first else "", f"{kernels} of {total}" if first else "",
                    str(b), f"{dense:.3f}", f"{fast:.3f}", f"{dense / fast:.2f}×",
                    f"{info['max_abs_diff']:.1e} ({info['relative_diff']:.1e})" if first else "",
                    quality if first else "",
                ])  # fmt: skip
    head = ["model, pruning", "accelerate_ timed at", "layers swapped", "batch", "dense ms",
            "accelerated ms", "speed-up", "max |Δ| (relative)", "quality"]  # fmt: skip
    return markdown_table(head, rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--min-run-time", type=float, default=1.0)
    parser.add_argument("--seq-len", type=int, default=32)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    results = [CASES[name](args) for name in args.only]
    info = machine()
    md = (
        "# Accelerate: the fastest measured kernel per layer\n\n"
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
        f"({info['torch_threads']} threads), {info['date']}. `pk.accelerate_(model, example, "
        "batch_sizes=...)` with its defaults otherwise (kernels dense/csr/int8, rtol 1e-2, "
        "min_speedup 1.1): a kernel must win at every batch size named, so timed at [1, 64] "
        "it must also win at batch 1. Then the pruned model (dense kernels, as fast as the "
        "unpruned one) and the accelerated copies are timed together: "
        f"{results[0]['latency_method']}. Speed-up: dense ms / accelerated ms. Max |Δ|: "
        "largest output difference on the 64-sample example batch (relative: ‖Δ‖/‖y‖). "
        "Quality: top-1 % on the 10,000 Fashion-MNIST test images; recall@1 of WordNet "
        "definition→words retrieval on 1,000 held-out synsets for MiniLM.\n\n" + table(results)
    )
    js, out = write("accelerate", {"machine": info, "args": vars(args), "results": results}, md)
    print(md)
    print(f"wrote {js} and {out}")
    return {"results": results}


if __name__ == "__main__":
    main()
