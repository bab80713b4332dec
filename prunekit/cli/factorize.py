"""``prunekit factorize``: split layers into low-rank pairs (truncated SVD), optionally fine-tune,
and write the model with its report: ``factorize_`` then ``finetune_``.

The ranks come from one rule: ``--energy``, ``--rank-ratio``, or a whole-model budget
(``--macs-reduction`` counted on the data's first batch, ``--params-reduction``).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import typer

from prunekit.cli.common import (
    check_data_fits,
    check_data_spec,
    check_out_dir,
    compare_and_write,
    console,
    is_text,
    loaders,
    require,
    resolve_data,
)
from prunekit.errors import PrunekitError
from prunekit.factorize import LowRankConfig, factorize_
from prunekit.measure.accuracy import top1_accuracy
from prunekit.train import FinetuneConfig, finetune_, teacher_copy


def factorize(
    model: str = typer.Option(
        ..., help="Model SPEC: builtin:NAME, hf:PATH, py:FILE.py:FUNCTION, or a saved directory."
    ),
    out: Path = typer.Option(
        ...,
        help="Output directory: model/, report.json, report.md; new, empty or an earlier "
        "prunekit output, which is replaced whole.",
    ),
    energy: float | None = typer.Option(
        None, help="Keep the smallest rank holding this fraction of each layer's spectrum."
    ),
    rank_ratio: float | None = typer.Option(None, help="Fraction of each layer's rank kept."),
    macs_reduction: float | None = typer.Option(
        None, help="Ranks chosen so the model needs this many times fewer MACs (> 1)."
    ),
    params_reduction: float | None = typer.Option(
        None, help="Ranks chosen so the model has this many times fewer parameters (> 1)."
    ),
    decomposition: str = typer.Option(
        "channel", help="Conv2d split: 'channel' (k×k then 1×1) or 'spatial' (k×1 then 1×k)."
    ),
    min_rank: int = typer.Option(1, help="Rank every factorized layer keeps at least."),
    round_to: int = typer.Option(1, help="Ranks are rounded up to a multiple of this."),
    target: list[str] | None = typer.Option(
        None, "--target", help="Layers to factorize (repeatable)."
    ),
    ignore: list[str] | None = typer.Option(
        None, "--ignore", help="Layers to leave alone (repeatable)."
    ),
    data: str | None = typer.Option(None, help="Data SPEC (default: the builtin model's dataset)."),
    finetune_epochs: int = typer.Option(0, help="Epochs of fine-tuning after factorizing."),
    lr: float | None = typer.Option(
        None,
        help=f"Fine-tuning peak learning rate (default: FinetuneConfig's, "
        f"{FinetuneConfig.model_fields['lr'].default:g}).",
    ),
    distill: bool = typer.Option(
        False, "--distill", help="The original model teaches while fine-tuning (soft targets)."
    ),
    batch_size: int = typer.Option(128, help="Batch size for fine-tuning (and MAC counting)."),
    weights: str | None = typer.Option(None, help="A .safetensors file for py: models."),
    seq_len: int = typer.Option(128, help="Tokens per window or line for text:FILE data."),
    seed: int = typer.Option(0, help="Seed for data order."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
) -> None:
    """Factorize a model's Linear and Conv2d layers by truncated SVD (and fine-tune it); print
    the before/after table."""
    from prunekit.specs import load_model

    given = {
        "energy": energy,
        "rank_ratio": rank_ratio,
        "macs_reduction": macs_reduction,
        "params_reduction": params_reduction,
        "targets": list(target) if target else None,
    }
    config = LowRankConfig(
        **{k: v for k, v in given.items() if v is not None},
        decomposition=decomposition,
        min_rank=min_rank,
        round_to=round_to,
        ignore=list(ignore or []),
    )
    require(finetune_epochs >= 0, "--finetune-epochs", finetune_epochs, "≥ 0 (0: no fine-tuning)")
    require(lr is None or lr > 0, "--lr", lr, "> 0")
    require(batch_size >= 1, "--batch-size", batch_size, "≥ 1")
    if distill and finetune_epochs == 0:
        raise PrunekitError("--distill teaches while fine-tuning; add --finetune-epochs N (≥ 1)")
    check_data_spec(data)
    check_out_dir(out)
    net, source = load_model(model, weights=weights)
    splits = resolve_data(data, source, needed=True, model=net, seq_len=seq_len)
    check_data_fits(net, splits)
    text = is_text(splits)
    train, test = loaders(splits, 8 if text else batch_size, seed)
    dense = copy.deepcopy(net)

    start = time.perf_counter()
    report: dict[str, Any] = {"model": model, "data": splits.name, "config": config.to_dict()}
    with console.status("factorizing…", spinner="dots"):
        factorized = factorize_(net, config, data=train)
    report["factorize"] = factorized.to_dict()
    if not text:
        report["accuracy_after_factorize"] = top1_accuracy(net, test)[0]
    if finetune_epochs > 0:
        training = {"epochs": finetune_epochs, "seed": seed, **({} if lr is None else {"lr": lr})}
        tuned = finetune_(
            net, train, **training, eval_data=None if text else test,
            teacher=teacher_copy(dense) if distill else None,
        )  # fmt: skip
        report["finetune"] = tuned.to_dict()
    report["seconds"] = time.perf_counter() - start
    compare_and_write(
        dense, net, splits, test, report, out,
        source={**source, "factorized_with": config.to_dict()},
        title=f"# prunekit factorize: {model}, {_amount(config)}\n\n",
        summary=str(factorized),
        json_out=json_out,
    )  # fmt: skip


def _amount(config: LowRankConfig) -> str:
    split = f"{config.decomposition} SVD"
    if config.budget is not None:
        kind, factor = config.budget
        return f"{split}, {factor:g}× fewer {kind}"
    if config.rank_ratio is not None:
        return f"{split}, rank ratio {config.rank_ratio:g}"
    return f"{split}, energy {config.energy:g}"


def register(app: typer.Typer) -> None:
    app.command("factorize")(factorize)
