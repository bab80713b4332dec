"""``prunekit demo``: the whole idea in under two minutes on 2 CPU cores, no arguments.

Trains a small CNN on scikit-learn's digits (cached after the first run), prunes copies of it
with magnitude and with first-order Taylor scores to high sparsity, fine-tunes each with the
masks kept, and prints the measured before/after table of each and a summary.
"""

from __future__ import annotations

import copy

import typer

from prunekit.cli.common import console, require, show
from prunekit.data import load_data
from prunekit.measure import compare
from prunekit.measure.accuracy import top1_accuracy
from prunekit.measure.render import render_table
from prunekit.models import pretrained
from prunekit.prune import MagnitudeConfig, TaylorConfig, prune_
from prunekit.train import finetune_


def demo(
    sparsity: float = typer.Option(0.9, help="Fraction of weights removed, in [0, 1)."),
    epochs: int = typer.Option(3, help="Fine-tuning epochs after pruning."),
) -> None:
    """Train a digits CNN, prune it two ways, fine-tune, and show what it cost."""
    require(epochs >= 1, "--epochs", epochs, "≥ 1")
    configs = [
        MagnitudeConfig(sparsity=sparsity, scope="global"),
        TaylorConfig(sparsity=sparsity, scope="global", num_samples=512),
    ]
    console.rule("[bold]prunekit demo")
    console.print("1. a small CNN on scikit-learn's 8×8 digits (trained on first use, then cached)")
    dense = pretrained("digits-cnn")
    splits = load_data("digits")
    train = splits.loader("train", batch_size=64, seed=0)
    test = splits.loader("test", batch_size=256)
    dense_acc = _acc(dense, test)
    console.print(f"   dense test accuracy: {dense_acc:.2%}")

    summary = []
    for step, config in enumerate(configs, start=2):
        name = config.method
        console.rule(f"{step}. {name}: {sparsity:.0%} of the weights removed, then {epochs} epochs")
        model = copy.deepcopy(dense)
        report = prune_(model, config, data=train)
        pruned_acc = _acc(model, test)
        console.print(
            f"   pruned {report.zeros:,} of {report.numel:,} weights in {report.seconds:.2f} s; "
            f"accuracy right after pruning: {pruned_acc:.2%}"
        )
        finetune_(model, train, epochs=epochs, lr=1e-3, eval_data=test)
        with console.status("measuring before/after (accuracy, bytes, MACs, latency)…"):
            comparison = compare(dense, model, test, min_run_time=0.3)
        show(str(comparison))
        after = comparison.after
        summary.append(
            [
                name,
                f"{report.sparsity:.1%}",
                f"{dense_acc:.2%}",
                f"{pruned_acc:.2%}",
                f"{after.accuracy:.2%}",
                f"{after.nonzeros:,} / {after.params:,}",
                f"{after.effective_macs / after.macs:.2f}×" if after.macs else "n/a",
            ]
        )
    console.rule("summary")
    show(
        render_table(
            "Pruned digits CNN (test split, 360 images)",
            ["method", "sparsity", "dense acc", "pruned", "fine-tuned", "non-zeros", "eff. MACs"],
            summary,
            caption="Unstructured zeros shrink the non-zeros and effective MACs; dense CPU kernels "
            "do not skip them, so latency stays about the same; `pk.save` stores them sparse. "
            "For speed, prune whole channels: prunekit prune --pattern channel.",
        )
    )


def _acc(model, data) -> float:
    measured = top1_accuracy(model, data)
    return measured[0] if measured else float("nan")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
