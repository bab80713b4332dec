"""Knowledge distillation as the recovery step, measured against plain fine-tuning.

Part 1, Fashion-MNIST, heavy compression: each model is compressed in one shot, then fine-tuned
for the same number of epochs on the same batches (same seed, same learning-rate schedule),
once with the task loss alone and once with the dense model teaching (soft targets at
temperature T mixed by alpha, Hinton et al. 2015). Compressions:
  - LeNet-300-100, 98 % of the weights removed (global magnitude, unstructured),
  - LeNet-5, whole filters and neurons removed until it needs 4× fewer MACs (L1 channels).
Each pair runs under several seeds; the table gives the mean and the spread.

Part 2, all-MiniLM-L6-v2 (real weights), two students: three of the teacher's six layers
(``shrink_depth_``), and the 6-layer model with heads and FFN neurons removed until it needs 2×
fewer MACs. Each is evaluated as cut and after distillation from the 6-layer model on the
training split of WordNet gloss lines (disjoint from the evaluation synsets): WordNet
definition→words retrieval on 1,000 held-out synsets, the cosine fidelity of the embeddings to
the teacher's, and the measured CPU speed-up. There are no labels: distillation is the recovery.

    python -m bench.distill [--epochs 4] [--seeds 0 1 2] [--skip-minilm]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Any

import torch
from torch import nn

import prunekit as pk
from bench.common import machine, minilm_scores, write
from prunekit.data import load_data
from prunekit.data.batches import split_batch
from prunekit.measure import count_nonzeros, count_params
from prunekit.measure.accuracy import top1_accuracy
from prunekit.measure.macs import count_macs
from prunekit.measure.render import markdown_table
from prunekit.models import pretrained

LR = 1e-3
# name -> (temperature, alpha = the soft targets' share of the loss); "plain": no teacher.
VARIANTS: dict[str, tuple[float, float] | None] = {
    "plain": None,
    "KD T=4, α=0.7": (4.0, 0.7),  # Hinton et al.'s regime: mostly soft targets, high T
    "KD T=2, α=0.5": (2.0, 0.5),
}


def _acc(model: nn.Module, data: Any) -> float:
    return 100.0 * top1_accuracy(model, data)[0]


def _compressions() -> dict[str, tuple[str, pk.PruneConfig]]:
    return {
        "LeNet-300-100, 98 % unstructured": (
            "lenet300",
            pk.MagnitudeConfig(sparsity=0.98, scope="global"),
        ),
        "LeNet-5, 4× fewer MACs (channels)": (
            "lenet5",
            pk.MagnitudeConfig(pattern="channel", macs_reduction=4.0),
        ),
    }


def fashion(epochs: int, seeds: list[int]) -> list[dict[str, Any]]:
    """Prune, then fine-tune with and without the dense model teaching; one row per setting."""
    data = load_data("fashion-mnist")
    test = data.loader("test", batch_size=1000)
    rows = []
    for label, (name, config) in _compressions().items():
        dense = pretrained(name, progress=False)
        dense_acc = _acc(dense, test)
        example, _ = split_batch(next(iter(data.loader("train", batch_size=64))))
        pruned = copy.deepcopy(dense)
        pk.prune_(pruned, config, example_inputs=(example,))
        after_prune = _acc(pruned, test)
        macs = count_macs(dense, example).dense / count_macs(pruned, example).dense
        kept = count_nonzeros(pruned) / count_params(dense)
        runs: dict[str, list[float]] = {v: [] for v in VARIANTS}
        seconds: dict[str, float] = dict.fromkeys(VARIANTS, 0.0)
        for seed in seeds:
            for variant, kd in VARIANTS.items():
                model = copy.deepcopy(pruned)
                train = data.loader("train", batch_size=128, seed=seed)
                start = time.perf_counter()
                pk.finetune_(
                    model,
                    train,
                    epochs=epochs,
                    lr=LR,
                    teacher=pk.teacher_copy(dense) if kd else None,
                    temperature=kd[0] if kd else 4.0,
                    alpha=kd[1] if kd else 0.5,
                    seed=seed,
                    progress=False,
                )
                seconds[variant] += time.perf_counter() - start
                runs[variant].append(_acc(model, test))
                print(f"{label} seed {seed} {variant}: {runs[variant][-1]:.2f}", flush=True)
        rows.append(
            {
                "setting": label,
                "model": name,
                "config": config.to_dict(),
                "dense": dense_acc,
                "after_prune": after_prune,
                "kept_weights": kept,
                "macs_reduction": macs,
                "runs": runs,
                "seconds": seconds,
            }
        )
    return rows


def _mean_spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def fashion_table(rows: list[dict[str, Any]], epochs: int, seeds: list[int]) -> str:
    body = []
    kds = [v for v in VARIANTS if VARIANTS[v]]
    for r in rows:
        plain = r["runs"]["plain"]
        cells = []
        for v in kds:
            gains = [k - p for k, p in zip(r["runs"][v], plain, strict=True)]
            wins = sum(g > 0 for g in gains)
            cells.append(
                f"{_mean_spread(r['runs'][v])} ({statistics.mean(gains):+.2f}, "
                f"{wins}/{len(gains)} seeds better)"
            )
        body.append(
            [
                r["setting"],
                f"{r['kept_weights']:.1%}",
                f"{r['macs_reduction']:.2f}×",
                f"{r['dense']:.2f}",
                f"{r['after_prune']:.2f}",
                _mean_spread(plain),
                *cells,
            ]
        )
    head = ["compression", "weights kept", "MACs ÷", "dense", "pruned, no recovery"]
    head += ["fine-tuned", *(f"fine-tuned, {v} (gain)" for v in kds)]
    return (
        f"Fine-tuning: {epochs} epochs, AdamW lr {LR}, warm-up + cosine, batch 128, the same "
        "batches for every variant; KD mixes the soft-target loss (KL at temperature T, × T²) "
        "with the label loss, α the soft share; seeds "
        f"{', '.join(map(str, seeds))} (data order), mean ± standard deviation; gain: KD minus "
        "plain, per seed, averaged. Accuracy: top-1 % on the 10,000 test images.\n\n"
        + markdown_table(head, body)
    )


def _minilm_students() -> dict[str, Any]:
    """Two compressions of the 6-layer model, each made without training."""

    def depth(model: nn.Module, example: Any) -> str:
        kept = pk.shrink_depth_(model, num_layers=3).kept
        return f"layers {list(kept)} of 6"

    def heads_ffn(model: nn.Module, example: Any) -> str:
        config = pk.MagnitudeConfig(pattern="channel", macs_reduction=2.0, round_to=8)
        report = pk.prune_(model, config, example_inputs=example)
        heads = [g for g in report.groups if g.kind == "head"]
        ffn = [g for g in report.groups if g.kind == "channel"]
        return (
            f"{sum(g.after for g in heads)}/{sum(g.before for g in heads)} heads, "
            f"{sum(g.after for g in ffn)}/{sum(g.before for g in ffn)} FFN"
        )

    return {"3-layer student (shrink_depth_)": depth, "heads + FFN, 2× fewer MACs": heads_ffn}


def minilm(epochs: int, seed: int, lines: int | None = None) -> dict[str, Any]:
    """Compressed all-MiniLM-L6-v2 students: as cut, and distilled from the 6-layer model."""
    from prunekit.measure.latency import time_models
    from prunekit.measure.retrieval import wordnet_retrieval
    from prunekit.models.hf import load_tokenizer
    from prunekit.specs import load_model

    teacher, source = load_model("builtin:minilm")
    tok = load_tokenizer(source["path"])
    splits = load_data(source["dataset"], tokenizer=tok, seq_len=64, mode="lines")
    task = wordnet_retrieval(1000)
    test = splits.loader("test", batch_size=32)
    example, _ = split_batch(next(iter(test)))

    def score(m: nn.Module) -> dict[str, float]:
        return minilm_scores(m, teacher, tok, task, test)

    config = pk.DistillConfig(
        alpha=1.0, output_loss="cosine", hidden="auto", epochs=epochs, lr=5e-4, seed=seed
    )
    results: dict[str, Any] = {
        "teacher": {"params": count_params(teacher), **score(teacher)},
        "train_lines": min(lines or len(splits.train), len(splits.train)),
        "config": config.to_dict(),
        "students": [],
    }
    for label, make in _minilm_students().items():
        student = copy.deepcopy(teacher)
        kept = make(student, example)
        cut = {"params": count_params(student), **score(student)}
        print(f"{label} ({kept}), as cut: {cut}", flush=True)
        train = splits.loader("train", batch_size=32, seed=seed, num_samples=lines)
        start = time.perf_counter()
        report = pk.distill_(student, teacher, train, config)
        seconds = time.perf_counter() - start
        kd = {"params": count_params(student), **score(student)}
        print(f"{label}, distilled ({seconds:.0f} s): {kd}", flush=True)
        lat_t, lat_s = time_models([teacher, student], example, batch_sizes=(1, 32))
        results["students"].append(
            {
                "student": label,
                "kept": kept,
                "cut": cut,
                "kd": kd,
                "distill_seconds": seconds,
                "history": report.to_dict(),
                "speedup": {b: lat_t.median_ms[b] / lat_s.median_ms[b] for b in (1, 32)},
                "latency_method": lat_t.method,
            }
        )
    return results


HEADERS = ["model", "params", "recovery", "recall@1", "MRR", "fidelity", "speed-up b=1",
           "speed-up b=32"]  # fmt: skip


def minilm_table(r: dict[str, Any]) -> str:
    t = r["teacher"]

    def cells(m: dict[str, float]) -> list[str]:
        return [f"{m[k]:.3f}" for k in ("recall@1", "MRR", "fidelity")]

    rows = [["teacher: all-MiniLM-L6-v2", f"{t['params']:,}", "–", *cells(t), "1.00×", "1.00×"]]
    for s in r["students"]:
        speed = [f"{s['speedup'][b]:.2f}×" for b in (1, 32)]
        rows.append([s["student"], f"{s['cut']['params']:,}", "as cut", *cells(s["cut"]), *speed])
        rows.append(["", "", f"distilled ({s['distill_seconds']:.0f} s)", *cells(s["kd"]), "", ""])
    c = r["config"]
    return (
        f"Distillation: {c['epochs']} epoch(s) over {r['train_lines']:,} WordNet gloss lines "
        f"(outside the evaluation synsets), no labels: output loss {c['output_loss']} on the "
        f"sentence embeddings, hidden-state matching {c['hidden']}, AdamW lr {c['lr']}. "
        "Retrieval: WordNet definition→words on 1,000 held-out synsets; fidelity: mean cosine of "
        "the embeddings to the teacher's on the held-out gloss lines. Speed-up: teacher latency "
        "/ student latency, timed interleaved in this run.\n\n" + markdown_table(HEADERS, rows)
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--minilm-epochs", type=int, default=3)
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--minilm-lines", type=int, default=None, help="train on the first N")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    info = machine()
    rows = fashion(args.epochs, args.seeds)
    md = (
        "# Knowledge distillation as the recovery step\n\n"
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, {info['date']}.\n\n"
        "## Fashion-MNIST: heavy compression, fine-tuned with and without the dense teacher\n\n"
        + fashion_table(rows, args.epochs, args.seeds)
    )
    payload: dict[str, Any] = {"machine": info, "args": vars(args), "fashion": rows}
    if not args.skip_minilm:
        payload["minilm"] = minilm(args.minilm_epochs, args.seeds[0], args.minilm_lines)
        md += (
            "\n\n## all-MiniLM-L6-v2: compressed students distilled from the 6-layer model\n\n"
            + minilm_table(payload["minilm"])
        )
    js, out = write("distill", payload, md)
    print(md)
    print(f"wrote {js} and {out}")
    return payload


if __name__ == "__main__":
    main()
