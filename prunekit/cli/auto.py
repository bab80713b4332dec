"""``prunekit auto``: the smallest (or fastest) compression within an accuracy budget.

Prints the trials and the before/after table (on the test split). Writes ``DIR/model/``
(the chosen model), ``DIR/recipe.yaml`` (its configuration, for
``prunekit run``), ``DIR/frontier.csv`` (every trial, frontier marked), ``DIR/pareto.png``,
``DIR/report.json`` and ``DIR/report.md``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import typer
import yaml
from torch.utils.data import DataLoader

from prunekit.analyze.parallel import BACKENDS
from prunekit.artifact.io import save
from prunekit.auto import AutoConfig, auto_compress, validation_split
from prunekit.auto.plot import plot_frontier
from prunekit.cli.auto_bits import METHODS, parse_budget, run_bits
from prunekit.cli.common import (
    check_data_fits,
    check_data_spec,
    check_out_dir,
    console,
    is_text,
    output_dir,
    print_json,
    require,
    resolve_data,
    show,
    write_reports,
)
from prunekit.errors import PrunekitError
from prunekit.measure import compare

EVAL_BATCH = 512


# Options that only one of the two modes reads: given to the other, they would be ignored.
_SEARCH_ONLY = ("max_drop", "objective", "trials", "trial_epochs", "parallel", "backend")
_BITS_ONLY = ("bits_method", "bits_range")


def _refuse_unused(ctx: typer.Context, bits_mode: bool) -> None:
    unused = _SEARCH_ONLY if bits_mode else _BITS_ONLY
    # By name: typer ships its own copy of click, whose ParameterSource is not click's.
    given = [n for n in unused if getattr(ctx.get_parameter_source(n), "name", "") == "COMMANDLINE"]
    if given:
        flags = ", ".join("--" + n.replace("_", "-") for n in given)
        fix = "leave them out" if bits_mode else "add --size-budget, or leave them out"
        mode = "with" if bits_mode else "without"
        raise PrunekitError(f"{flags} have no effect {mode} --size-budget; {fix}")


def auto(
    ctx: typer.Context,
    model: str = typer.Option(
        ..., help="Model SPEC: builtin:NAME, hf:PATH, py:FILE.py:FUNCTION, or a saved directory."
    ),
    out: Path = typer.Option(
        ...,
        help="Output directory; new, empty or an earlier prunekit output, which is replaced whole.",
    ),
    data: str | None = typer.Option(None, help="Data SPEC (default: the builtin model's dataset)."),
    max_drop: float = typer.Option(1.0, help="Accuracy budget: points below the dense model."),
    objective: str = typer.Option("size", help="'size' (bytes on disk) or 'latency'."),
    trials: int = typer.Option(20, help="Configurations tried."),
    trial_epochs: int = typer.Option(1, help="Fine-tuning epochs of each trial."),
    final_epochs: int = typer.Option(4, help="Fine-tuning epochs of the chosen configuration."),
    parallel: int = typer.Option(1, help="Trials run side by side (on Ray when a cluster is up)."),
    backend: str = typer.Option(
        "auto", help="'auto' (Ray if a cluster is reachable), 'ray', 'local'."
    ),
    val_size: float = typer.Option(
        0.1,
        help="Fraction of the training split held out to score trials (if the model was "
        "trained on all of it, drops on these memorized samples overstate the test drop).",
    ),
    batch_size: int = typer.Option(128, help="Fine-tuning batch size."),
    weights: str | None = typer.Option(None, help="A .safetensors file for py: models."),
    seed: int = typer.Option(0, help="Seed for the search, the split and training."),
    size_budget: str | None = typer.Option(
        None,
        help="Instead of the search above: bits per layer for a saved model of at most this "
        "size, BYTES or RATIOx (× smaller than fp32), from each layer's measured sensitivity.",
    ),
    bits_method: str = typer.Option(
        "kmeans", help="With --size-budget: 'kmeans' (shared values), 'rtn' or 'gptq'."
    ),
    bits_range: str = typer.Option("2:8", help="With --size-budget: widths tried, LOW:HIGH."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
) -> None:
    """Search per-layer sparsity and quantization for the smallest (or fastest) model that loses
    at most --max-drop accuracy points; write it, its recipe and the frontier explored. With
    --size-budget: the bits per layer that fit the size at the least measured accuracy cost."""
    from prunekit.specs import load_model

    _refuse_unused(ctx, bits_mode=size_budget is not None)
    config = AutoConfig(
        max_drop=max_drop, objective=objective, trials=trials, trial_epochs=trial_epochs,
        final_epochs=final_epochs, parallel=parallel, seed=seed,
    )  # fmt: skip
    require(backend in BACKENDS, "--backend", backend, f"one of {', '.join(BACKENDS)}")
    require(0 < val_size < 1, "--val-size", val_size, "a fraction in (0, 1)")
    require(batch_size >= 1, "--batch-size", batch_size, "≥ 1")
    require(bits_method in METHODS, "--bits-method", bits_method, f"one of {', '.join(METHODS)}")
    search = None if size_budget is None else parse_budget(size_budget, bits_range)
    check_data_spec(data)
    check_out_dir(out)
    net, source = load_model(model, weights=weights)
    splits = resolve_data(data, source, needed=True, model=net)
    if is_text(splits):
        raise PrunekitError(
            f"--data {splits.name}: auto searches on classification accuracy; text data is not "
            "supported yet"
        )
    check_data_fits(net, splits)
    train_set, val_set = validation_split(splits.train, val_size, seed)
    train = DataLoader(train_set, batch_size=batch_size, shuffle=True,
                       generator=torch.Generator().manual_seed(seed))  # fmt: skip
    val = DataLoader(val_set, batch_size=EVAL_BATCH)
    test = splits.loader("test", batch_size=EVAL_BATCH)
    if search is not None:
        run_bits(
            net, train, val, test, method=bits_method, search=search, config=config, out=out,
            spec=model, data_name=splits.name, source=source, json_out=json_out,
        )  # fmt: skip
        return
    with console.status(f"searching ({trials} trials)…", spinner="dots"):
        report = auto_compress(
            net, train, val, config, test_data=test, backend=backend, progress=False
        )
    with console.status("measuring before/after (accuracy, bytes, MACs, latency)…"):
        comparison = compare(net, report.model, test)
    chosen = report.final.choice.to_dict() if report.final else None
    recipe = report.recipe()
    payload = {
        "model": model,
        "data": splits.name,
        **report.to_dict(),
        "comparison": comparison.to_dict(),
    }
    with output_dir(out) as staged:
        save(report.model, staged / "model", source={**source, "auto": chosen})
        if recipe is not None:
            (staged / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        report.write_csv(staged / "frontier.csv")
        plot_frontier(report, staged / "pareto.png")
        write_reports(staged, payload, report.to_markdown() + "\n\n" + comparison.to_markdown())
    if json_out:
        print_json(payload)
    else:
        show(str(report))
        show(str(comparison))
        console.print(f"wrote {out / 'model'}, recipe.yaml, frontier.csv, pareto.png, report.*")


def register(app: typer.Typer) -> None:
    app.command("auto")(auto)
