"""Runs the campaign: cases in forked worker processes, each case bounded in memory (an address
space limit a fixed amount above the worker's own) and in time (the parent kills a worker stuck
on a case and starts another); or in this process, bounded in memory only.

Workers are forked once the bases are built, so each rebuilds its case from ``(seed, index)``
alone; they run torch on one thread (its OpenMP thread pool does not survive a fork).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import re
import resource
import shutil
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import torch

from tests.fuzzing.bases import Base
from tests.fuzzing.cases import FAILURES, plan, run_case

EXAMPLES = 3  # kept per failure signature


@dataclass(frozen=True)
class Bounds:
    """memory_mb: address space a case may add to its worker's; timeout: seconds per case."""

    memory_mb: int = 1024
    timeout: float = 30.0


@dataclass
class Tally:
    """Counts per target × kind × outcome, and the failures grouped by signature."""

    counts: dict[str, dict[str, Counter]] = field(default_factory=dict)
    errors: Counter = field(default_factory=Counter)
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: Counter = field(default_factory=Counter)  # per target, all its cases
    slowest: dict[str, tuple[float, int]] = field(default_factory=dict)  # (seconds, case)
    peak_mb: dict[str, float] = field(default_factory=dict)
    longest_message: dict[str, tuple[int, int]] = field(default_factory=dict)

    def add(self, result: dict[str, Any]) -> None:
        target, outcome = result["target"], result["outcome"]
        self.counts.setdefault(target, {}).setdefault(result["kind"], Counter())[outcome] += 1
        if result["error"]:
            self.errors[f"{target} | {outcome} | {result['error']}"] += 1
        seconds = result.get("seconds") or 0.0
        self.seconds[target] += seconds
        if seconds >= self.slowest.get(target, (0.0, 0))[0]:
            self.slowest[target] = (seconds, result["index"])
        if result.get("peak_mb") is not None:
            self.peak_mb[target] = max(self.peak_mb.get(target, 0.0), result["peak_mb"])
        chars = result.get("message_chars") or 0
        if chars > self.longest_message.get(target, (0, 0))[0]:
            self.longest_message[target] = (chars, result["index"])
        if outcome in FAILURES:
            key = f"{target} | {outcome} | {result['error']} | {_gist(result['message'])}"
            group = self.failures.setdefault(key, {"count": 0, "examples": []})
            group["count"] += 1
            if len(group["examples"]) < EXAMPLES:
                group["examples"].append(result)

    def total(self, outcome: str | None = None) -> int:
        return sum(
            sum(c.values()) if outcome is None else c[outcome]
            for kinds in self.counts.values()
            for c in kinds.values()
        )

    def failed(self) -> int:
        return sum(self.total(o) for o in FAILURES)


def _gist(message: str | None) -> str:
    # Failures differing only in numbers or quoted values are one failure.
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", (message or "").split("\n")[0])
    return re.sub(r"\d+", "N", text)[:80]


def run(
    bases: dict[str, Base],
    cases: int,
    seed: int,
    scratch: Path,
    bounds: Bounds = Bounds(),
    workers: int = 2,
    start: int = 0,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> Tally:
    """Cases ``start .. start+cases-1`` of campaign ``seed``; ``workers=0`` runs them in this
    process (no time bound)."""
    tally = Tally()
    indices = range(start, start + cases)

    def record(result: dict[str, Any]) -> None:
        tally.add(result)
        if on_result is not None:
            on_result(result)

    if workers == 0:
        for index in indices:
            record(_measured(bases, seed, index, scratch, bounds.memory_mb))
    else:
        _Pool(bases, seed, scratch, bounds, workers).run(indices, record)
    return tally


def _measured(
    bases: dict[str, Base], seed: int, index: int, scratch: Path, mb: int
) -> dict[str, Any]:
    case = plan(bases, seed, index)
    resident = _reset_peak()
    begin = time.perf_counter()
    # Bounded from what the process maps now, case by case: a long-lived worker grows a little.
    with memory_bound(mb):
        result = run_case(bases, case, scratch)
    result["seconds"] = time.perf_counter() - begin
    peak = _status("VmHWM")
    result["peak_mb"] = None if resident is None or peak is None else (peak - resident) / 2**20
    return result


class _Pool:
    """Forked workers fed one case at a time over a pipe."""

    def __init__(
        self, bases: dict[str, Base], seed: int, scratch: Path, bounds: Bounds, size: int
    ) -> None:
        self.bases, self.seed, self.scratch, self.bounds = bases, seed, scratch, bounds
        self.context = multiprocessing.get_context("fork")
        self.started = 0
        self.workers = [self._start() for _ in range(size)]

    def run(self, indices: range, record: Callable[[dict[str, Any]], None]) -> None:
        queue = deque(indices)
        try:
            while queue or any(w.index is not None for w in self.workers):
                for i, worker in enumerate(self.workers):
                    if worker.index is None and queue:
                        try:
                            worker.send(queue.popleft())
                        except OSError:  # it died between cases
                            record(self._lost(worker, "crash"))
                            self.workers[i] = self._start()
                busy = [w for w in self.workers if w.index is not None]
                ready = wait([w.conn for w in busy], timeout=0.2)
                for i, worker in enumerate(self.workers):
                    if worker.index is None:
                        continue
                    if worker.conn in ready:
                        try:
                            record(worker.conn.recv())
                            worker.index = None
                            continue
                        except (EOFError, OSError):
                            record(self._lost(worker, "crash"))
                    elif time.monotonic() - worker.sent > self.bounds.timeout:
                        record(self._lost(worker, "hang"))
                    else:
                        continue
                    self.workers[i] = self._start()
        finally:
            for worker in self.workers:
                worker.stop()

    def _start(self) -> _Worker:
        parent, child = self.context.Pipe()
        self.started += 1
        folder = self.scratch / f"worker{self.started}"
        folder.mkdir(parents=True)
        args = (child, self.bases, self.seed, folder, self.bounds.memory_mb)
        process = self.context.Process(target=_serve, args=args, daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent, folder)

    def _lost(self, worker: _Worker, outcome: str) -> dict[str, Any]:
        """The result of the case a worker died on or got stuck in; the worker is gone."""
        worker.process.kill()
        worker.process.join()
        code = worker.process.exitcode
        case = plan(self.bases, self.seed, worker.index)
        seconds = time.monotonic() - worker.sent
        shutil.rmtree(worker.folder, ignore_errors=True)
        error = "Timeout" if outcome == "hang" else f"WorkerDied(exit {code})"
        message = f"no result after {seconds:.0f} s" if outcome == "hang" else "the worker died"
        return {
            "index": case.index,
            "target": case.target,
            "kind": case.label,
            "outcome": outcome,
            "error": error,
            "message": message,
            "message_chars": None,
            "detail": case.detail,
            "seconds": seconds,
            "peak_mb": None,
        }


@dataclass
class _Worker:
    process: Any
    conn: Connection
    folder: Path
    index: int | None = None
    sent: float = 0.0

    def send(self, index: int) -> None:
        self.index, self.sent = index, time.monotonic()
        self.conn.send(index)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        shutil.rmtree(self.folder, ignore_errors=True)


def _serve(conn: Connection, bases: dict[str, Base], seed: int, folder: Path, mb: int) -> None:
    # In the forked worker: quiet (transformers warns on stderr), one thread, bounded memory.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    torch.set_num_threads(1)
    while (index := conn.recv()) is not None:
        conn.send(_measured(bases, seed, index, folder, mb))


@contextlib.contextmanager
def memory_bound(mb: int) -> Iterator[None]:
    """Within the block this process maps at most ``mb`` MiB more than on entry: a larger
    allocation raises (torch: RuntimeError "can't allocate memory"; Python: MemoryError)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    _limit(mb)
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _limit(mb: int) -> None:
    """Let this process map at most ``mb`` MiB more than it has now."""
    size = _status("VmSize")
    if size is None:
        return
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    limit = size + (mb << 20)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _reset_peak() -> int | None:
    """Resets the peak resident size (Linux ``clear_refs``); the resident size now."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _status("VmRSS")


def _status(key: str) -> int | None:
    """A size from /proc/self/status, in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
