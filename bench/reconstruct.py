"""Reconstruction after channel pruning on Fashion-MNIST: prunekit vs Torch-Pruning, equal widths.

For LeNet-5 and VGG-BN (the builtin trained models) and MAC reductions 2×, 3× and 4×,
Torch-Pruning (L1 magnitude, bench.structured's setup) prunes a fresh copy of the dense model
until its MAC count is reduced as much as asked; its per-layer widths are then imposed on
prunekit (``layer_sparsity``), so every row of one target has exactly the same layer shapes:
  tp-magnitude              Torch-Pruning MetaPruner + MagnitudeImportance(p=1)
  magnitude                 prunekit L1 magnitude, no reconstruction (a control; only with
                            --criteria, to keep the default run near 30 min on a shared CPU)
  magnitude+reconstruct     the same channels, then each layer reading them refit by least
                            squares on 256 training images (reconstruct=True)
  reconstruction            channels ranked by the output error their removal causes (greedy,
                            least squares), then the same refit (ReconstructionConfig)
Every row is then fine-tuned by the same prunekit loop (epochs, AdamW, LR schedule, data order);
one epoch by default, so that the run fits ~30 min on a shared 2-core machine.
Reported: accuracy after pruning (before any fine-tuning) and after fine-tuning, the kept widths
and MACs (prunekit.measure's counter, one image), and the time pruning took.

    python -m bench.reconstruct [--quick] [--models lenet5 vgg-bn] [--epochs N]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import time
from collections.abc import Callable
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

import prunekit as pk
from bench import common
from bench.structured import MODELS, tp_magnitude_
from prunekit.data import load_data
from prunekit.data.splits import Splits
from prunekit.measure import count_macs
from prunekit.measure.accuracy import top1_accuracy
from prunekit.measure.render import markdown_table
from prunekit.models import pretrained

CRITERIA = ["tp-magnitude", "magnitude", "magnitude+reconstruct", "reconstruction"]
DEFAULT_CRITERIA = ["magnitude+reconstruct", "reconstruction"]
REDUCTIONS = [2.0, 3.0, 4.0]
CALIBRATION_SAMPLES = 256
# Targets (issue 16): after the same fine-tuning, ≥ this many points above Torch-Pruning.
FINETUNED_GAIN_PTS = 0.3
COLUMNS = ["model", "MACs target", "criterion", "widths", "MACs ÷", "pruned", "fine-tuned",
           "Δ vs TP pruned", "Δ vs TP fine-tuned", "prune s"]  # fmt: skip


def widths(model: nn.Module, output: str) -> dict[str, int]:
    """Output channels of every conv and linear layer but the one producing the logits."""
    out = {}
    for name, m in model.named_modules():
        if name != output and isinstance(m, nn.Conv2d | nn.Linear):
            out[name] = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
    return out


def prunekit_config(criterion: str, dense: dict[str, int], target: dict[str, int]) -> Any:
    """A config that keeps exactly ``target`` widths (every layer listed in layer_sparsity)."""
    fields: dict[str, Any] = {
        "pattern": "channel",
        "sparsity": 0.0,
        "layer_sparsity": {n: 1 - target[n] / dense[n] for n in dense},
        "reconstruct_samples": CALIBRATION_SAMPLES,
    }
    if criterion == "magnitude":
        return pk.MagnitudeConfig(norm="l1", **fields)
    if criterion == "magnitude+reconstruct":
        return pk.MagnitudeConfig(norm="l1", reconstruct=True, **fields)
    if criterion == "reconstruction":
        return pk.ReconstructionConfig(**fields)
    raise ValueError(f"criterion: not a prunekit criterion: {criterion!r}")


def run_one(
    name: str,
    dense: nn.Module,
    dense_macs: int,
    criterion: str,
    reduction: float,
    target: dict[str, int] | None,
    data: Splits,
    calibration: list[Any],
    args: argparse.Namespace,
    log: Callable[[str], None],
) -> dict[str, Any]:
    spec = MODELS[name]
    test = data.loader("test", batch_size=1000)
    example = calibration[0][0]
    row: dict[str, Any] = {"model": name, "criterion": criterion, "target": reduction}
    model = copy.deepcopy(dense)

    def prune() -> dict[str, Any]:
        if criterion == "tp-magnitude":
            return tp_magnitude_(model, reduction, example[:1], spec.output, spec.round_to)
        assert target is not None  # Torch-Pruning runs first and sets the widths
        config = prunekit_config(criterion, widths(dense, spec.output), target)
        report = pk.prune_(model, config, data=calibration, example_inputs=(example,))
        return {"refits": [vars(r) for r in report.refits]}

    if not common.run_step(row, "prune_seconds", prune, log):
        return row
    row["widths"] = widths(model, spec.output)
    row["macs"] = count_macs(model, example[:1]).dense
    row["macs_reduction"] = dense_macs / row["macs"]
    row["accuracy_after_prune"] = top1_accuracy(model, test)[0]
    row.update(common.finetune_scored(model, data, test, args.epochs, args))
    return row


def main(argv: list[str] | None = None, log: Callable[[str], None] = common.echo) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS))
    parser.add_argument("--criteria", nargs="+", choices=CRITERIA[1:], help="prunekit rows")
    common.add_finetune_args(
        parser,
        "smoke check: LeNet-5, 3×, 1 epoch on 6,000 images; writes nothing",
        epochs=1,
        timing=False,
    )
    args = parser.parse_args(argv)
    quick = {"models": ["lenet5"], "reductions": [3.0]}
    common.fill_args(args, quick, {"models": list(MODELS), "reductions": REDUCTIONS})
    args.criteria = ["tp-magnitude", *(args.criteria or DEFAULT_CRITERIA)]
    torch.manual_seed(0)

    began = time.perf_counter()
    data = load_data("fashion-mnist")
    test = data.loader("test", batch_size=1000)
    calibration = list(itertools.islice(data.loader("train", batch_size=128, seed=0), 2))
    dense_rows, results = [], []
    for name in args.models:
        dense = pretrained(name, progress=False)
        dense_row = {
            "model": name,
            "accuracy": top1_accuracy(dense, test)[0],
            "macs": count_macs(dense, calibration[0][0][:1]).dense,
            "widths": widths(dense, MODELS[name].output),
        }
        dense_rows.append(dense_row)
        log(f"{MODELS[name].label}: dense accuracy {dense_row['accuracy']:.4f}")
        for reduction in args.reductions:
            target = None
            for criterion in args.criteria:
                row = run_one(name, dense, dense_row["macs"], criterion, reduction, target,
                                 data, calibration, args, log)  # fmt: skip
                if criterion == "tp-magnitude":
                    target = row.get("widths")
                row["dense_accuracy"] = dense_row["accuracy"]
                results.append(row)
                log(common.summary(row, "criterion", 22, _done))
        # Written after each model too: a run cut short keeps the models it finished.
        payload = common.run_payload(
            args, began, dense_rows, results, targets(results), torch_pruning=tp.__version__
        )
        if not args.quick:
            common.write("reconstruct", payload, render(payload))
    common.finish("reconstruct", payload, render(payload), args, log)
    return payload


def _peer(results: list[dict[str, Any]], row: dict[str, Any]) -> dict[str, Any] | None:
    return next(
        (p for p in results if p["criterion"] == "tp-magnitude" and p["model"] == row["model"]
         and p["target"] == row["target"] and "error" not in p),
        None,
    )  # fmt: skip


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and prunekit criterion with reconstruction: the gain over Torch-Pruning at
    each MAC target, before and after fine-tuning."""
    out = []
    done = [r for r in results if "error" not in r]
    for model in dict.fromkeys(r["model"] for r in done):
        for criterion in ("magnitude+reconstruct", "reconstruction"):
            pairs = [(r, _peer(done, r)) for r in done
                     if r["model"] == model and r["criterion"] == criterion]  # fmt: skip
            pairs = [(r, p) for r, p in pairs if p is not None]
            if not pairs:
                continue
            tuned = [100 * (r["accuracy"] - p["accuracy"]) for r, p in pairs]
            pruned = [100 * (r["accuracy_after_prune"] - p["accuracy_after_prune"])
                      for r, p in pairs]  # fmt: skip
            out.append({
                "model": model,
                "criterion": criterion,
                "target": f"≥ {FINETUNED_GAIN_PTS:g} pt over Torch-Pruning after the same "
                "fine-tuning, at equal widths",
                "met": all(d >= FINETUNED_GAIN_PTS for d in tuned),
                "finetuned_gain_pts": tuned,
                "pruned_gain_pts": pruned,
                "detail": "; ".join(
                    f"{r['target']:g}×: {t:+.2f} pts fine-tuned, {q:+.2f} pts before fine-tuning"
                    for (r, _), t, q in zip(pairs, tuned, pruned, strict=True)
                ),
            })  # fmt: skip
    return out


def render(payload: dict[str, Any]) -> str:
    info, args = payload["machine"], payload["args"]
    share = "" if args["train_samples"] is None else f" on {args['train_samples']:,} images"
    header = (
        "# Reconstruction after channel pruning: prunekit vs Torch-Pruning at equal widths\n\n"
        f"{common.machine_line(info, ' (shared with other jobs while it ran)')}; whole run "
        f"{payload['minutes']:.0f} min. Fashion-MNIST. For each MAC target Torch-Pruning "
        f"({payload['torch_pruning']}, L1 magnitude) prunes the trained dense model until its "
        f"own MAC count is reduced that much (VGG-BN widths multiples of 8); prunekit is then "
        f"given exactly those widths per layer, so all rows of one target have the same "
        f"shapes and MACs. Reconstruction refits each layer that lost input channels by "
        f"ridge least squares (float64) on {CALIBRATION_SAMPLES} training images, front to "
        f"back. Every row is fine-tuned with the same loop: {args['epochs']} epoch"
        f"{'s' * (args['epochs'] > 1)}{share}, AdamW lr {args['lr']} with warm-up + cosine, "
        f"batch 128, the same data order (seed 0). Accuracy on the 10,000 test images: "
        f"'pruned' before any fine-tuning, 'fine-tuned' after. 'prune s': wall time of the "
        f"pruning call (scoring, shrink, refit) on the shared machine. One run, one seed: "
        f"differences of a few tenths of a point after fine-tuning are within its noise.\n\n"
    )
    rows = []
    for dense in payload["dense"]:
        label = MODELS[dense["model"]].label
        rows.append([label, "–", "dense", _widths(dense["widths"]), "1.00×", "–",
                     common.pct(dense["accuracy"]), "–", "–", "–"])  # fmt: skip
        for r in payload["results"]:
            if r["model"] == dense["model"]:
                rows.append([label, f"{r['target']:g}×", r["criterion"],
                             *_cells(r, _peer(payload["results"], r))])  # fmt: skip
    verdicts = [
        f"- **{'met' if t['met'] else 'not met'}**: {t['target']}, "
        f"{MODELS[t['model']].label}, {t['criterion']}: {t['detail']}."
        for t in payload["targets"]
    ]
    closing = common.targets_and_errors(
        "reconstruct", verdicts, payload["results"], MODELS, "criterion"
    )
    return header + markdown_table(COLUMNS, rows) + closing


def _cells(r: dict[str, Any], peer: dict[str, Any] | None) -> list[str]:
    if "error" in r:
        return common.error_cells(COLUMNS)
    vs = ["–", "–"]
    if peer is not None and r is not peer:
        vs = [
            f"{100 * (r['accuracy_after_prune'] - peer['accuracy_after_prune']):+.2f}",
            f"{100 * (r['accuracy'] - peer['accuracy']):+.2f}",
        ]
    return [
        _widths(r["widths"]),
        f"{r['macs_reduction']:.2f}×",
        common.pct(r["accuracy_after_prune"]),
        common.pct(r["accuracy"]),
        *vs,
        f"{r['prune_seconds']:.1f}",
    ]


def _widths(w: dict[str, int]) -> str:
    return "/".join(str(v) for v in w.values())


def _done(r: dict[str, Any]) -> str:
    return (
        f"widths {_widths(r['widths'])}, {r['macs_reduction']:.2f}× MACs: pruned "
        f"{common.pct(r['accuracy_after_prune'])} → fine-tuned {common.pct(r['accuracy'])} "
        f"({r['prune_seconds']:.0f} s + {r['finetune_seconds']:.0f} s)"
    )


if __name__ == "__main__":
    main()
