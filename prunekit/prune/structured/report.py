"""What a structured pruning call did (or, for a dry run, would do), per group."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class GroupRow:
    name: str
    kind: str
    members: str
    before: int
    after: int


@dataclass
class StructuredReport:
    """Units per group before/after; parameters and MACs per sample before/after.

    left_alone: groups that were candidates but are not pruned, with the reason.
    blocked: parameter dimensions that can never shrink, with the reason (top reasons only).
    max_diff: largest |rebuilt − masked| output difference found by verification.
    plan: parameter/buffer name → dimension → the indices removed (the serializable plan).
    """

    method: str
    config: dict[str, Any]
    groups: list[GroupRow]
    params: tuple[int, int]
    macs: tuple[int, int]
    applied: bool
    seconds: float = 0.0
    max_diff: float | None = None
    left_alone: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    plan: dict[str, dict[int, list[int]]] = field(default_factory=dict)

    @property
    def sparsity(self) -> float:
        """Fraction of the model's parameters removed."""
        before, after = self.params
        return 1 - after / before if before else 0.0

    @property
    def macs_reduction(self) -> float:
        before, after = self.macs
        return before / after if after else float("inf")

    def summary(self) -> dict[str, Any]:
        return {"params": self.params[1], "macs": self.macs[1], "macs_reduction":
                self.macs_reduction, "max_diff": self.max_diff}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "config": self.config,
            "applied": self.applied,
            "params_before": self.params[0],
            "params_after": self.params[1],
            "macs_before": self.macs[0],
            "macs_after": self.macs[1],
            "sparsity": self.sparsity,
            "macs_reduction": self.macs_reduction,
            "max_diff": self.max_diff,
            "seconds": self.seconds,
            "groups": [asdict(g) for g in self.groups],
            "left_alone": self.left_alone,
            "blocked": self.blocked,
            "plan": {p: {str(d): idx for d, idx in dims.items()} for p, dims in self.plan.items()},
        }

    def __str__(self) -> str:
        from prunekit.measure.render import render_table

        rows = [
            [g.name, g.kind, str(g.before), str(g.after), g.members]
            for g in self.groups
            if g.after != g.before
        ]
        verb = "removed" if self.applied else "would remove (dry run)"
        title = (
            f"{self.method} {self.config.get('pattern')}: {verb} {self.sparsity:.1%} of "
            f"parameters ({self.params[0]:,} → {self.params[1]:,}), MACs "
            f"{self.macs[0]:,} → {self.macs[1]:,} ({self.macs_reduction:.2f}× fewer)"
        )
        table = render_table(title, ["group", "kind", "units", "kept", "coupled slices"], rows)
        notes = [f"left alone: {s}" for s in self.left_alone[:8]]
        notes += [f"cannot shrink: {s}" for s in self.blocked[:8]]
        return "\n".join([table, *notes])
