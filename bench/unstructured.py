"""prunekit vs torch.nn.utils.prune on Fashion-MNIST LeNet-300-100 and LeNet-5.

For each model and sparsity (80/90/95%), every contender gets the same fine-tuning budget
(epochs, optimizer, LR schedule, data order — the same prunekit loop):
  torch-global-l1   torch.nn.utils.prune.global_unstructured(L1Unstructured), then fine-tune
  magnitude         prunekit one-shot global magnitude, then fine-tune
  taylor            prunekit one-shot global first-order Taylor, then fine-tune
  iterative         prunekit magnitude in 3 prune→train rounds within the budget
  agp               prunekit magnitude, cubic AGP schedule within the budget
Reported: accuracy after pruning and after fine-tuning (10k test images), non-zeros, bytes.

    python -m bench.unstructured [--epochs 4] [--models lenet300 lenet5] [--sparsities 0.8 0.9]
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import prunekit as pk
from bench.common import machine, write
from prunekit.artifact.io import artifact_size
from prunekit.data import load_data
from prunekit.measure import count_nonzeros, count_params
from prunekit.measure.accuracy import top1_accuracy
from prunekit.measure.counting import prunable_sparsity
from prunekit.measure.render import markdown_table
from prunekit.models import pretrained
from prunekit.targets import select_layers


def _acc(model: nn.Module, data: Any) -> float:
    return top1_accuracy(model, data)[0]


def torch_global_l1(model: nn.Module, sparsity: float) -> None:
    layers = select_layers(model)
    params = [(m, "weight") for m in layers.values()]
    torch_prune.global_unstructured(params, torch_prune.L1Unstructured, amount=sparsity)


def torch_finalize(model: nn.Module) -> None:
    """Bake torch's masks into plain weights (its reparametrisation hides them in weight_orig)."""
    for m in model.modules():
        if hasattr(m, "weight_orig"):
            torch_prune.remove(m, "weight")


def run_one(
    name: str, dense: nn.Module, sparsity: float, train: Any, test: Any, epochs: int, lr: float
) -> dict[str, Any]:
    model = copy.deepcopy(dense)
    start = time.perf_counter()
    after_prune: float | None = None
    ft: dict[str, Any] = {"lr": lr, "epochs": epochs, "progress": False, "seed": 0}
    if name == "torch-global-l1":
        torch_global_l1(model, sparsity)
        after_prune = _acc(model, test)
        pk.finetune_(model, train, **ft)
        torch_finalize(model)
    elif name in ("magnitude", "taylor"):
        config: pk.PruneConfig = (
            pk.MagnitudeConfig(sparsity=sparsity, scope="global")
            if name == "magnitude"
            else pk.TaylorConfig(sparsity=sparsity, scope="global")
        )
        pk.prune_(model, config, data=train)
        after_prune = _acc(model, test)
        pk.finetune_(model, train, **ft)
    else:
        schedule = pk.Iterative(rounds=3) if name == "iterative" else pk.AGP(end=0.6)
        config = pk.MagnitudeConfig(sparsity=sparsity, scope="global")
        pk.finetune_(model, train, prune=config, schedule=schedule, **ft)
    seconds = time.perf_counter() - start
    params, nonzeros = count_params(model), count_nonzeros(model)
    return {
        "method": name,
        "sparsity": sparsity,
        "accuracy_after_prune": after_prune,
        "accuracy": _acc(model, test),
        "nonzeros": nonzeros,
        "params": params,
        "weight_sparsity": prunable_sparsity(model),
        "artifact_bytes": artifact_size(model),
        "seconds": seconds,
    }


METHODS = ["torch-global-l1", "magnitude", "taylor", "iterative", "agp"]


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["lenet300", "lenet5"])
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.8, 0.9, 0.95])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args(argv)

    data = load_data("fashion-mnist")
    train = data.loader("train", batch_size=128, seed=0)
    test = data.loader("test", batch_size=1000)
    rows, results = [], []
    for model_name in args.models:
        dense = pretrained(model_name)
        dense_acc = _acc(dense, test)
        dense_bytes = artifact_size(dense)
        log(f"{model_name}: dense accuracy {dense_acc:.4f}")
        for sparsity in args.sparsities:
            for method in args.methods:
                r = run_one(method, dense, sparsity, train, test, args.epochs, args.lr)
                r.update(model=model_name, dense_accuracy=dense_acc, dense_bytes=dense_bytes)
                results.append(r)
                log(
                    f"  {sparsity:.0%} {method:16s} pruned {_pct(r['accuracy_after_prune'])} "
                    f"→ fine-tuned {_pct(r['accuracy'])} ({r['seconds']:.0f} s)"
                )
                rows.append(
                    [
                        model_name,
                        f"{sparsity:.0%}",
                        method,
                        _pct(dense_acc),
                        _pct(r["accuracy_after_prune"]),
                        _pct(r["accuracy"]),
                        f"{100 * (r['accuracy'] - dense_acc):+.2f}",
                        f"{r['nonzeros']:,} / {r['params']:,}",
                        f"{r['artifact_bytes']:,}",
                    ]
                )
    info = machine()
    header = (
        f"# Unstructured pruning on Fashion-MNIST: prunekit vs torch.nn.utils.prune\n\n"
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
        f"({info['torch_threads']} threads), {info['date']}. Fine-tuning budget for every row: "
        f"{args.epochs} epochs, AdamW lr {args.lr} with warm-up + cosine, batch 128, the same "
        f"data order. Accuracy on the 10,000 test images. `iterative` and `agp` prune while "
        f"training within that same budget, so they have no separate after-prune accuracy.\n\n"
    )
    table = markdown_table(
        [
            "model",
            "sparsity",
            "method",
            "dense",
            "pruned",
            "fine-tuned",
            "Δ pts",
            "non-zeros",
            "artifact bytes",
        ],
        rows,
    )
    payload = {"machine": info, "args": vars(args), "results": results}
    js, md = write("unstructured", payload, header + table)
    log(f"wrote {js} and {md}")
    return payload


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
