"""Run independent trials (sensitivity points, auto-compression candidates) in parallel on a Ray
cluster when one is there, in this process otherwise. Results come back in the items' order.

Models travel to Ray workers inside ``fn`` (its closure) or the items: Ray pickles them into its
object store. That is Ray's own transport between processes of one run, never a file a user
loads, so it does not break the rule that prunekit artifacts are safetensors + JSON.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar

from tqdm.auto import tqdm

from prunekit.errors import PrunekitError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

Backend = Literal["auto", "ray", "local"]
BACKENDS = ("auto", "ray", "local")


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        return None
    return ray


def choose_backend(backend: str) -> str:
    """``"ray"`` or ``"local"``: what ``backend`` means here and now.

    ``auto`` picks Ray only when a cluster is reachable (``RAY_ADDRESS`` is set, or this process
    already called ``ray.init``) and falls back to in-process otherwise; ``ray`` insists.
    """
    if backend not in BACKENDS:
        raise PrunekitError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "local":
        return "local"
    if backend == "auto":
        # ray.is_initialized() can only be true once ray is imported: don't pay its import
        # time (seconds) to learn that no cluster was asked for.
        if not os.environ.get("RAY_ADDRESS") and "ray" not in sys.modules:
            return "local"
        ray = _ray()
        if ray is None:
            log.warning("RAY_ADDRESS is set but ray is not installed; running in-process")
            return "local"
        return "ray" if os.environ.get("RAY_ADDRESS") or ray.is_initialized() else "local"
    if _ray() is None:
        raise PrunekitError(
            "backend='ray' needs the ray package: pip install 'prunekit[scale]', or use "
            "backend='local'"
        )
    return "ray"


def map_trials(
    fn: Callable[[T], R],
    items: Iterable[T],
    backend: Backend = "auto",
    num_workers: int | None = None,
    *,
    progress: bool = True,
    desc: str = "trials",
) -> list[R]:
    """``[fn(item) for item in items]``, in that order, run in parallel on Ray when chosen.

    backend: ``auto`` (Ray if a cluster is reachable: ``RAY_ADDRESS`` set or ``ray.init``
        already called; else in-process), ``ray`` (start a local Ray instance if none is
        running, and shut it down afterwards) or ``local`` (one after the other, here).
    num_workers: at most this many trials at once on Ray (default: as many as it schedules).
    fn must be picklable for Ray (module-level functions, closures over plain data and models).
    An exception in a trial is raised here, as the trial's own exception type.
    """
    if num_workers is not None and num_workers < 1:
        raise PrunekitError(f"num_workers must be at least 1; got {num_workers}")
    items = list(items)
    if choose_backend(backend) == "local" or not items:
        bar = tqdm(items, desc=desc, disable=None if progress else True, leave=False)
        return [fn(item) for item in bar]
    return _map_ray(fn, items, num_workers, progress, desc)


def _call(fn: Callable[[T], R], item: T) -> R:
    return fn(item)


def _map_ray(
    fn: Callable[[T], R], items: list[T], num_workers: int | None, progress: bool, desc: str
) -> list[R]:
    ray = _ray()
    started = not ray.is_initialized()
    if started and os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=logging.WARNING)  # joins that cluster, sized by its owner
    elif started:
        ray.init(num_cpus=num_workers, include_dashboard=False, logging_level=logging.WARNING)
    try:
        # fn (with any model it holds) goes into the object store once, not once per trial.
        shared = ray.put(fn)
        remote = ray.remote(num_cpus=1)(_call)
        window = num_workers or len(items)
        pending: dict[Any, int] = {}
        results: dict[int, R] = {}
        bar = tqdm(total=len(items), desc=desc, disable=None if progress else True, leave=False)
        queue = iter(enumerate(items))

        def submit() -> None:  # up to `window` trials in flight
            for i, item in queue:
                pending[remote.remote(shared, item)] = i
                if len(pending) >= window:
                    return

        submit()
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                try:
                    results[pending.pop(ref)] = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    # The other trials in flight are not cancelled: ray.cancel racing a task
                    # that is just completing aborts the driver (Ray 2.60, task_manager.cc
                    # "Tried to complete task that was not pending"), killing the caller's
                    # process with no Python traceback. They finish and are dropped; a Ray
                    # instance started here is shut down below, which stops them anyway.
                    raise e.as_instanceof_cause() from None
                bar.update(1)
            submit()
        bar.close()
        return [results[i] for i in range(len(items))]
    finally:
        if started:
            ray.shutdown()
