"""``auto_compress``: search per-layer sparsity and quantization for the smallest (or fastest)
model within an accuracy budget.

Why Optuna's TPE with a constraint rather than a multi-objective sampler: the question asked is
constrained ("the smallest model that loses at most ``max_drop`` points"), and TPE with a
constraint (``Trial.set_constraint``, c-TPE) spends trials near the budget's edge, where the
answer is; NSGA-II would spread a few dozen trials along the whole accuracy range (its
population alone is 50). The frontier is still reported: the non-dominated set of every trial.

Honest figures: trials, and the choice among the retrained candidates (``prunekit.auto.final``),
are judged on validation data held out from fine-tuning; the chosen model is checked once on
the test data, so the budget is not fitted to the test set. The validation data should be unseen
by the original model as well: drops on samples it memorized overstate the test drop.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable, Sized
from functools import partial
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from prunekit.analyze import analyze_sensitivity
from prunekit.analyze.parallel import choose_backend, map_trials
from prunekit.auto.config import AutoConfig
from prunekit.auto.final import Retrain, finalize
from prunekit.auto.report import AutoReport, TrialRecord, cost, pareto_front
from prunekit.auto.space import Space, build_space, suggest
from prunekit.auto.trial import Job, measure_model, restore_shuffle, run_trial, shuffle_state
from prunekit.errors import PrunekitError
from prunekit.measure.accuracy import top1_accuracy
from prunekit.prune import MagnitudeConfig
from prunekit.quantize import Int8DynamicConfig
from prunekit.quantize.select import choose_linears
from prunekit.targets import select_layers

log = logging.getLogger(__name__)

PROFILE_RATIOS = (0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.98)


def _check(model: Any, data: dict[str, Any]) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module; got {type(model).__name__}")
    for name, batches in data.items():
        if batches is not None and (not isinstance(batches, Sized) or len(batches) == 0):
            raise PrunekitError(
                f"{name}: expected a non-empty, re-iterable collection of labelled batches (a "
                f"list or a DataLoader); got {type(batches).__name__}"
            )


def _accuracy(model: nn.Module, data: Iterable[Any], what: str) -> float:
    measured = top1_accuracy(model, data)
    if not measured:
        raise PrunekitError(f"{what}: batches need class labels to measure accuracy")
    return measured[0]


def accuracy_profile(
    model: nn.Module, eval_data: Iterable[Any], *, seed: int = 0, progress: bool = True
) -> Any:
    """The sensitivity profile ``auto_compress`` uses: each prunable layer alone pruned by
    magnitude, one-shot, to each of ``PROFILE_RATIOS``, accuracy in percent on ``eval_data``.
    Compute it once to share between searches of the same model."""
    return analyze_sensitivity(
        model,
        _PercentAccuracy(eval_data),
        config=MagnitudeConfig(seed=seed),
        ratios=PROFILE_RATIOS,
        # One-shot points cost one evaluation each: cheaper here than shipped to workers.
        backend="local",
        progress=progress,
        metric_name="accuracy %",
    )


class _PercentAccuracy:
    """Validation accuracy in percent, so the profile's drops are in points like ``max_drop``;
    a class rather than a closure so that Ray can ship it to workers."""

    def __init__(self, data: Iterable[Any]) -> None:
        self.data = data

    def __call__(self, model: nn.Module) -> float:
        return 100 * _accuracy(model, self.data, "eval_data")


def _study(space: Space, config: AutoConfig) -> Any:
    try:
        import optuna
    except ImportError:
        raise PrunekitError(
            "auto_compress searches with Optuna: pip install 'prunekit[analyze]'"
        ) from None

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(
        seed=config.seed,
        multivariate=True,  # per-layer sparsities act together on accuracy
        n_startup_trials=min(10, max(3, config.trials // 3)),
    )
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.enqueue_trial(space.start)
    return study


def auto_compress(
    model: nn.Module,
    train_data: Iterable[Any],
    eval_data: Iterable[Any],
    config: AutoConfig | None = None,
    *,
    test_data: Iterable[Any] | None = None,
    profile: Any = None,
    backend: str = "auto",
    progress: bool = True,
) -> AutoReport:
    """Search for the smallest (``objective="size"``) or fastest (``"latency"``) compression of
    ``model`` that loses at most ``config.max_drop`` accuracy points; ``model`` is not changed.

    train_data: labelled batches to fine-tune on; eval_data: labelled batches, held out from
        training (e.g. carved from the training split with :func:`validation_split`), that
        score each trial; test_data: labelled batches on which the chosen configuration,
        retrained for ``final_epochs``, is checked against the budget (eval_data if None).
    profile: a ``prunekit.analyze.SensitivityProfile`` of ``model`` whose metric is accuracy
        in percent (so drops are in points), e.g. from an earlier report; computed when None
        (one-shot magnitude pruning of each layer alone, on eval_data). It bounds each layer's
        sparsity and gives the first configuration tried.
    backend: where trials run: ``"ray"``, ``"local"`` or ``"auto"`` (Ray if a cluster is
        reachable); ``config.parallel`` trials are proposed at a time.

    Returns an :class:`AutoReport`; ``report.model`` is the chosen model.
    """
    config = AutoConfig() if config is None else config
    if not isinstance(config, AutoConfig):
        raise TypeError(f"config: expected an AutoConfig; got {type(config).__name__}")
    _check(model, {"train_data": train_data, "eval_data": eval_data, "test_data": test_data})
    start = time.perf_counter()
    used = choose_backend(backend)
    # Every trial, and the final retraining, start the loader's shuffling from this state:
    # fair comparisons and a search that repeats given the seed. Put back when done.
    order = shuffle_state(train_data)
    try:
        dense = copy.deepcopy(model).eval()
        layers = {name: layer.weight.dim() > 2 for name, layer in select_layers(dense).items()}
        latency_batch = config.latency_batch if config.objective == "latency" else None
        val_accuracy, dense_bytes, dense_latency = measure_model(dense, eval_data, latency_batch)
        test_accuracy = None if test_data is None else _accuracy(dense, test_data, "test_data")
        baseline = {"val_accuracy": val_accuracy, "test_accuracy": test_accuracy,
                    "bytes": dense_bytes, "latency_ms": dense_latency}  # fmt: skip
        if profile is None:
            profile = accuracy_profile(dense, eval_data, seed=config.seed, progress=progress)
        space = build_space(profile, layers, config, int8_layers=_int8_applies(dense))
        trial = partial(Job, dense, train=train_data, val=eval_data,
                        finetune=config.finetune_config(config.trial_epochs),
                        latency_batch=latency_batch, order=order)  # fmt: skip
        records = _search(space, config, trial, val_accuracy, used, progress)
        frontier = [records[i] for i in pareto_front([(cost(r, config.objective), r.accuracy)
                                                      for r in records])]  # fmt: skip
        retrain = Retrain(dense, config, train_data, eval_data, val_accuracy, order)
        final, chosen = finalize(retrain, records, frontier)
        if final is not None and test_accuracy is not None:
            final.check_on_test(chosen, test_data, test_accuracy, config.max_drop)
    finally:
        restore_shuffle(train_data, order)
    return AutoReport(
        config=config,
        baseline=baseline,
        space=space.to_dict(),
        trials=records,
        frontier=[r.number for r in frontier],
        final=final,
        backend=used,
        seconds=time.perf_counter() - start,
        model=chosen if chosen is not None else dense,
    )


def _search(
    space: Space,
    config: AutoConfig,
    job: Callable[..., Job],
    val_accuracy: float,
    backend: str,
    progress: bool,
) -> list[TrialRecord]:
    """Ask Optuna for ``config.parallel`` configurations at a time, run them, tell it back."""
    study = _study(space, config)
    records: list[TrialRecord] = []
    bar = tqdm(total=config.trials, desc="auto trials", disable=None if progress else True,
               leave=False)  # fmt: skip
    while len(records) < config.trials:
        asked = [study.ask() for _ in range(min(config.parallel, config.trials - len(records)))]
        choices = [suggest(t, space) for t in asked]
        outcomes = map_trials(run_trial, [job(choice=c) for c in choices], backend=backend,
                              num_workers=config.parallel, progress=False)  # fmt: skip
        for trial, choice, out in zip(asked, choices, outcomes, strict=True):
            drop = 100 * (val_accuracy - out.accuracy)
            record = TrialRecord(
                len(records), choice, out.accuracy, drop, out.bytes, out.latency_ms,
                out.nonzeros, out.params, drop <= config.max_drop, out.seconds,
            )  # fmt: skip
            records.append(record)
            trial.set_constraint("drop", drop - config.max_drop)
            study.tell(trial, cost(record, config.objective))
            log.info("trial %d: %s → %s", record.number, choice.label(), record.to_dict())
            bar.update(1)
    bar.close()
    return records


def _int8_applies(model: nn.Module) -> bool:
    # int8-dynamic leaves layers below min_features in fp32 and refuses a model with none left.
    try:
        choose_linears(model, Int8DynamicConfig(), min_features=Int8DynamicConfig().min_features)
    except PrunekitError:
        return False
    return True
