"""Plots for reports: sensitivity curves and size-vs-accuracy (Pareto) charts, as PNG files.

Figures are built with matplotlib's object API on the Agg canvas: no window, no pyplot state
shared between calls, safe in tests and on servers. matplotlib is an optional dependency
(``pip install 'prunekit[analyze]'``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from prunekit.analyze.profile import SensitivityProfile
from prunekit.errors import PrunekitError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 120


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PrunekitError("plots need matplotlib: pip install 'prunekit[analyze]'") from None
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def sensitivity_figure(profile: SensitivityProfile, title: str | None = None) -> Figure:
    """One curve per layer: x the sparsity of that layer alone, y the metric; the dense
    baseline dashed."""
    fig = _figure(7.5, 4.5)
    ax = fig.add_subplot()
    for layer in profile.layers:
        curve = profile.curve(layer)
        ax.plot([r.sparsity for r in curve], [r.metric for r in curve], marker="o",
                markersize=3, label=layer)  # fmt: skip
    ax.axhline(profile.baseline, color="black", linestyle="--", linewidth=1, label="dense")
    ax.set_xlabel("sparsity of the layer pruned alone")
    ax.set_ylabel(profile.metric_name)
    ax.set_xlim(0.0, 1.0)
    ax.set_title(title or "Sensitivity: one layer pruned at a time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=2 if len(profile.layers) > 8 else 1,
              loc="center left", bbox_to_anchor=(1.01, 0.5))  # fmt: skip
    return fig


def plot_sensitivity(
    profile: SensitivityProfile, path: str | Path, title: str | None = None
) -> Path:
    """Write :func:`sensitivity_figure` as a PNG at ``path``; returns the path."""
    return _save(sensitivity_figure(profile, title), path)


@dataclass(frozen=True)
class ParetoPoint:
    """One model variant: ``size`` (bytes on disk, or parameters) and ``accuracy``."""

    label: str
    size: float
    accuracy: float


def pareto_frontier(points: Sequence[ParetoPoint]) -> list[ParetoPoint]:
    """The points no other point beats on both axes (no smaller-or-equal size with higher
    accuracy, or smaller size with equal accuracy), by ascending size."""
    front: list[ParetoPoint] = []
    best = float("-inf")
    for p in sorted(points, key=lambda p: (p.size, -p.accuracy)):
        if p.accuracy > best:
            front.append(p)
            best = p.accuracy
    return front


def pareto_figure(
    points: Sequence[ParetoPoint],
    x: Literal["bytes", "params"] = "bytes",
    title: str | None = None,
) -> Figure:
    """Every point, labelled; the frontier as a step line. ``x="bytes"`` uses a log axis."""
    if not points:
        raise PrunekitError("points: nothing to plot; pass at least one ParetoPoint")
    fig = _figure(7.0, 4.5)
    ax = fig.add_subplot()
    front = pareto_frontier(points)
    on_front = set(front)
    for p in points:
        style = {"color": "tab:blue"} if p in on_front else {"color": "tab:gray", "alpha": 0.7}
        ax.scatter([p.size], [p.accuracy], zorder=3, **style)
        ax.annotate(p.label, (p.size, p.accuracy), textcoords="offset points", xytext=(4, 4),
                    fontsize="small")  # fmt: skip
    ax.step([p.size for p in front], [p.accuracy for p in front], where="post",
            color="tab:blue", label="Pareto frontier")  # fmt: skip
    if x == "bytes":
        ax.set_xscale("log")
        ax.set_xlabel("size on disk (bytes, log scale)")
    else:
        ax.set_xlabel("parameters")
    ax.set_ylabel("accuracy")
    ax.set_title(title or "Size vs accuracy")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return fig


def plot_pareto(
    points: Sequence[ParetoPoint],
    path: str | Path,
    x: Literal["bytes", "params"] = "bytes",
    title: str | None = None,
) -> Path:
    """Write :func:`pareto_figure` as a PNG at ``path``; returns the path."""
    return _save(pareto_figure(points, x, title), path)


def points_from_reports(
    dirs: Sequence[str | Path], x: Literal["bytes", "params"] = "bytes"
) -> list[ParetoPoint]:
    """One point per run directory written by ``prunekit prune`` or ``prunekit run`` (their
    ``report.json`` holds a before/after ``comparison``), labelled with the directory's name,
    plus the original model (the first run's "before") labelled ``dense``."""
    field = "artifact_bytes" if x == "bytes" else "params"
    points: list[ParetoPoint] = []
    for d in dirs:
        path = Path(d) / "report.json"
        if not path.is_file():
            raise PrunekitError(f"{d}: no report.json; pass directories written by prune or run")
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise PrunekitError(f"{path}: not readable JSON ({type(err).__name__})") from None
        comparison = report.get("comparison") if isinstance(report, dict) else None
        if not isinstance(comparison, dict):
            raise PrunekitError(f"{path}: has no 'comparison' (before/after measurements)")
        sides = [("after", Path(d).name)] + ([("before", "dense")] if not points else [])
        for side, label in sides:
            m = comparison.get(side)
            if not isinstance(m, dict) or m.get("accuracy") is None or m.get(field) is None:
                raise PrunekitError(
                    f"{path}: the {side} model has no measured accuracy or {field}; the Pareto "
                    f"plot needs both (text models report task metrics instead)"
                )
            points.append(ParetoPoint(label, float(m[field]), float(m["accuracy"])))
    return points
