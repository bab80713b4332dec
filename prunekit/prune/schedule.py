"""When to prune how much: one-shot, iterative rounds, or gradually (AGP) during training.

A schedule answers, for a training step, the sparsity to prune to at that step (or None: no
change). Pure functions of step counts; the training loop asks, the pruner applies.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from prunekit.config import BaseConfig
from prunekit.errors import PrunekitError, quote


def agp_sparsity(
    step: int, initial: float, final: float, start_step: int, num_updates: int, frequency: int
) -> float:
    """Zhu & Gupta (2017): s_t = s_f + (s_i − s_f)(1 − (t − t0)/(nΔt))³, clamped to [t0, t0+nΔt]."""
    span = max(num_updates * frequency, 1)
    progress = min(max(step - start_step, 0) / span, 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3


def iterative_sparsity(round_index: int, rounds: int, final: float) -> float:
    """Sparsity after round ``round_index`` (1-based) of ``rounds``.

    Each round removes the same fraction of the weights still left (as in Han et al. 2015 and
    the lottery-ticket rounds), so the last round lands exactly on ``final``.
    """
    return 1.0 - (1.0 - final) ** (round_index / rounds)


class OneShot(BaseConfig):
    """Prune to the final sparsity before the first step, then train with the masks fixed."""

    kind: Literal["oneshot"] = "oneshot"

    def target(self, step: int, total_steps: int, final: float) -> float | None:
        return final if step == 0 else None


class Iterative(BaseConfig):
    """``rounds`` equal stretches of training; each begins by pruning to the next sparsity."""

    kind: Literal["iterative"] = "iterative"
    rounds: int = Field(3, ge=1)

    def target(self, step: int, total_steps: int, final: float) -> float | None:
        for r in range(self.rounds):
            if step == (total_steps * r) // self.rounds:
                return iterative_sparsity(r + 1, self.rounds, final)
        return None


class AGP(BaseConfig):
    """Automated gradual pruning: sparsity rises cubically from ``initial_sparsity`` to the final.

    ``start`` and ``end`` are fractions of the training steps; the mask is updated
    ``num_updates`` + 1 times between them and the last stretch trains at the final sparsity.
    A run with fewer steps than that updates at every step, so it still ends at the final
    sparsity.
    """

    kind: Literal["agp"] = "agp"
    initial_sparsity: float = Field(0.0, ge=0.0, lt=1.0)
    start: float = Field(0.0, ge=0.0, lt=1.0)
    end: float = Field(0.75, gt=0.0, le=1.0)
    num_updates: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> AGP:
        if self.end <= self.start:
            raise ValueError(
                f"AGP: end must be after start; got start={self.start}, end={self.end}"
            )
        return self

    def _steps(self, total_steps: int) -> tuple[int, int, int]:
        """The first update's step, the steps between updates, and the number of updates after
        the first. The last update lands on a step that runs (at most ``total_steps - 1``): a
        run too short for ``num_updates`` updates makes one per step, or with no room at all
        prunes to the final sparsity at once."""
        start = int(self.start * total_steps)
        last = min(int(self.end * total_steps), total_steps - 1)
        span = max(last - start, 0)
        updates = min(self.num_updates, span)
        return start, span // updates if updates else 1, updates

    def target(self, step: int, total_steps: int, final: float) -> float | None:
        start, frequency, updates = self._steps(total_steps)
        offset = step - start
        if offset < 0 or offset % frequency or offset // frequency > updates:
            return None
        if updates == 0:
            return final
        return agp_sparsity(step, self.initial_sparsity, final, start, updates, frequency)


Schedule = OneShot | Iterative | AGP

SCHEDULES: dict[str, type[BaseConfig]] = {"oneshot": OneShot, "iterative": Iterative, "agp": AGP}


def make_schedule(schedule: str | Schedule | None) -> Schedule:
    """A schedule object from a name (``oneshot``, ``iterative``, ``agp``) or itself."""
    if schedule is None:
        return OneShot()
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise PrunekitError(
                f"schedule must be one of {', '.join(SCHEDULES)}; got {quote(schedule)}"
            )
        return SCHEDULES[schedule]()  # type: ignore[return-value]
    return schedule
