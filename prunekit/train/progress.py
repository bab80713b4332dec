"""What a training run shows while it runs: a bar on a terminal, log lines elsewhere.

Where no bar is drawn (output to a file, the CLI under a scheduler), a line at most every
``PROGRESS_SECONDS`` within an epoch and one at its end are the progress a user sees.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 60.0


class Progress:
    """Progress of ``epochs`` epochs of ``steps`` batches; ``show``: draw a bar on a terminal
    (tqdm draws none where stderr is no terminal); ``main``: this process reports (rank 0)."""

    def __init__(
        self, epochs: int, steps: int, show: bool, main: bool = True, minutes: float | None = None
    ) -> None:
        self.epochs, self.steps, self.show, self.main = epochs, steps, show, main
        # With a time budget the epochs are only a bound: "epoch 2 (10-min budget)".
        self.of = f"/{epochs}" if minutes is None else f" ({minutes:g}-min budget)"
        self.start = time.perf_counter()
        self.loss = 0.0
        self.done = 0

    def batches(self, data: Iterable[Any], epoch: int) -> Iterator[Any]:
        """The batches of ``epoch`` (0-based); call :meth:`update` after each."""
        bar = tqdm(data, desc=f"epoch {epoch + 1}{self.of}", leave=False,
                   disable=None if self.show and self.main else True)  # fmt: skip
        self.bar, self.loss, self.done = bar, 0.0, 0
        said = time.perf_counter()
        for batch in bar:
            if self.main and time.perf_counter() - said > PROGRESS_SECONDS:
                said = time.perf_counter()
                log.info("epoch %d%s: batch %d/%d, loss %.4f", epoch + 1, self.of,
                         self.done, self.steps, self.loss / max(self.done, 1))  # fmt: skip
            yield batch

    def update(self, loss: float) -> None:
        self.loss += loss
        self.done += 1
        self.bar.set_postfix(loss=f"{self.loss / self.done:.4f}")

    def epoch_end(self, entry: dict[str, Any]) -> None:
        """One short line: "epoch 1/2: train_loss 0.1234, eval_accuracy 0.9722 (3 s)"."""
        if self.main:
            figures = ", ".join(
                f"{k} {v:.4g}" for k, v in entry.items() if k != "epoch" and isinstance(v, float)
            )
            log.info("epoch %d%s: %s (%.0f s)", entry["epoch"], self.of, figures,
                     time.perf_counter() - self.start)  # fmt: skip
