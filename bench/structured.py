"""Structured (channel) pruning on Fashion-MNIST: prunekit vs Torch-Pruning at equal MACs.

For LeNet-5 and VGG-BN (the builtin trained models) and MAC reductions 2×, 3× and 4×, a fresh
copy of the dense model is pruned by each criterion, its layers rebuilt smaller, then fine-tuned
with the same budget (epochs, AdamW, LR schedule, data order: the same prunekit loop):
  magnitude     prunekit, L1 norm of each channel's coupled weights
  bn-scale      prunekit, |γ| of the BatchNorm after each conv (network slimming)
  taylor        prunekit, first-order Taylor |w·∂L/∂w| over 1,024 training images
  random        prunekit, random channels: the floor any criterion must beat
  tp-magnitude  Torch-Pruning MetaPruner + MagnitudeImportance(p=1), stepped until its own MAC
                count is reduced as much as asked
Every criterion keeps the same fraction of channels in each layer (prunekit scope "layer",
Torch-Pruning local pruning); the output layer is never pruned. Reported: accuracy after pruning
and after fine-tuning, parameters, MACs (prunekit.measure's counter, one image), and CPU latency
at batch 1 and 256 as a speed-up over the dense model timed side by side (interleaved).

    python -m bench.structured [--quick] [--models lenet5 vgg-bn] [--criteria magnitude taylor]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

import prunekit as pk
from bench import common
from prunekit.data import load_data
from prunekit.data.splits import Splits
from prunekit.measure import count_macs, count_params, time_models
from prunekit.measure.accuracy import top1_accuracy
from prunekit.measure.render import markdown_table


@dataclass(frozen=True)
class Model:
    name: str  # builtin name
    label: str
    output: str  # the layer that produces the logits: never pruned
    epochs: int  # fine-tuning budget, chosen so the whole benchmark runs in about 35 minutes
    round_to: int  # kept widths are multiples of this, for both tools


# VGG-BN keeps widths multiples of 8 with both tools: oneDNN's convolutions are several times
# slower on odd widths (at 3.1× fewer MACs it measured 1.7× faster with widths 18/36/72, 3.3× at
# 4.0× with 16/32/64). LeNet-5's 20-channel conv leaves multiples of 8 too coarse to reach a MAC
# target, so it keeps any width.
ROUND_TO = 8

MODELS = {
    "lenet5": Model("lenet5", "LeNet-5", "fc2", epochs=2, round_to=1),
    "vgg-bn": Model("vgg-bn", "VGG-BN", "classifier", epochs=2, round_to=ROUND_TO),
}
CRITERIA = ["magnitude", "bn-scale", "taylor", "random", "tp-magnitude"]
REDUCTIONS = [2.0, 3.0, 4.0]
BATCH_SIZES = (1, 256)
TAYLOR_SAMPLES = 1024
# Torch-Pruning moves every layer's ratio up by 1/TP_STEPS per step until the MACs are reached.
TP_STEPS = 200
# Accuracy right after pruning (before fine-tuning) is read on the first test images only.
PRUNED_EVAL = 2000
# Targets.
SPEEDUP_GOAL = 3.0
MAX_DROP_PTS = 1.0
SPEEDUP_PER_MAC = 0.8
COLUMNS = ["model", "MACs target", "criterion", "pruned", "fine-tuned", "Δ pts", "params",
           "MMACs", "MACs ÷", *(f"speed-up b{b}" for b in BATCH_SIZES)]  # fmt: skip


def prunekit_config(criterion: str, reduction: float, round_to: int) -> pk.PruneConfig:
    structured: dict[str, Any] = {
        "pattern": "channel",
        "macs_reduction": reduction,
        "round_to": round_to,
    }
    if criterion == "magnitude":
        return pk.MagnitudeConfig(norm="l1", **structured)
    if criterion == "bn-scale":
        return pk.BNScaleConfig(**structured)
    if criterion == "taylor":
        return pk.TaylorConfig(num_samples=TAYLOR_SAMPLES, **structured)
    if criterion == "random":
        return pk.RandomConfig(**structured)
    raise ValueError(f"criterion: not a prunekit criterion: {criterion!r}")


def tp_magnitude_(
    model: nn.Module, reduction: float, example: torch.Tensor, output: str, round_to: int
) -> dict[str, Any]:
    """Prune ``model`` with Torch-Pruning's L1 magnitude until its MAC count is ``reduction``×
    smaller (Torch-Pruning's own counter, on ``example``)."""
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=1.0,
        max_pruning_ratio=0.95,
        iterative_steps=TP_STEPS,
        ignored_layers=[model.get_submodule(output)],
        round_to=round_to if round_to > 1 else None,
    )
    base, _ = tp.utils.count_ops_and_params(model, example)
    macs, steps = base, 0
    while base / macs < reduction:
        if steps == TP_STEPS:
            raise RuntimeError(f"Torch-Pruning reached only {base / macs:.2f}× fewer MACs")
        pruner.step()
        steps += 1
        macs, _ = tp.utils.count_ops_and_params(model, example)
    return {"tp_steps": steps, "tp_macs_reduction": base / macs}


def not_applicable(model: nn.Module, spec: Model, criterion: str) -> str | None:
    """Why ``criterion`` does not apply to ``model`` (bn-scale without BatchNorm), or None."""
    if criterion == "bn-scale" and not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
    ):
        return f"{spec.label} has no BatchNorm to rank channels by"
    return None


def prune(
    model: nn.Module,
    spec: Model,
    criterion: str,
    reduction: float,
    data: Splits,
    example: torch.Tensor,
) -> dict[str, Any]:
    """Prune ``model`` in place; what the pruner said about it."""
    if criterion == "tp-magnitude":
        return tp_magnitude_(model, reduction, example[:1], spec.output, spec.round_to)
    config = prunekit_config(criterion, reduction, spec.round_to)
    calibration = data.loader("train", batch_size=128, seed=0) if criterion == "taylor" else None
    report = pk.prune_(model, config, data=calibration, example_inputs=(example,))
    return {"planned_macs_reduction": report.macs_reduction, "max_diff": report.max_diff}


def run_one(
    spec: Model,
    dense: nn.Module,
    dense_macs: int,
    criterion: str,
    reduction: float,
    data: Splits,
    args: argparse.Namespace,
    log: Callable[[str], None],
) -> dict[str, Any]:
    test, example = common.test_and_example(data)
    row: dict[str, Any] = {"model": spec.name, "criterion": criterion, "target": reduction}
    skipped = not_applicable(dense, spec, criterion)
    if skipped is not None:
        row["skipped"] = skipped
        return row
    model = copy.deepcopy(dense)
    step = partial(prune, model, spec, criterion, reduction, data, example)
    if not common.run_step(row, "prune_seconds", step, log):
        return row
    row["accuracy_after_prune"] = top1_accuracy(model, test, num_samples=PRUNED_EVAL)[0]
    row.update(common.finetune_scored(model, data, test, args.epochs or spec.epochs, args))
    row["params"] = count_params(model)
    row["macs"] = count_macs(model, example[:1]).dense
    row["macs_reduction"] = dense_macs / row["macs"]
    inputs = next(iter(data.loader("test", batch_size=max(BATCH_SIZES))))[0]
    before, after = time_models(
        [dense, model], inputs, batch_sizes=BATCH_SIZES, min_run_time=args.min_run_time
    )
    row["dense_ms"] = before.median_ms
    row["latency_ms"] = after.median_ms
    row["speedup"] = {b: before.median_ms[b] / after.median_ms[b] for b in BATCH_SIZES}
    row["latency_method"] = after.method
    return row


def main(argv: list[str] | None = None, log: Callable[[str], None] = common.echo) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS))
    parser.add_argument("--criteria", nargs="+", choices=CRITERIA)
    common.add_finetune_args(
        parser, "smoke check: LeNet-5, 2×, magnitude vs tp-magnitude, 1/10 epoch; writes nothing"
    )
    args = parser.parse_args(argv)
    quick = {
        "models": ["lenet5"],
        "criteria": ["magnitude", "tp-magnitude"],
        "reductions": [2.0],
        "epochs": 1,
    }
    common.fill_args(
        args, quick, {"models": list(MODELS), "criteria": CRITERIA, "reductions": REDUCTIONS}
    )
    torch.manual_seed(0)

    began = time.perf_counter()
    data = load_data("fashion-mnist")
    test, example = common.test_and_example(data)
    dense_rows, results = [], []
    for name in args.models:
        spec = MODELS[name]
        dense, dense_row = common.load_dense(spec, test, example, args, log, criterion="dense")
        dense_rows.append(dense_row)
        for reduction in args.reductions:
            for criterion in args.criteria:
                row = run_one(spec, dense, dense_row["macs"], criterion, reduction, data, args, log)
                row["dense_accuracy"] = dense_row["accuracy"]
                results.append(row)
                log(common.summary(row, "criterion", 12, _done))
        timed = [r["dense_ms"] for r in results if r["model"] == name and "dense_ms" in r]
        dense_row["latency_ms"] = {b: statistics.median(t[b] for t in timed) for b in BATCH_SIZES}
    payload = common.run_payload(args, began, dense_rows, results, targets(results))
    common.finish("structured", payload, render(payload), args, log)
    return payload


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target checked on the prunekit rows, per model (and batch size for latency)."""
    done = [r for r in results if "error" not in r and "skipped" not in r]
    out = []
    for model in dict.fromkeys(r["model"] for r in done):
        rows = [r for r in done if r["model"] == model and r["criterion"] != "tp-magnitude"]
        peers = [r for r in done if r["model"] == model and r["criterion"] == "tp-magnitude"]
        out += [_speedup_at_accuracy(model, rows, b) for b in BATCH_SIZES]
        out += [_speedup_per_mac(model, rows, b) for b in BATCH_SIZES]
        out.append(_versus_peer(model, rows, peers))
    return out


def _speedup_at_accuracy(model: str, rows: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    kept = [r for r in rows if _drop(r) <= MAX_DROP_PTS]
    best = max(kept, key=lambda r: r["speedup"][batch], default=None)
    if best is None:
        detail = f"no row within {MAX_DROP_PTS:g} pt"
    else:
        detail = (
            f"best {best['speedup'][batch]:.2f}× ({best['criterion']} at "
            f"{best['macs_reduction']:.2f}× MACs, {-_drop(best):+.2f} pts)"
        )
    return {
        "target": f"≥{SPEEDUP_GOAL:g}× speed-up at ≤{MAX_DROP_PTS:g} pt accuracy loss",
        "model": model,
        "batch": batch,
        "met": best is not None and best["speedup"][batch] >= SPEEDUP_GOAL,
        "detail": detail,
    }


def _speedup_per_mac(model: str, rows: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    ratios = [r["speedup"][batch] / r["macs_reduction"] for r in rows]
    ok = sum(x >= SPEEDUP_PER_MAC for x in ratios)
    return {
        "target": f"speed-up ≥ {SPEEDUP_PER_MAC:g}× the MAC reduction",
        "model": model,
        "batch": batch,
        "met": bool(rows) and ok == len(rows),
        "detail": f"{ok}/{len(rows)} rows; speed-up ÷ MAC reduction "
        f"{min(ratios, default=0):.2f}–{max(ratios, default=0):.2f}",
    }


def _versus_peer(
    model: str, rows: list[dict[str, Any]], peers: list[dict[str, Any]]
) -> dict[str, Any]:
    """prunekit magnitude vs Torch-Pruning magnitude: the like-for-like pair at each target."""
    mine = {r["target"]: r for r in rows if r["criterion"] == "magnitude"}
    pairs = [(mine[p["target"]], p) for p in peers if p["target"] in mine]
    wins = sum(m["accuracy"] >= p["accuracy"] for m, p in pairs)
    return {
        "target": "accuracy ≥ Torch-Pruning at equal MACs (L1 magnitude vs L1 magnitude)",
        "model": model,
        "batch": None,
        "met": bool(pairs) and wins == len(pairs),
        "detail": f"{wins}/{len(pairs)} targets; "
        + "; ".join(
            f"{m['target']:g}×: {common.pct(m['accuracy'])} vs {common.pct(p['accuracy'])} "
            f"({m['macs_reduction']:.2f}× vs {p['macs_reduction']:.2f}× MACs)"
            for m, p in pairs
        ),
    }


def render(payload: dict[str, Any]) -> str:
    info, args = payload["machine"], payload["args"]
    budget = common.epochs_budget(payload["dense"], MODELS)
    share = "" if args["train_samples"] is None else f" on {args['train_samples']:,} images"
    header = (
        "# Structured (channel) pruning on Fashion-MNIST: prunekit vs Torch-Pruning\n\n"
        f"{common.machine_line(info)}; whole run {payload['minutes']:.0f} "
        f"min. Every row prunes a fresh copy of the trained dense model to the MAC target, then "
        f"fine-tunes it with the same budget: {budget}{share}, AdamW lr {args['lr']} with "
        f"warm-up + cosine, batch 128, the same data order. Same fraction of channels removed "
        f"in every layer for all criteria; Torch-Pruning ({tp.__version__}, L1 magnitude) is "
        f"stepped until its own MAC count reaches the target; for VGG-BN both keep widths "
        f"multiples of {ROUND_TO} (odd widths run several times slower in oneDNN). Accuracy "
        f"on the 10,000 test images ('pruned': before fine-tuning, first {PRUNED_EVAL:,} "
        f"only). MACs per image by "
        f"prunekit.measure on the rebuilt model. Speed-up: dense ÷ pruned latency, both timed "
        f"interleaved in one run (eval mode, inference mode, channels_last, "
        f"{info['torch_threads']} threads, median of ≥5 blocks, ≥{args['min_run_time']:g} s "
        f"each); dense latency is the median over its runs. One run, one seed: the prunekit "
        f"criteria at one target build identical layer shapes, so their spread in speed-up is "
        f"the timing noise; accuracy differences of a few tenths of a point are within "
        f"fine-tuning noise.\n\n"
    )
    rows = common.table_rows(
        payload, MODELS, "criterion", "accuracy_after_prune", COLUMNS, BATCH_SIZES
    )
    verdicts = [
        f"- **{'met' if t['met'] else 'not met'}**: {t['target']}, {MODELS[t['model']].label}"
        + ("" if t["batch"] is None else f", batch {t['batch']}")
        + f": {t['detail']}."
        for t in payload["targets"]
    ]
    skipped = {f"{r['criterion']} on {MODELS[r['model']].label}: {r['skipped']}."
               for r in payload["results"] if "skipped" in r}  # fmt: skip
    text = header + " ".join(sorted(skipped)) + ("\n\n" if skipped else "")
    closing = common.targets_and_errors(
        "structured",
        verdicts,
        payload["results"],
        MODELS,
        "criterion",
        "Targets (prunekit rows only)",
    )
    return text + markdown_table(COLUMNS, rows) + closing


def _drop(row: dict[str, Any]) -> float:
    """Accuracy lost to pruning, in points (negative when fine-tuning gained)."""
    return 100 * (row["dense_accuracy"] - row["accuracy"])


def _done(r: dict[str, Any]) -> str:
    return (
        f"pruned {common.pct(r['accuracy_after_prune'])} → fine-tuned "
        f"{common.pct(r['accuracy'])}, {r['macs_reduction']:.2f}× MACs, speed-up "
        + " / ".join(f"{r['speedup'][b]:.2f}× (b{b})" for b in BATCH_SIZES)
        + f" ({r['prune_seconds'] + r['finetune_seconds']:.0f} s)"
    )


if __name__ == "__main__":
    main()
