"""finetune_'s defaults against the loop a user would write: recovery after 90 % pruning.

Each model is pruned to 90 % of its weights (magnitude, unstructured, per layer), then trained
for the same number of epochs on the same batches (same data order per seed) by
  plain      ten lines of masked Adam at a constant learning rate of 1e-3, and
  finetune_  ``prunekit.finetune_(model, train, epochs=N)``: every other setting its default
             (``FinetuneConfig``: AdamW, peak lr, warm-up and cosine schedule), and
  finetune_ lr=1e-3  the same with the plain loop's learning rate as the cosine's peak (what
             the issue measured: a decaying schedule needs a higher peak than a constant rate).
Models: the digits MLP 64-300-100-10 (scikit-learn's 8×8 digits, trained here by the plain loop
for 30 epochs) and LeNet-300-100 on Fashion-MNIST (``builtin:lenet300``). Accuracy on the test
split, mean over the seeds.

    python -m bench.finetune_defaults [--epochs 10] [--seeds 0 1 2] [--models digits fashion]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import prunekit as pk
from bench.common import machine, write
from prunekit.data import load_data
from prunekit.measure.accuracy import top1_accuracy
from prunekit.measure.render import markdown_table
from prunekit.models import pretrained
from prunekit.targets import select_layers

SPARSITY = 0.9
BATCH = 128
PLAIN_LR = 1e-3


def plain_loop(model: nn.Module, train: Any, epochs: int, lr: float = PLAIN_LR) -> None:
    """The loop a user writes: Adam at a constant lr, zeros written back after each step."""
    masks = {m: m.weight != 0 for m in select_layers(model).values()}
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for x, y in train:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            with torch.no_grad():
                for m, mask in masks.items():
                    m.weight.mul_(mask)
    model.eval()


def digits_mlp() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 100),
                          nn.ReLU(), nn.Linear(100, 10))  # fmt: skip
    plain_loop(model, load_data("digits").loader("train", batch_size=BATCH, seed=100), 30)
    return model


MODELS: dict[str, tuple[str, str, Callable[[], nn.Module]]] = {
    "digits": ("digits MLP 64-300-100-10", "digits", digits_mlp),
    "fashion": ("LeNet-300-100, Fashion-MNIST", "fashion-mnist",
                lambda: pretrained("lenet300", progress=False)),
}  # fmt: skip


# name -> finetune_'s keywords besides epochs and seed (None: the plain loop).
CONTENDERS: dict[str, dict[str, Any] | None] = {
    "plain": None,
    "finetune_": {},
    "finetune_ lr=1e-3": {"lr": 1e-3},
}


def _acc(model: nn.Module, data: Any) -> float:
    return 100.0 * top1_accuracy(model, data)[0]


def run_model(key: str, epochs: int, seeds: list[int], log: Callable[[str], None]) -> dict:
    label, spec, build = MODELS[key]
    data = load_data(spec)
    test = data.loader("test", batch_size=1000)
    dense = build().eval()
    pruned = copy.deepcopy(dense)
    pk.prune_(pruned, pk.MagnitudeConfig(sparsity=SPARSITY))
    row: dict[str, Any] = {"model": label, "dense": _acc(dense, test),
                           "after_prune": _acc(pruned, test)}  # fmt: skip
    for name, fields in CONTENDERS.items():
        accs, seconds = [], 0.0
        for seed in seeds:
            model = copy.deepcopy(pruned)
            train = data.loader("train", batch_size=BATCH, seed=seed)
            torch.manual_seed(seed)
            start = time.perf_counter()
            if fields is None:
                plain_loop(model, train, epochs)
            else:
                pk.finetune_(model, train, epochs=epochs, seed=seed, progress=False, **fields)
            seconds += time.perf_counter() - start
            accs.append(_acc(model, test))
            log(f"{label}, seed {seed}, {name}: {accs[-1]:.2f}")
        row[name] = {"accuracy": accs, "mean": statistics.mean(accs), "seconds": seconds}
    return row


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args(argv)

    results = [run_model(key, args.epochs, args.seeds, log) for key in args.models]
    defaults = pk.FinetuneConfig()
    info = machine()
    rows = [
        [r["model"], f"{r['dense']:.2f}", f"{r['after_prune']:.2f}",
         *(f"{r[name]['mean']:.2f}" for name in CONTENDERS),
         f"{r['finetune_']['mean'] - r['plain']['mean']:+.2f}",
         *(" / ".join(f"{a:.2f}" for a in r[name]["accuracy"]) for name in CONTENDERS)]
        for r in results
    ]  # fmt: skip
    header = (
        f"# Fine-tuning after 90 % pruning: `finetune_` defaults vs a plain masked Adam loop\n\n"
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
        f"({info['torch_threads']} threads), {info['date']}. Magnitude pruning to "
        f"{SPARSITY:.0%} (unstructured, per layer), then {args.epochs} epochs, batch {BATCH}, "
        f"the same data order per seed (seeds {', '.join(map(str, args.seeds))}). "
        f"`plain`: Adam, constant lr {PLAIN_LR:g}, zeros written back after each step. "
        f"`finetune_`: `finetune_(model, train, epochs={args.epochs})`, i.e. "
        f"{defaults.optimizer}, lr {defaults.lr:g}, warm-up {defaults.warmup:g} of the steps, "
        f"{defaults.lr_schedule} schedule; `finetune_ lr=1e-3` also passes `lr=1e-3`. Test "
        f"accuracy in %, mean over seeds.\n\n"
    )
    table = markdown_table(
        ["model", "dense", "pruned", *CONTENDERS, "Δ pts (defaults − plain)",
         *(f"{name} per seed" for name in CONTENDERS)],
        rows,
    )  # fmt: skip
    notes = (
        "\n\nThe digits test split has 360 images (one image is 0.28 points), Fashion-MNIST's "
        "10,000. Pruning is deterministic, so seeds differ only in the data order (and on "
        "digits often land on the same count of right answers).\n"
    )
    payload = {"machine": info, "args": vars(args), "defaults": defaults.to_dict(),
               "results": results}  # fmt: skip
    js, md = write("finetune_defaults", payload, header + table + notes)
    log(f"wrote {js} and {md}")
    return payload


if __name__ == "__main__":
    main()
