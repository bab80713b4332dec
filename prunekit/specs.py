"""The model SPEC parser: ``builtin:NAME``, ``py:FILE.py:FUNCTION``, a saved directory, ``hf:``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import safetensors.torch
from safetensors import SafetensorError
from torch import nn

from prunekit.artifact.manifest import MANIFEST
from prunekit.data.pyfile import load_py_function, parse_py_spec
from prunekit.errors import PrunekitError
from prunekit.models.cache import pretrained
from prunekit.models.hf import hf_source, is_hf_model, load_hf_model
from prunekit.models.registry import available, build, model_info

SPEC_FORMS = ("builtin:NAME", "py:FILE.py:FUNCTION", "DIR (written by prunekit.save)", "hf:PATH")


def load_model(spec: str, *, weights: str | Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The model a model SPEC names, and a JSON-able dict saying where it came from.

    - ``builtin:NAME``: the example model, trained on first use and cached (see ``pretrained``);
      with ``weights``, the untrained architecture with those weights instead.
    - ``py:FILE.py:FUNCTION``: ``FUNCTION()`` from the user's file, which returns an
      ``nn.Module``; ``weights`` is a ``.safetensors`` file loaded into it (strictly).
    - ``hf:PATH``: a Hugging Face model folder (see ``prunekit.models.hf.load_hf``); its
      tokenizer comes from ``prunekit.models.hf.load_tokenizer(PATH)``.
    - a directory written by ``prunekit.save``.

    The dict is ``{"kind": "builtin", "name", "kwargs", "dataset"}``, ``{"kind": "py", "file",
    "function", "class", "weights"}``, ``{"kind": "hf", "path", "model_type", "class"}`` (also
    for a pretrained Hugging Face builtin such as ``minilm``, with its ``name``) or the saved
    directory's own source record.
    """
    if not isinstance(spec, str) or not spec:
        raise PrunekitError(f"model spec must be a non-empty string; got {spec!r}")
    if spec.startswith("builtin:"):
        return _builtin(spec.removeprefix("builtin:"), weights)
    if spec.startswith("py:"):
        return _from_py(spec, weights)
    if spec.startswith("hf:"):
        return _from_hf(spec.removeprefix("hf:"), weights)
    if Path(spec).expanduser().is_dir():
        folder = Path(spec).expanduser()
        # `prunekit prune/run --out DIR` puts the model in DIR/model, beside its reports.
        if not (folder / MANIFEST).exists() and (folder / "model" / MANIFEST).is_file():
            folder = folder / "model"
        return _from_dir(folder, weights)
    hint = f"; did you mean builtin:{spec}?" if spec in available() else ""
    raise PrunekitError(
        f"model spec {spec!r} is not recognised (and is not a directory){hint}; use one of: "
        f"{', '.join(SPEC_FORMS)}; builtin names: {', '.join(available())}"
    )


def _builtin(name: str, weights: str | Path | None) -> tuple[nn.Module, dict[str, Any]]:
    info = model_info(name)
    if weights is None:
        model = pretrained(name)
    else:
        model = build(name)
        _load_weights(model, weights)
    if weights is None and is_hf_model(model):
        # Saved and reloaded as the Hugging Face folder it came from, not rebuilt by name.
        return model.eval(), hf_source(model, name=name, dataset=info.data_spec())
    source = {"kind": "builtin", "name": name, "kwargs": {}, "dataset": info.data_spec()}
    return model.eval(), source


def _from_hf(path: str, weights: str | Path | None) -> tuple[nn.Module, dict[str, Any]]:
    if weights is not None:
        raise PrunekitError(
            f"weights: an hf: folder carries its own weights; drop weights={str(weights)!r}"
        )
    if not path:
        raise PrunekitError("model spec 'hf:': name the folder, e.g. hf:./my-model")
    folder = Path(path).expanduser()
    if (folder / "manifest.json").is_file():
        # Written by pk.save: it may hold a structurally pruned model that only the manifest
        # can rebuild (config.json cannot express every per-layer width).
        return _from_dir(folder, None)
    model = load_hf_model(path)
    return model, hf_source(model)


def _from_py(spec: str, weights: str | Path | None) -> tuple[nn.Module, dict[str, Any]]:
    path, function = parse_py_spec(spec, "model")
    model = load_py_function(spec, "model")()
    if not isinstance(model, nn.Module):
        raise PrunekitError(
            f"model: {spec} returned {type(model).__name__}; FUNCTION must return a torch.nn.Module"
        )
    if weights is not None:
        _load_weights(model, weights)
    cls = type(model)
    source = {
        "kind": "py",
        "file": str(path),
        "function": function,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "weights": str(Path(weights).resolve()) if weights is not None else None,
    }
    return model.eval(), source


def _from_dir(path: Path, weights: str | Path | None) -> tuple[nn.Module, dict[str, Any]]:
    if weights is not None:
        raise PrunekitError(
            f"weights: a saved directory ({path}) carries its own weights; drop weights="
            f"{str(weights)!r} or use a py:FILE.py:FUNCTION spec"
        )
    # Imported here: io rebuilds builtins through this package, so a top-level import would cycle.
    from prunekit.artifact import io

    model = io.load(path)
    return model.eval(), dict(io.read_manifest(path).get("source") or {"kind": "dir"})


def _load_weights(model: nn.Module, weights: str | Path) -> None:
    path = Path(weights).expanduser()
    if path.suffix != ".safetensors" or not path.is_file():
        raise PrunekitError(
            f"weights: expected an existing .safetensors file; got {str(weights)!r}"
        )
    try:
        safetensors.torch.load_model(model, path)
    except (RuntimeError, SafetensorError, OSError) as err:
        raise PrunekitError(
            f"weights: {path} does not fit the model ({type(model).__name__}): {err}"
        ) from err
