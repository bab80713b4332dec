"""The result of a sensitivity sweep: one metric per (layer, sparsity), and what it suggests.

Pure data: CSV in and out, the per-layer sparsity table a prune config takes
(``layer_sparsity``), and a markdown table for reports.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from prunekit.errors import PrunekitError

COLUMNS = ("layer", "params", "sparsity", "metric", "baseline", "metric_name")


@dataclass(frozen=True)
class SensitivityRow:
    """``metric`` measured with only ``layer`` (``params`` weights) pruned to ``sparsity``."""

    layer: str
    sparsity: float
    metric: float
    params: int


@dataclass
class SensitivityProfile:
    """Per-layer sensitivity: ``baseline`` is the metric of the unpruned model (higher is
    better), ``rows`` one point per (layer, sparsity) in sweep order."""

    baseline: float
    rows: list[SensitivityRow]
    metric_name: str = "metric"

    @property
    def layers(self) -> list[str]:
        """The layers swept, in model order."""
        return list(dict.fromkeys(r.layer for r in self.rows))

    @property
    def ratios(self) -> list[float]:
        """The sparsities swept, ascending."""
        return sorted({r.sparsity for r in self.rows})

    def curve(self, layer: str) -> list[SensitivityRow]:
        """``layer``'s points, by ascending sparsity."""
        rows = [r for r in self.rows if r.layer == layer]
        if not rows:
            raise PrunekitError(
                f"layer {layer!r} was not swept; the layers are: {', '.join(self.layers)}"
            )
        return sorted(rows, key=lambda r: r.sparsity)

    def max_sparsity(self, layer: str, max_drop: float) -> float:
        """The largest swept sparsity up to which every point of ``layer``'s curve stays within
        ``max_drop`` of the baseline (in the metric's units); 0.0 if the first point does not.

        Stopping at the first point over budget, rather than taking the largest point within it,
        keeps a lucky (noisy) point past a real drop from being suggested.
        """
        if max_drop < 0:
            raise PrunekitError(f"max_drop must be at least 0; got {max_drop}")
        best = 0.0
        for row in self.curve(layer):
            if self.baseline - row.metric > max_drop:
                break
            best = row.sparsity
        return best

    def suggest(self, max_drop: float) -> dict[str, float]:
        """``{layer: sparsity}`` with each layer at :meth:`max_sparsity`: usable as a prune
        config's ``layer_sparsity``. Pruning all layers together costs more than any one alone,
        so check the result (and fine-tune)."""
        return {layer: self.max_sparsity(layer, max_drop) for layer in self.layers}

    def to_csv(self, path: str | Path) -> Path:
        """One row per point; floats written with ``repr`` so :meth:`from_csv` reads them back
        exactly."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            for r in self.rows:
                values = (r.params, repr(r.sparsity), repr(r.metric), repr(self.baseline))
                writer.writerow((r.layer, *values, self.metric_name))
        return path

    @classmethod
    def from_csv(cls, path: str | Path) -> SensitivityProfile:
        """Read a file written by :meth:`to_csv`."""
        with Path(path).open(newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise PrunekitError(
                    f"{path}: not a sensitivity CSV; expected the columns {', '.join(COLUMNS)}, "
                    f"got {reader.fieldnames}"
                )
            records = list(reader)
        if not records:
            raise PrunekitError(f"{path}: the sensitivity CSV has no rows")
        rows = [
            SensitivityRow(r["layer"], float(r["sparsity"]), float(r["metric"]), int(r["params"]))
            for r in records
        ]
        return cls(float(records[0]["baseline"]), rows, records[0]["metric_name"])

    def to_markdown(self, max_drop: float | None = None) -> str:
        """A table: one row per layer, the metric at each swept sparsity, and with ``max_drop``
        the suggested sparsity."""
        ratios = self.ratios
        head = ["layer", "params", *(f"{s:.0%}" for s in ratios)]
        if max_drop is not None:
            head.append(f"suggested (drop ≤ {max_drop:g})")
        lines = [
            f"{self.metric_name} with one layer pruned; dense: {self.baseline:.4g}",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        for layer in self.layers:
            at = {r.sparsity: r.metric for r in self.curve(layer)}
            cells = [layer, f"{self.curve(layer)[0].params:,}"]
            cells += [f"{at[s]:.4g}" if s in at else "" for s in ratios]
            if max_drop is not None:
                cells.append(f"{self.max_sparsity(layer, max_drop):.0%}")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()
