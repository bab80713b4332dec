"""``prunekit run RECIPE.yaml``: run a recipe's steps on a model, resumable after an interruption.

The recipe is read and validated before the model loads, so a typo costs nothing. Text models
(``builtin:minilm``, ``hf:`` encoders and causal LMs with ``--data text:FILE``) are judged by
task metrics instead of accuracy, as ``prunekit prune`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from prunekit.cli.common import (
    check_data_fits,
    check_data_spec,
    check_writable,
    console,
    is_text,
    loaders,
    print_json,
    require,
    resolve_data,
    show,
)
from prunekit.cli.prune import parse_options
from prunekit.errors import PrunekitError
from prunekit.measure.tasks import text_metrics
from prunekit.recipe import Evaluation, Recipe, run_recipe
from prunekit.recipe.state import check_out

# The WordNet retrieval task is builtin:minilm's benchmark; it runs once, in the final table.
RETRIEVAL_QUERIES = {"minilm": 1000}


def run(
    recipe: Path = typer.Argument(..., metavar="RECIPE.yaml", help="The recipe to run."),
    model: str = typer.Option(
        ..., help="Model SPEC: builtin:NAME, hf:PATH, py:FILE.py:FUNCTION, or a saved directory."
    ),
    out: Path = typer.Option(
        ...,
        help="Output directory: model/, recipe.yaml (resolved), report.json, report.md, "
        "state.json and steps/ (the state after each step). Must be new or empty unless "
        "--resume or --overwrite.",
    ),
    data: str | None = typer.Option(None, help="Data SPEC (default: the builtin model's dataset)."),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue an interrupted run in --out from its last finished step; refused if the "
        "recipe, model, data or settings differ.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Delete an earlier run in --out and start over."
    ),
    option: list[str] | None = typer.Option(
        None,
        "--set",
        help="Change a step's field, STEP.FIELD=VALUE (repeatable; steps count from 1), "
        "e.g. --set 1.epochs=2 for a quick run; validated like the recipe and recorded in "
        "recipe.yaml.",
    ),
    batch_size: int | None = typer.Option(
        None, help="Batch size for training and calibration (default: 128; text: 8)."
    ),
    seed: int = typer.Option(0, help="Seed of the training data order."),
    weights: str | None = typer.Option(None, help="A .safetensors file for py: models."),
    seq_len: int = typer.Option(128, help="Tokens per window or line for text:FILE data."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
) -> None:
    """Run a recipe's steps on a model, saving it after each step (--resume continues).

    Steps: prune, finetune, distill, share, factorize, quantize, export, measure. Prints one line
    per step, then the per-step table and the before/after table."""
    from prunekit.specs import load_model

    plan = Recipe.from_yaml(recipe)
    if option:
        plan = plan.with_overrides(parse_options(option))
    require(batch_size is None or batch_size >= 1, "--batch-size", batch_size, "≥ 1")
    require(seq_len >= 2, "--seq-len", seq_len, "≥ 2")
    check_data_spec(data)
    if resume and overwrite:
        raise PrunekitError("--resume and --overwrite exclude each other; pass one of them")
    check_out(out, resume=resume, overwrite=overwrite)
    check_writable(out, "--out", inside=True)
    net, source = load_model(model, weights=weights)
    splits = resolve_data(data, source, needed=True, model=net, seq_len=seq_len)
    check_data_fits(net, splits)
    text = is_text(splits)
    train, test = loaders(splits, batch_size or (8 if text else 128), seed)
    identity: dict[str, Any] = {
        "model": model,
        "weights": weights,
        "data": splits.name,
        "batch_size": train.batch_size,
        "seed": seed,
        "seq_len": seq_len if text else None,
    }
    evaluation = Evaluation()
    if text:
        queries = RETRIEVAL_QUERIES.get(str(source.get("name")), 0)
        evaluation = Evaluation(
            accuracy=False,
            metrics=text_metrics(splits, net),
            final_metrics=text_metrics(splits, net, retrieval_queries=queries) if queries else None,
            # A text batch of 64 × seq_len tokens takes seconds per forward on a CPU.
            batch_sizes=(1, 8),
        )
    # With --json, stdout carries the JSON alone; progress goes to stderr.
    screen = Console(stderr=True) if json_out else console
    with screen.status("starting…", spinner="dots") as status:

        def progress(line: str, finished: bool) -> None:
            status.update(line)
            if finished:
                screen.print(f"✓ {line}", highlight=False, markup=False, soft_wrap=True)
            elif not screen.is_terminal:
                # No spinner is drawn into a file: say when each step starts instead.
                screen.print(line, highlight=False, markup=False, soft_wrap=True)

        report = run_recipe(
            plan,
            net,
            train,
            test,
            out=out,
            resume=resume,
            overwrite=overwrite,
            evaluation=evaluation,
            identity=identity,
            source={**source, "recipe": plan.to_dict()},
            tokenizer=splits.tokenizer if text else None,
            splits=splits,
            on_step=progress,
        )
    if json_out:
        print_json(report.to_dict())
        return
    show(report.rows_table())
    show(str(report.comparison))
    written = ", ".join(str(out / name) for name in ("model", "recipe.yaml", "report.json",
                                                     "report.md"))  # fmt: skip
    console.print(f"wrote {written}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
