"""The Pareto plot of a search: ``prunekit.analyze.plots``' size-vs-accuracy chart of every
trial, with the dense model, the budget and the chosen model drawn over it."""

from __future__ import annotations

from pathlib import Path

from prunekit.analyze.plots import ParetoPoint, pareto_figure
from prunekit.auto.report import AutoReport


def plot_frontier(report: AutoReport, path: str | Path) -> Path:
    """Write a PNG: each trial labelled with its number (✗: over budget), the frontier as a
    step line, the dense model and the budget as horizontal lines, the chosen model (retrained)
    as a star. x is bytes on disk, or ms per forward pass for ``objective="latency"``."""
    size = report.cost_key == "bytes"
    points = [
        ParetoPoint(
            f"{t.number}{'' if t.feasible else '✗'}",
            t.bytes if size else t.latency_ms,
            100 * t.accuracy,
        )
        for t in report.trials
    ]
    c = report.config
    fig = pareto_figure(
        points,
        "bytes" if size else "params",
        title=f"auto-compression: smallest {c.objective} within {c.max_drop:g} points",
    )
    ax = fig.axes[0]
    base = 100 * report.baseline["val_accuracy"]
    ax.axhline(base, linestyle="--", color="black", linewidth=1, label="dense")
    ax.axhline(base - c.max_drop, linestyle=":", color="red", linewidth=1, label="budget")
    if report.final is not None:
        f = report.final
        ax.scatter([f.bytes if size else f.latency_ms], [100 * f.val_accuracy], marker="*",
                   s=180, color="tab:green", zorder=4, label="chosen, retrained")  # fmt: skip
    if not size:
        ax.set_xlabel("ms per forward pass")
    ax.set_ylabel("validation accuracy (%)")
    ax.legend(fontsize="small")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
