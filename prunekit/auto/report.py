"""What a search did: every trial, the frontier it explored, the chosen configuration."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from prunekit.auto.config import AutoConfig
from prunekit.auto.space import Choice
from prunekit.report import Report, Table


@dataclass
class TrialRecord:
    """One trial: its choice, what it measured on the validation data, and whether it fits."""

    number: int
    choice: Choice
    accuracy: float
    drop: float  # percentage points below the dense model, on the validation data
    bytes: int
    latency_ms: float | None
    nonzeros: int
    params: int
    feasible: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "choice": self.choice.to_dict()}


def cost(record: TrialRecord, objective: str) -> float:
    """What the search minimises: bytes on disk, or ms per forward pass."""
    return float(record.bytes if objective == "size" else record.latency_ms)


@dataclass
class Final:
    """A configuration retrained for ``final_epochs``: its validation accuracy and drop, then,
    for the chosen one, the test check (``checked_on`` says which data judged the budget)."""

    trial: int
    choice: Choice
    val_accuracy: float
    val_drop: float
    bytes: int
    latency_ms: float | None
    within_budget: bool
    checked_on: str = "val"
    test_accuracy: float | None = None
    drop: float | None = None  # points below the dense model on the data checked
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.drop is None:
            self.drop = self.val_drop

    def check_on_test(
        self, model: nn.Module, test_data: Any, dense_accuracy: float, max_drop: float
    ) -> None:
        """Judge the budget on ``test_data``, once, for the chosen model."""
        from prunekit.measure.accuracy import top1_accuracy

        self.test_accuracy = top1_accuracy(model, test_data)[0]
        self.drop = 100 * (dense_accuracy - self.test_accuracy)
        self.checked_on = "test"
        self.within_budget = self.drop <= max_drop

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "choice": self.choice.to_dict()}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points ``(cost, accuracy)``: no other point costs no more
    and is no less accurate while being strictly better in one. Sorted by cost."""
    front = []
    for i, (c, a) in enumerate(points):
        dominated = any(
            (c2 <= c and a2 >= a) and (c2 < c or a2 > a)
            for j, (c2, a2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


@dataclass(kw_only=True)
class AutoReport(Report):
    """The search and its result. ``model`` is the chosen compressed model (the dense copy when
    no configuration met the budget); ``frontier`` lists trial numbers, cheapest first.
    ``config`` is the :class:`AutoConfig` itself (``to_dict`` writes its JSON dict)."""

    method: str = "auto"
    config: AutoConfig  # type: ignore[assignment]
    baseline: dict[str, Any]
    space: dict[str, Any]
    trials: list[TrialRecord]
    frontier: list[int]
    final: Final | None
    backend: str
    model: nn.Module | None = field(default=None, repr=False)

    hidden = ("model",)

    @property
    def cost_key(self) -> str:
        return "bytes" if self.config.objective == "size" else "latency_ms"

    def recipe(self) -> dict[str, Any] | None:
        """The chosen configuration as a recipe (API.md "Recipes"), or None if none was chosen."""
        if self.final is None:
            return None
        c, cfg = self.final.choice, self.config
        prune = {"method": "magnitude", "sparsity": 0.0, "layer_sparsity": dict(c.layer_sparsity)}
        train = {**cfg.finetune_config(cfg.final_epochs).to_dict(), "distill": True}
        steps: list[dict[str, Any]] = [
            {"prune": {**prune, "seed": cfg.seed}},
            {"finetune": train},
        ]
        if c.quant == "kmeans":
            share = {"method": "kmeans", "bits": c.bits, "seed": cfg.seed}
            if c.conv_bits is not None:
                share["conv_bits"] = c.conv_bits
            steps.append({"share": share})
            steps.append({"finetune": {**cfg.share_config().to_dict(), "distill": True}})
        elif c.quant == "int8-dynamic":
            steps.append({"quantize": {"method": "int8-dynamic"}})
        return {"steps": [*steps, {"measure": {}}]}

    def frontier_rows(self) -> list[dict[str, Any]]:
        """One row per trial, flat, for ``frontier.csv``; ``on_frontier`` marks the front."""
        front = set(self.frontier)
        return [
            {
                "trial": t.number,
                "on_frontier": t.number in front,
                "feasible": t.feasible,
                "accuracy": round(t.accuracy, 6),
                "drop_points": round(t.drop, 4),
                "bytes": t.bytes,
                "latency_ms": t.latency_ms,
                "nonzeros": t.nonzeros,
                "params": t.params,
                "quant": t.choice.quant,
                "bits": t.choice.bits,
                "conv_bits": t.choice.conv_bits,
                **{f"sparsity:{k}": v for k, v in t.choice.layer_sparsity.items()},
            }
            for t in self.trials
        ]

    def write_csv(self, path: str | Path) -> Path:
        rows = self.frontier_rows()
        path = Path(path)
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["trial"])
            writer.writeheader()
            writer.writerows(rows)
        return path

    def title(self) -> str:
        c = self.config
        return f"auto-compression ({c.objective}, max drop {c.max_drop:g} pts)"

    def table(self) -> Table:
        front = set(self.frontier)
        rows = []
        for t in self.trials:
            cost = f"{t.bytes:,}" if self.cost_key == "bytes" else f"{t.latency_ms:.3f}"
            marks = ("*" if t.number in front else "") + ("" if t.feasible else " ✗")
            rows.append([f"{t.number}{marks}", t.choice.label(), f"{100 * t.accuracy:.2f}",
                         f"{-t.drop:+.2f}", cost])  # fmt: skip
        unit = "bytes" if self.cost_key == "bytes" else "ms/forward"
        return ["trial", "choice (sparsity per layer, quantization)", "val %", "Δ pts", unit], rows

    def notes(self) -> list[str]:
        c = self.config
        return [
            "trials marked * are on the frontier; ✗: over the budget",
            *self._summary().split("\n"),
            f"{c.trials} trials of {c.trial_epochs} epoch(s), backend {self.backend}, "
            f"{self.seconds:.0f} s; trials are scored on a validation split carved from the "
            f"training data; the chosen configuration is retrained for {c.final_epochs} epochs "
            f"and checked on the test split",
            *super().notes(),
        ]

    def _summary(self) -> str:
        b = self.baseline
        dense = f"dense: {b['bytes']:,} bytes, val {100 * b['val_accuracy']:.2f}%"
        if b.get("test_accuracy") is not None:
            dense += f", test {100 * b['test_accuracy']:.2f}%"
        if self.final is None:
            return f"{dense}. No configuration met the budget; the dense model is returned."
        f = self.final
        test = f", test {100 * f.test_accuracy:.2f}%" if f.test_accuracy is not None else ""
        test += f" ({-f.drop:+.2f} pts on {f.checked_on})"
        verdict = "within" if f.within_budget else "NOT within"
        return (
            f"{dense}.\nchosen: trial {f.trial}, {f.choice.label()}: {f.bytes:,} bytes "
            f"({b['bytes'] / f.bytes:.1f}× smaller), val {100 * f.val_accuracy:.2f}%{test}; "
            f"{verdict} the {self.config.max_drop:g}-point budget."
        )
