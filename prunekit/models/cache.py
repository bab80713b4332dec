"""Builtin models trained on first use and cached as safetensors + JSON (never a pickle)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

from prunekit.models.paths import default_cache_dir, prunekit_version
from prunekit.models.registry import ModelInfo, build, model_info

logger = logging.getLogger(__name__)


def cache_files(name: str, cache_dir: str | Path | None = None) -> tuple[Path, Path]:
    """The ``(weights .safetensors, metadata .json)`` paths of builtin ``name`` in the cache.

    A builtin that caches itself as a Hugging Face folder (``gpt-tiny``) keeps both in
    ``models/NAME/``: ``model.safetensors`` and ``prunekit.json``.
    """
    folder = Path(cache_dir or default_cache_dir()) / "models"
    if (folder / name).is_dir():
        return folder / name / "model.safetensors", folder / name / "prunekit.json"
    return folder / f"{name}.safetensors", folder / f"{name}.json"


def pretrained(
    name: str, *, cache_dir: str | Path | None = None, progress: bool = True
) -> nn.Module:
    """The builtin model ``name`` trained on its dataset, in eval mode.

    The first call trains it with its registered recipe (seconds for ``digits-cnn``, minutes for
    the Fashion-MNIST models) and caches the weights and a JSON record (accuracy, epochs, dataset,
    prunekit version, seconds) under ``cache_dir`` (default: ``default_cache_dir()``); later calls
    load the cache. A cache written with a different recipe, or unreadable, is retrained. A
    model trained elsewhere (``ModelInfo.loader``, e.g. ``minilm``) is loaded, never cached.
    """
    info = model_info(name)
    if info.loader is not None:
        return info.loader().eval()
    weights, record = cache_files(name, cache_dir)
    model = _load_cached(info, weights, record)
    if model is None:
        model = _train_and_cache(info, weights, record, progress)
    return model.eval()


def cached_record(name: str, cache_dir: str | Path | None = None) -> dict[str, Any] | None:
    """The JSON record of a cached builtin (accuracy, seconds, …), or None when not cached."""
    record = cache_files(model_info(name).name, cache_dir)[1]
    try:
        return json.loads(record.read_text())
    except (OSError, ValueError):
        return None


def _load_cached(info: ModelInfo, weights: Path, record: Path) -> nn.Module | None:
    if not (weights.is_file() and record.is_file()):
        return None
    try:
        meta = json.loads(record.read_text())
        if not isinstance(meta, dict) or meta.get("recipe") != info.recipe.to_dict():
            logger.info("builtin:%s: cached with another recipe; retraining", info.name)
            return None
        model = build(info.name)
        safetensors.torch.load_model(model, weights)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        # A stale architecture or a half-written file must not block the user: retrain.
        logger.warning("builtin:%s: cache %s unusable (%s); retraining", info.name, weights, err)
        return None
    logger.info("builtin:%s: loaded from %s", info.name, weights)
    return model


def _train_and_cache(info: ModelInfo, weights: Path, record: Path, progress: bool) -> nn.Module:
    # Imported here: training pulls in the pruning machinery, which itself imports this package.
    from prunekit.data import load_data
    from prunekit.train import finetune_

    recipe = info.recipe
    logger.info(
        "builtin:%s: training on %s for %d epochs (first use; cached in %s)",
        info.name,
        info.dataset,
        recipe.epochs,
        weights.parent,
    )
    data = load_data(info.dataset)
    torch.manual_seed(recipe.seed)  # the initial weights, not only the batch order
    model = build(info.name)
    start = time.perf_counter()
    report = finetune_(
        model,
        data.loader("train", batch_size=recipe.batch_size, seed=recipe.seed),
        recipe,
        eval_data=data.loader("test", batch_size=1000),
        progress=progress,
    )
    seconds = time.perf_counter() - start
    accuracy = report.history[-1].get("eval_accuracy") if report.history else None
    logger.info("builtin:%s: test accuracy %s after %.0f s", info.name, accuracy, seconds)
    # finetune_ may train in channels_last; the cache holds plain contiguous tensors.
    model.to(memory_format=torch.contiguous_format)
    meta = {
        "name": info.name,
        "dataset": info.dataset,
        "accuracy": accuracy,
        "epochs": report.epochs,
        "recipe": recipe.to_dict(),
        "history": report.history,
        "seconds": round(seconds, 2),
        "prunekit_version": prunekit_version(),
        "torch_version": torch.__version__,
    }
    weights.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(weights, lambda tmp: safetensors.torch.save_model(model, str(tmp)))
    # The record goes last: a cache entry counts only once both files are complete.
    _atomic_write(record, lambda tmp: tmp.write_text(json.dumps(meta, indent=2) + "\n"))
    return model


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    # Written beside the target and renamed, so a reader (or a parallel trainer) never sees a
    # half-written file.
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        tmp.chmod(0o644)  # mkstemp creates 0600; the cache may be shared through PRUNEKIT_CACHE
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
