"""What a recipe run returns and writes: one row per step, the steps' reports, before/after.

A row is the model measured after a step (row 0: the original): ``accuracy`` (top-1 on the
evaluation data, or None), ``metrics`` (task metrics), ``params``, ``nonzeros``,
``artifact_bytes`` (its ``pk.save`` directory), ``macs`` (dense, per sample),
``latency_ms`` (batch 1, a short timing: a trend, not a benchmark) and ``seconds`` (the step's).
Export and measure steps leave the model as it was; their rows repeat the previous figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from prunekit.measure import Comparison, Measurement
from prunekit.measure.render import render_table
from prunekit.report import Report, Table

COLUMNS = ["step", "verb", "method", "quality", "params", "non-zeros", "bytes on disk", "MACs",
           "latency b=1 (ms)", "seconds"]  # fmt: skip
ROW_FIELDS = ("params", "nonzeros", "artifact_bytes", "macs", "effective_macs", "latency_ms")


def row_from(measured: Measurement, artifact_bytes: int | None) -> dict[str, Any]:
    """The per-step figures of one measurement (batch-1 latency, bytes of the saved model)."""
    return {
        "accuracy": measured.accuracy,
        "metrics": dict(measured.metrics),
        "params": measured.params,
        "nonzeros": measured.nonzeros,
        "artifact_bytes": artifact_bytes if artifact_bytes is not None else measured.artifact_bytes,
        "macs": measured.macs,
        "effective_macs": measured.effective_macs,
        "latency_ms": (measured.latency_ms or {}).get(1),
    }


@dataclass(kw_only=True)
class RecipeReport(Report):
    """A finished run: the resolved recipe (``config``, also ``recipe``), ``rows`` (the
    original, then one per step), each step's ``steps`` report, the final ``comparison``
    (original vs final, from ``pk.compare``), the output directory and how many steps an
    earlier run had finished (``resumed_steps``). ``model`` is the final model (not
    serialized). ``method`` is ``"run"``."""

    method: str = "run"
    rows: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    comparison: Comparison
    out: Path
    resumed_steps: int = 0
    model: nn.Module | None = field(default=None, repr=False)

    computed = ("recipe",)  # the key report.json always had
    hidden = ("model",)

    @property
    def recipe(self) -> dict[str, Any]:
        """The resolved recipe (``{"steps": [...]}``), as ``config``."""
        return self.config or {}

    def title(self) -> str:
        return "Steps"

    def table(self) -> Table:
        return COLUMNS, _cells(self.rows)

    def notes(self) -> list[str]:
        resumed = f"Resumed after step {self.resumed_steps}: its rows come from the earlier run"
        return [_quality_note(self.rows), *([resumed] if self.resumed_steps else [])]

    def rows_table(self) -> str:
        """The per-step table alone (what ``prunekit run`` prints)."""
        return render_table(
            self.title(), COLUMNS, _cells(self.rows), caption="\n".join(self.notes())
        )

    def sections(self, markdown: bool) -> list[tuple[str, str]]:
        if not markdown:
            return [("Before / after", str(self.comparison))]
        out = [
            (f"Step {step['step']}: measure",
             Measurement(**_measurement_fields(step["report"])).to_markdown())
            for step in self.steps if step["verb"] == "measure"
        ]  # fmt: skip
        out.append(("Before / after", self.comparison.to_markdown()))
        return [*out, ("Recipe (resolved)", f"```yaml\n{_yaml(self.recipe)}```")]


def _cells(rows: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            str(r["step"]),
            r["verb"],
            r.get("method") or "—",
            _quality(r),
            _int(r["params"]),
            _int(r["nonzeros"]),
            _int(r["artifact_bytes"]),
            _int(r["macs"]),
            "—" if r["latency_ms"] is None else f"{r['latency_ms']:.3f}",
            "—" if r.get("seconds") is None else f"{r['seconds']:.1f}",
        ]
        for r in rows
    ]


def _quality(row: dict[str, Any]) -> str:
    if row.get("accuracy") is not None:
        return f"{100 * row['accuracy']:.2f} %"
    metrics = row.get("metrics") or {}
    return f"{next(iter(metrics.values())):.4g}" if metrics else "—"


def _quality_note(rows: list[dict[str, Any]]) -> str:
    first = rows[0] if rows else {}
    if first.get("accuracy") is not None:
        what = "quality: top-1 accuracy on the evaluation data"
    elif first.get("metrics"):
        what = f"quality: {next(iter(first['metrics']))}"
    else:
        what = "quality: not measured"
    return f"{what}; latency: batch 1, a short per-step timing (the final table times both models)"


def _int(v: int | None) -> str:
    return "—" if v is None else f"{v:,}"


def _measurement_fields(d: dict[str, Any]) -> dict[str, Any]:
    fields = dict(d)
    if fields.get("latency_ms") is not None:
        fields["latency_ms"] = {int(b): ms for b, ms in fields["latency_ms"].items()}
    return fields


def _yaml(recipe: dict[str, Any]) -> str:
    from prunekit.recipe.recipe import Recipe

    return Recipe.from_dict(recipe).to_yaml()
