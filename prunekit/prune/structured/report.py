"""What a structured pruning call did (or, for a dry run, would do), per group."""

from __future__ import annotations

from dataclasses import dataclass, field

from prunekit.prune.structured.hidden import HiddenResult
from prunekit.prune.structured.reconstruct import Refit
from prunekit.report import Report, Table

# macs_reduction is reported as overshot above this many times the target.
OVERSHOOT = 1.05


@dataclass(frozen=True)
class GroupRow:
    name: str
    kind: str
    members: str
    before: int
    after: int


@dataclass(kw_only=True)
class StructuredReport(Report):
    """Units per group before/after; parameters and MACs per sample before/after.

    params_removed: the fraction of the whole model's parameters removed (not a sparsity: the
        model keeps no zeros, its layers shrink).
    skipped: groups that were candidates but are not pruned, with the reason.
    blocked: parameter dimensions that can never shrink, with the reason (top reasons only).
    max_diff: largest |rebuilt − masked| output difference found by verification.
    plan: parameter/buffer name → dimension → the indices removed (the serializable plan).
    applied: False for a dry run: the plan and figures are what the call would do.
    refits: with ``reconstruct``, per refit layer its output error relative to the unpruned
        model's, before and after the refit (see reconstruct.Refit).
    hidden_width: with ``prune_hidden``, the output difference the narrower hidden width caused on
        the example input (relative error, cosine), the outputs that narrowed, and the
        Hugging Face config keys rewritten (see hidden.HiddenResult); not a verified match.
    """

    groups: list[GroupRow]
    params: tuple[int, int]
    macs: tuple[int, int]
    applied: bool
    max_diff: float | None = None
    blocked: list[str] = field(default_factory=list)
    plan: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    latency_ms: tuple[float, float] | None = None
    latency_batch: int | None = None
    latency_tried: list[tuple[float, float]] = field(default_factory=list)
    refits: list[Refit] = field(default_factory=list)
    hidden_width: HiddenResult | None = None

    computed = ("params_before", "params_after", "macs_before", "macs_after", "params_removed",
                "macs_reduction", "speedup")  # fmt: skip
    hidden = ("params", "macs")  # as the *_before/*_after pairs

    @property
    def params_before(self) -> int:
        return self.params[0]

    @property
    def params_after(self) -> int:
        return self.params[1]

    @property
    def macs_before(self) -> int:
        return self.macs[0]

    @property
    def macs_after(self) -> int:
        return self.macs[1]

    @property
    def params_removed(self) -> float:
        """Fraction of the model's parameters removed."""
        before, after = self.params
        return 1 - after / before if before else 0.0

    @property
    def macs_reduction(self) -> float:
        before, after = self.macs
        return before / after if after else float("inf")

    def summary(self) -> dict[str, float | int | None]:
        return {"params": self.params[1], "macs": self.macs[1], "macs_reduction":
                self.macs_reduction, "max_diff": self.max_diff}  # fmt: skip

    def title(self) -> str:
        verb = "removed" if self.applied else "would remove (dry run)"
        pattern = (self.config or {}).get("pattern")
        return (
            f"{self.method} {pattern}: {verb} {self.params_removed:.1%} of parameters "
            f"({self.params[0]:,} → {self.params[1]:,}), MACs {self.macs[0]:,} → "
            f"{self.macs[1]:,} ({self.macs_reduction:.2f}× fewer)"
        )

    def table(self) -> Table:
        rows = [[g.name, g.kind, str(g.before), str(g.after), g.members]
                for g in self.groups if g.after != g.before]  # fmt: skip
        return ["group", "kind", "units", "kept", "coupled slices"], rows

    @property
    def overshoot(self) -> str | None:
        """What rounding did to ``macs_reduction``, where it went past the target by over 5 %."""
        config = self.config or {}
        target = config.get("macs_reduction")
        if target is None or self.macs_reduction <= target * OVERSHOOT:
            return None
        rounding = config.get("round_to")
        return (
            f"macs_reduction={target:g}: reached {self.macs_reduction:.2f}× fewer MACs, past the "
            f"target: whole units of round_to={rounding} and min_channels="
            f"{config.get('min_channels')} per layer cannot stop nearer"
            + ("; a smaller round_to gets closer" if rounding and rounding > 1 else "")
        )

    @property
    def speedup(self) -> float | None:
        """Measured: the unpruned model's latency over the pruned one's (latency_reduction)."""
        return None if self.latency_ms is None else self.latency_ms[0] / self.latency_ms[1]

    def notes(self) -> list[str]:
        left = [f"left alone: {name}: {why}" for name, why in list(self.skipped.items())[:8]]
        over = [self.overshoot] if self.overshoot else []
        if self.latency_ms is not None:
            target = (self.config or {}).get("latency_reduction")
            dense, pruned = self.latency_ms
            over.append(
                f"latency in PyTorch at batch {self.latency_batch}: {dense:.3f} → {pruned:.3f} "
                f"ms, {self.speedup:.2f}× faster measured (asked {target:g}×; "
                f"{len(self.latency_tried)} candidates timed)"
            )
        refit = [
            f"refit {r.layer}: output error {r.error_before:.2%} → {r.error_after:.2%} of the "
            f"unpruned layer's ({r.rows:,} calibration rows)"
            for r in self.refits
        ]
        blocked = [f"cannot shrink: {s}" for s in self.blocked[:8]]
        return over + refit + self._hidden_notes() + left + blocked

    def _hidden_notes(self) -> list[str]:
        h = self.hidden_width
        if h is None:
            return []
        error = "n/a" if h.rel_error is None else f"{h.rel_error:.2%}"
        cosine = "n/a" if h.cosine is None else f"{h.cosine:.4f}"
        notes = [
            f"hidden width narrowed (not output-equivalent: the norms' statistics change): "
            f"output error {error} relative, cosine {cosine} on the example input"
        ]
        notes += [f"narrower output: {r}" for r in h.resized]
        if h.config_complete is not None:
            done = "reopens it" if h.config_complete else "cannot express every width"
            notes.append(f"config rewritten {h.config_updates}: from_pretrained {done}")
        return notes
