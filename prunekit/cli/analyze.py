"""``prunekit analyze``: per-layer sensitivity (CSV, PNG, a suggested recipe); ``prunekit pareto``:
size vs accuracy across runs.

analyze prunes each layer alone at a sweep of sparsities and measures top-1 accuracy (in percent)
on the test split. It writes ``DIR/sensitivity.csv``, ``DIR/sensitivity.png``,
``DIR/suggested.yaml`` (a recipe whose prune step gives each layer the largest swept sparsity
that cost at most ``--max-drop`` points alone), ``DIR/report.json`` and ``DIR/report.md``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
import yaml

from prunekit.analyze.parallel import BACKENDS
from prunekit.analyze.plots import plot_pareto, plot_sensitivity, points_from_reports
from prunekit.analyze.profile import SensitivityProfile
from prunekit.analyze.sensitivity import DEFAULT_RATIOS, analyze_sensitivity
from prunekit.cli.common import (
    check_data_fits,
    check_data_spec,
    check_out_dir,
    check_out_file,
    console,
    is_text,
    loaders,
    output_dir,
    print_json,
    require,
    resolve_data,
    show,
    write_reports,
)
from prunekit.errors import PrunekitError, quote
from prunekit.measure.accuracy import top1_accuracy
from prunekit.registry import get_method

METRIC = "top-1 accuracy (%)"


def analyze(
    model: str = typer.Option(
        ..., help="Model SPEC: builtin:NAME, py:FILE.py:FUNCTION, or a saved directory."
    ),
    out: Path = typer.Option(
        ...,
        help="Output directory for the CSV, PNG, recipe and reports; new, empty or an earlier "
        "prunekit output, which is replaced whole.",
    ),
    data: str | None = typer.Option(None, help="Data SPEC (default: the builtin model's dataset)."),
    method: str = typer.Option("magnitude", help="A registered pruning method."),
    pattern: str = typer.Option("unstructured", help="'unstructured', N:M such as 2:4, 'channel'."),
    ratios: str = typer.Option(
        ",".join(f"{r:g}" for r in DEFAULT_RATIOS), help="Sparsities to try, comma-separated."
    ),
    max_drop: float = typer.Option(
        1.0, help="Accuracy points a layer may cost alone, for the suggested sparsities."
    ),
    backend: str = typer.Option(
        "auto", help="'auto' (Ray if RAY_ADDRESS is set), 'ray' (start one locally), 'local'."
    ),
    workers: int | None = typer.Option(None, help="At most this many Ray trials at once."),
    target: list[str] | None = typer.Option(None, "--target", help="Layers to try (repeatable)."),
    ignore: list[str] | None = typer.Option(None, "--ignore", help="Layers to skip (repeatable)."),
    eval_samples: int | None = typer.Option(
        None, help="Test samples per evaluation (default: the whole test split)."
    ),
    batch_size: int = typer.Option(128, help="Batch size of the calibration data."),
    weights: str | None = typer.Option(None, help="A .safetensors file for py: models."),
    seed: int = typer.Option(0, help="Seed for data order and random choices."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
) -> None:
    """Prune each layer alone at a sweep of sparsities; write the accuracy curves (CSV, PNG) and
    a suggested per-layer sparsity recipe."""
    from prunekit.specs import load_model

    require(backend in BACKENDS, "--backend", backend, f"one of {', '.join(BACKENDS)}")
    require(max_drop >= 0, "--max-drop", max_drop, "≥ 0 (accuracy points)")
    require(workers is None or workers >= 1, "--workers", workers, "≥ 1")
    require(eval_samples is None or eval_samples >= 1, "--eval-samples", eval_samples, "≥ 1")
    require(batch_size >= 1, "--batch-size", batch_size, "≥ 1")
    info = get_method(method, kind="prune")
    fields: dict[str, Any] = {"pattern": pattern, "seed": seed}
    if target:
        fields["targets"] = list(target)
    if ignore:
        fields["ignore"] = list(ignore)
    config = info.config(**fields)
    sweep = _parse_ratios(ratios)
    check_data_spec(data)
    check_out_dir(out)
    net, source = load_model(model, weights=weights)
    splits = resolve_data(data, source, needed=True, model=net)
    if is_text(splits):
        raise PrunekitError(
            f"--model {model}: analyze measures top-1 accuracy of classifiers; for text models "
            f"call prunekit.analyze.analyze_sensitivity(model, evaluate) with your own metric"
        )
    check_data_fits(net, splits)
    train, test = loaders(splits, batch_size, seed)

    def evaluate(m: Any) -> float:
        measured = top1_accuracy(m, test, num_samples=eval_samples)
        if measured is None:
            raise PrunekitError(f"--data {splits.name}: the test split has no labels")
        return 100.0 * measured[0]

    start = time.perf_counter()
    # tqdm shows the sweep's progress (on a terminal); a spinner on top would garble it.
    profile = analyze_sensitivity(
        net, evaluate, config=config, ratios=sweep, data=train, backend=backend,
        num_workers=workers, progress=not json_out, metric_name=METRIC,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    title = f"{model} on {splits.name}: {info.name}, {pattern}"
    recipe = suggested_recipe(profile, config.to_dict(), info.name, max_drop)
    header = (
        f"# suggested by prunekit analyze\n# {title}\n"
        f"# Each layer at the largest swept sparsity whose accuracy stayed within {max_drop:g}\n"
        f"# points when pruned alone. Pruned together they cost more: fine-tune, and check.\n"
    )
    report = {
        "model": model,
        "data": splits.name,
        "method": info.name,
        "config": config.to_dict(),
        "metric": METRIC,
        "baseline": profile.baseline,
        "max_drop": max_drop,
        "suggested": profile.suggest(max_drop),
        "rows": [vars(r) for r in profile.rows],
        "seconds": seconds,
    }
    table = profile.to_markdown(max_drop)
    md = f"# prunekit analyze: {title}\n\n{table}\n\n![sensitivity](sensitivity.png)\n"
    with output_dir(out) as staged:
        profile.to_csv(staged / "sensitivity.csv")
        plot_sensitivity(profile, staged / "sensitivity.png", title=f"Sensitivity: {title}")
        (staged / "suggested.yaml").write_text(header + yaml.safe_dump(recipe, sort_keys=False))
        write_reports(staged, report, md)
    if json_out:
        print_json(report)
    else:
        show(table)
        console.print(
            f"wrote {out / 'sensitivity.csv'}, sensitivity.png, suggested.yaml, report.md"
        )


def suggested_recipe(
    profile: SensitivityProfile, config: dict[str, Any], method: str, max_drop: float
) -> dict[str, Any]:
    """A recipe (``{"steps": [...]}``) whose prune step applies ``profile.suggest(max_drop)``.

    Unstructured and channel: ``layer_sparsity`` per layer; ``sparsity`` is the overall
    fraction this removes from the swept layers (a gradual schedule scales every layer by its
    progress toward it). N:M: the layers that cost more than ``max_drop`` at N:M are ignored.
    """
    table = profile.suggest(max_drop)
    step: dict[str, Any] = {"method": method, "pattern": config["pattern"]}
    for key in ("targets", "ignore"):
        if config.get(key):
            step[key] = list(config[key])
    if ":" in config["pattern"]:
        fragile = [layer for layer, s in table.items() if s == 0.0]
        if fragile:
            step["ignore"] = [*step.get("ignore", []), *fragile]
    else:
        params = {layer: profile.curve(layer)[0].params for layer in table}
        overall = sum(table[n] * params[n] for n in table) / sum(params.values())
        step["sparsity"] = round(overall, 4)
        step["layer_sparsity"] = table
    return {"steps": [{"prune": step}, {"measure": {}}]}


def _parse_ratios(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise PrunekitError(
            f"--ratios takes comma-separated sparsities such as 0.1,0.5,0.9; got {quote(text)}"
        ) from None
    if not values or not all(0.0 <= v < 1.0 for v in values):
        raise PrunekitError(f"--ratios: every sparsity must be in [0, 1); got {quote(text)}")
    return values


def pareto(
    runs: list[Path] = typer.Argument(
        ..., metavar="DIR...", help="Directories written by prunekit prune or prunekit run."
    ),
    out: Path = typer.Option(Path("pareto.png"), help="The PNG to write."),
    x: str = typer.Option("bytes", help="'bytes' (on disk, log axis) or 'params'."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
) -> None:
    """Plot size vs accuracy of several runs (and the original model) with the Pareto frontier."""
    require(x in ("bytes", "params"), "--x", x, "'bytes' or 'params'")
    check_out_file(out, "--out")
    points = points_from_reports(runs, x)  # type: ignore[arg-type]
    plot_pareto(points, out, x)  # type: ignore[arg-type]
    rows = [{"label": p.label, x: p.size, "accuracy": p.accuracy} for p in points]
    if json_out:
        print_json({"plot": str(out), "points": rows})
    else:
        for p in points:
            console.print(f"{p.label}: {p.size:,.0f} {x}, accuracy {p.accuracy:.4f}")
        console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze)
    app.command("pareto")(pareto)
