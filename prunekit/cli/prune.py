"""``prunekit prune``: prune a model, optionally fine-tune it, and write it with its report.

Structured patterns (``channel``, ``head``) trace the model on the first batch of ``--data`` and
rebuild its layers smaller. ``--dry-run`` (any pattern) prints what would be removed, per layer
or per group, and writes nothing: ``prune_(..., dry_run=True)``.
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
    print_json,
    require,
    resolve_data,
    show,
)
from prunekit.data import with_more_text
from prunekit.errors import PrunekitError, quote
from prunekit.measure.accuracy import top1_accuracy
from prunekit.prune import prune_
from prunekit.prune.schedule import SCHEDULES, OneShot, make_schedule
from prunekit.prune.structured import StructuredReport
from prunekit.recipe.bounded_yaml import load_yaml
from prunekit.registry import get_method
from prunekit.train import FinetuneConfig, finetune_, teacher_copy


def prune(
    model: str = typer.Option(
        ..., help="Model SPEC: builtin:NAME, hf:PATH, py:FILE.py:FUNCTION, or a saved directory."
    ),
    method: str = typer.Option(..., help="A registered pruning method (see `prunekit methods`)."),
    out: Path | None = typer.Option(
        None,
        help="Output directory: model/, report.json, report.md (not with --dry-run); new, empty "
        "or an earlier prunekit output, which is replaced whole.",
    ),
    sparsity: float | None = typer.Option(
        None, help="Fraction of weights (structured: of channels or heads) removed, in [0, 1)."
    ),
    pattern: str | None = typer.Option(
        None,
        help="'unstructured', N:M such as 2:4, 'channel' or 'head' (default: the method's, "
        "'unstructured' for most).",
    ),
    scope: str = typer.Option("layer", help="'layer' or 'global'."),
    macs_reduction: float | None = typer.Option(
        None, help="Structured: prune until the forward pass needs this many times fewer MACs."
    ),
    latency_reduction: float | None = typer.Option(
        None,
        help="Structured: prune until the model runs this many times faster in PyTorch, "
        "measured on the data's first batch.",
    ),
    round_to: int | None = typer.Option(
        None, help="Structured: kept channel counts are multiples of this."
    ),
    min_channels: int | None = typer.Option(
        None, help="Structured: channels every pruned layer keeps at least."
    ),
    reconstruct: bool = typer.Option(
        False,
        "--reconstruct",
        help="Structured: after removing channels, refit each layer that read them by least "
        "squares on calibration batches of the data, so its outputs match the unpruned model's.",
    ),
    prune_hidden: bool = typer.Option(
        False,
        "--prune-hidden",
        help="Structured (channel): also narrow the hidden width under LayerNorm/RMSNorm (a "
        "transformer's residual stream, ConvNeXt stage widths), ranked by activations; not "
        "output-equivalent: the report gives the output difference.",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Print what would be removed (per layer; structured: units kept, params, MACs); "
        "change and write nothing.",
    ),
    data: str | None = typer.Option(None, help="Data SPEC (default: the builtin model's dataset)."),
    finetune_epochs: int = typer.Option(0, help="Epochs of fine-tuning after (or while) pruning."),
    schedule: str = typer.Option("oneshot", help=f"With fine-tuning: {', '.join(SCHEDULES)}."),
    lr: float | None = typer.Option(
        None,
        help=f"Fine-tuning peak learning rate (default: FinetuneConfig's, "
        f"{FinetuneConfig.model_fields['lr'].default:g}).",
    ),
    distill: bool = typer.Option(
        False,
        "--distill",
        help="The original model teaches while fine-tuning: soft targets at temperature 4, "
        "half the loss (knowledge distillation).",
    ),
    recover: str | None = typer.Option(
        None,
        "--recover",
        help="After pruning, recover without labels: 'distill' (the original model teaches on "
        "the data's training text, hidden states included; zeros stay zero). Text models only.",
    ),
    recover_minutes: float = typer.Option(
        10.0, help="Wall-clock budget of --recover, in minutes (steps are planned to fit)."
    ),
    recover_steps: int | None = typer.Option(
        None,
        help="At most this many optimizer steps of --recover (the minutes still apply): a run "
        "that does not depend on the machine's speed.",
    ),
    recover_text: Path | None = typer.Option(
        None,
        help="More unlabelled text for --recover: a file, one sample per line, tokenized as the "
        "data is; recovery trains on the data's training text and all of this (more text "
        "recovers more in the same minutes).",
    ),
    batch_size: int = typer.Option(128, help="Batch size for calibration and fine-tuning."),
    target: list[str] | None = typer.Option(None, "--target", help="Layers to prune (repeatable)."),
    ignore: list[str] | None = typer.Option(
        None, "--ignore", help="Layers to leave alone (repeatable)."
    ),
    weights: str | None = typer.Option(None, help="A .safetensors file for py: models."),
    seq_len: int = typer.Option(128, help="Tokens per window or line for text:FILE data."),
    num_samples: int | None = typer.Option(None, help="Calibration samples (method default)."),
    option: list[str] | None = typer.Option(
        None,
        "--set",
        help="Any other field of the method's config, KEY=VALUE (repeatable), "
        "e.g. --set allocation=owl --set dampening=0.05; see `prunekit methods --json`.",
    ),
    seed: int = typer.Option(0, help="Seed for data order and random choices."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
    low_memory: bool = typer.Option(
        False,
        "--low-memory",
        help="wanda/sparsegpt on an hf:PATH folder larger than memory: read and prune one block "
        "at a time, write the pruned folder to OUT/model (calibrates on --data text:FILE; no "
        "before/after evaluation).",
    ),
) -> None:
    """Prune a model (and fine-tune it with the masks kept); print the before/after table.

    With --pattern channel or head, whole units go and the layers are rebuilt smaller."""
    from prunekit.specs import load_model

    info = get_method(method, kind="prune")
    fields: dict[str, Any] = {"sparsity": sparsity, "scope": scope, "seed": seed}
    given = {
        "pattern": pattern,
        "macs_reduction": macs_reduction,
        "latency_reduction": latency_reduction,
        "round_to": round_to,
        "min_channels": min_channels,
        "reconstruct": reconstruct or None,  # unset keeps the method's default
        "prune_hidden": prune_hidden or None,
        "num_samples": num_samples,
        "targets": list(target) if target else None,
        "ignore": list(ignore) if ignore else None,
    }
    fields.update({k: v for k, v in given.items() if v is not None})
    fields.update(parse_options(option or []))
    config = info.config(**fields)
    if low_memory:
        from prunekit.cli.low_memory import prune_low_memory

        require(out is not None, "--out", out, "a directory for the pruned folder")
        assert out is not None
        check_out_dir(out)
        prune_low_memory(model, config, data, seq_len, out, json_out)
        return
    require(schedule in SCHEDULES, "--schedule", schedule, f"one of {', '.join(SCHEDULES)}")
    plan = make_schedule(schedule)
    require(finetune_epochs >= 0, "--finetune-epochs", finetune_epochs, "≥ 0 (0: no fine-tuning)")
    require(lr is None or lr > 0, "--lr", lr, "> 0")
    require(batch_size >= 1, "--batch-size", batch_size, "≥ 1")
    require(seq_len >= 2, "--seq-len", seq_len, "≥ 2")
    _check_structured_options(config, dry_run, out, finetune_epochs, schedule)
    if distill and finetune_epochs == 0:
        raise PrunekitError("--distill teaches while fine-tuning; add --finetune-epochs N (≥ 1)")
    _check_recover(recover, recover_minutes, recover_steps, finetune_epochs, recover_text)
    check_data_spec(data)
    if out is not None and not dry_run:
        check_out_dir(out)
    net, source = load_model(model, weights=weights)
    splits = resolve_data(data, source, needed=True, model=net, seq_len=seq_len)
    check_data_fits(net, splits)
    text = is_text(splits)
    if recover and not text:
        raise PrunekitError(
            f"--recover {recover} distills on text, and the data {splits.name!r} is not text; "
            "use a language or sentence model with text data (--data text:FILE), or "
            "--finetune-epochs N --distill"
        )
    train, test = loaders(splits, 8 if text else batch_size, seed)
    if dry_run:
        _dry_run(net, config, train, model, splits.name, json_out)
        return
    assert out is not None  # _check_structured_options
    dense = copy.deepcopy(net)

    start = time.perf_counter()
    report: dict[str, Any] = {"model": model, "data": splits.name, "config": config.to_dict()}
    if text:
        report["evaluation"] = {
            "split": "test",
            "seq_len": seq_len,
            "mode": splits.mode,
            "calibration_samples": getattr(config, "num_samples", None),
            "test_samples": len(splits.test),
        }
    training = {"epochs": finetune_epochs, "seed": seed, **({} if lr is None else {"lr": lr})}
    plan_table = _compress(
        net, dense, config, info.name, train, None if text else test, plan, training, distill,
        report,
    )  # fmt: skip
    if recover:
        from prunekit.distill.recover import recover_

        # Recovery batches as bench.oneshot_recover measured it: 32 lines of text, or 8 windows
        # of seq_len tokens (the loader above batches 8 of either, for calibration).
        loader = splits.loader("train", batch_size=32 if splits.mode == "lines" else 8, seed=seed)
        batches, lines = list(loader), len(splits.train)
        if recover_text is not None:
            batches, added = with_more_text(loader, splits, recover_text, seed=seed)
            lines += added
        steps = "" if recover_steps is None else f", at most {recover_steps} steps"
        with console.status(f"recovering by distillation ({recover_minutes:g} min{steps})…"):
            report["recover"] = recover_(
                net, dense, batches, minutes=recover_minutes, max_steps=recover_steps,
                progress=False,
            ).to_dict()  # fmt: skip
        report["recover"].update(text_lines=lines, batch_size=loader.batch_size)
    report["seconds"] = time.perf_counter() - start
    compare_and_write(
        dense, net, splits, test, report, out,
        source={**source, "pruned_with": config.to_dict()},
        title=f"# prunekit prune: {model}, {info.name}, {_amount(config)}\n\n",
        summary=plan_table,
        json_out=json_out,
    )  # fmt: skip


def _compress(
    net: Any,
    dense: Any,
    config: Any,
    name: str,
    train: Any,
    test: Any,
    plan: Any,
    training: dict[str, Any],
    distill: bool,
    report: dict[str, Any],
) -> str | None:
    """Prune ``net`` (in one shot, or while fine-tuning on a schedule), then fine-tune it if
    ``training["epochs"]`` > 0; fills ``report`` and returns a structured plan's table.
    ``test``: labelled batches to score accuracy on, or None (text)."""
    plan_table: str | None = None
    gradual = training["epochs"] > 0 and (not isinstance(plan, OneShot) or config.needs_training)
    with console.status(f"pruning with {name}…", spinner="dots"):
        if not gradual:
            pruned = prune_(net, config, data=train)
            plan_table = str(pruned) if isinstance(pruned, StructuredReport) else None
            report["prune"] = pruned.to_dict()
            report["accuracy_after_prune"] = None if test is None else _acc(net, test)
    if training["epochs"] > 0:
        ft = finetune_(
            net,
            train,
            **training,
            eval_data=test,
            prune=config if gradual else None,
            schedule=plan if gradual else None,
            teacher=teacher_copy(dense) if distill else None,
        )
        report["finetune"] = ft.to_dict()
        if distill:
            report["finetune"]["teacher"] = "the original model (temperature 4, alpha 0.5)"
    return plan_table


def _check_recover(
    recover: str | None,
    minutes: float,
    steps: int | None,
    finetune_epochs: int,
    text: Path | None,
) -> None:
    if recover is None:
        if text is not None:
            raise PrunekitError("--recover-text is text for --recover; add --recover distill")
        return
    require(text is None or text.is_file(), "--recover-text", text, "a text file")
    require(recover == "distill", "--recover", recover, "'distill'")
    require(minutes > 0, "--recover-minutes", minutes, "> 0")
    require(steps is None or steps > 0, "--recover-steps", steps, "> 0")
    if finetune_epochs > 0:
        raise PrunekitError(
            "--recover distill and --finetune-epochs both train after pruning; use one"
        )


def _check_structured_options(
    config: Any, dry_run: bool, out: Path | None, finetune_epochs: int, schedule: str
) -> None:
    # Checked before the model loads, so bad combinations cost nothing and write nothing.
    if out is None and not dry_run:
        raise PrunekitError("--out: name the output directory (or pass --dry-run to only plan)")
    if config.structured and finetune_epochs > 0 and schedule != "oneshot":
        raise PrunekitError(
            f"--schedule {schedule}: structured pruning is applied in one shot, then fine-tuned; "
            f"use --schedule oneshot with pattern {config.pattern!r}"
        )


def _dry_run(net: Any, config: Any, train: Any, model: str, data: str, json_out: bool) -> None:
    with console.status("planning…", spinner="dots"):
        report = prune_(net, config, data=train, dry_run=True)
    if json_out:
        print_json({"model": model, "data": data, "dry_run": True, "prune": report.to_dict()})
    else:
        show(str(report))
        console.print("dry run: nothing was changed or written")


def _amount(config: Any) -> str:
    if config.macs_reduction is not None:
        return f"{config.pattern}, {config.macs_reduction:g}× fewer MACs"
    if config.latency_reduction is not None:
        return f"{config.pattern}, {config.latency_reduction:g}× faster (measured)"
    return f"{config.target_sparsity:.0%} {config.pattern}"


def parse_options(options: list[str]) -> dict[str, Any]:
    """``["KEY=VALUE", …]`` → fields; values read as YAML scalars (0.05, true, owl)."""
    fields = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PrunekitError(f"--set takes KEY=VALUE; got {quote(item)}")
        fields[key.strip()] = load_yaml(value, what=f"--set {quote(key.strip())}")
    return fields


def _acc(model: Any, data: Any) -> float | None:
    measured = top1_accuracy(model, data)
    return measured[0] if measured else None


def register(app: typer.Typer) -> None:
    app.command("prune")(prune)
