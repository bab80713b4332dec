"""Hugging Face models read from a local folder (``hf:PATH``): never downloads.

Decoders (``config.is_decoder``, an architecture ending in ``ForCausalLM``/``LMHeadModel``, or a
known decoder ``model_type``) load with ``AutoModelForCausalLM``, so they carry their LM head
and compute their own loss from ``labels``; other models load as the transformers class their
``architectures`` names, else with ``AutoModel``. Weights keep the checkpoint's dtype.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from prunekit.errors import PrunekitError

DECODER_TYPES = frozenset(
    {
        "bloom",
        "falcon",
        "gemma",
        "gemma2",
        "gemma3_text",
        "gpt2",
        "gpt_bigcode",
        "gpt_neo",
        "gpt_neox",
        "gptj",
        "llama",
        "mistral",
        "mixtral",
        "olmo",
        "olmo2",
        "opt",
        "phi",
        "phi3",
        "qwen2",
        "qwen2_moe",
        "qwen3",
        "smollm3",
    }
)
DECODER_SUFFIXES = ("ForCausalLM", "LMHeadModel")
# Any one of these lets AutoTokenizer build a tokenizer (fast file, or a slow one's vocabulary).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")


def transformers_module() -> ModuleType:
    """``transformers``, imported with the Hub set offline; a PrunekitError if not installed."""
    # Set before the first import: huggingface_hub reads it once, at import time.
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import transformers
    except ImportError:
        raise PrunekitError(
            "Hugging Face models need transformers; pip install 'prunekit[hf]'"
        ) from None
    # Its per-file progress bars ("Loading weights", "Writing model shards") drown our own.
    transformers.utils.logging.disable_progress_bar()
    return transformers


def is_hf_model(model: object) -> bool:
    """Whether ``model`` is a ``transformers.PreTrainedModel`` (without importing transformers)."""
    transformers = sys.modules.get("transformers")
    return transformers is not None and isinstance(model, transformers.PreTrainedModel)


def is_decoder(config: Any) -> bool:
    """Whether a transformers config describes a causal (decoder-only) language model."""
    if getattr(config, "is_decoder", False):
        return True
    architectures = getattr(config, "architectures", None) or []
    if any(name.endswith(DECODER_SUFFIXES) for name in architectures):
        return True
    return getattr(config, "model_type", None) in DECODER_TYPES


def load_hf(path: str | Path) -> tuple[nn.Module, Any, dict[str, Any]]:
    """The model, its tokenizer and a source dict, from a Hugging Face model folder.

    ``path`` holds ``config.json``, the weights (``*.safetensors`` or ``pytorch_model.bin``) and
    the tokenizer files. The model is in eval mode. The source dict is ``{"kind": "hf", "path":
    absolute folder, "model_type", "class"}`` (see ``hf_source``).
    """
    model = load_hf_model(path)
    return model, load_tokenizer(path), hf_source(model)


def load_hf_model(path: str | Path, class_name: str | None = None) -> nn.Module:
    """The model in folder ``path``, in eval mode (``class_name``: a transformers class to use)."""
    folder = _folder(path)
    transformers = transformers_module()
    config = _config(transformers, folder)
    cls = _model_class(transformers, config, class_name, folder)
    try:
        model = cls.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as err:
        raise PrunekitError(
            f"hf: cannot load the {config.model_type} model in {folder} as {cls.__name__}: {err}"
        ) from err
    return model.eval()


def build_hf_model(path: str | Path, class_name: str | None = None, dtype: Any = None) -> nn.Module:
    """The architecture ``config.json`` in folder ``path`` describes, freshly initialised, in
    eval mode: for weights that do not fit the config (a structurally pruned model), which are
    loaded after its shapes are restored. ``dtype``: of the floating-point weights."""
    folder = _folder(path)
    transformers = transformers_module()
    config = _config(transformers, folder)
    cls = _model_class(transformers, config, class_name, folder)
    kwargs = {} if dtype is None else {"dtype": dtype}
    build = cls.from_config if hasattr(cls, "from_config") else cls._from_config
    try:
        model = build(config, **kwargs)
    except (OSError, ValueError, RuntimeError) as err:
        raise PrunekitError(
            f"hf: cannot build the {config.model_type} model of {folder} as {cls.__name__}: {err}"
        ) from err
    return model.eval()


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer saved in folder ``path``; a PrunekitError naming the missing files."""
    folder = _folder(path)
    transformers = transformers_module()
    present = [name for name in TOKENIZER_FILES if (folder / name).is_file()]
    if not present:
        raise PrunekitError(
            f"hf: {folder} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); copy the "
            f"tokenizer files into it, e.g. tokenizer.save_pretrained({str(folder)!r})"
        )
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as err:
        raise PrunekitError(
            f"hf: cannot load the tokenizer in {folder} (found {', '.join(present)}): {err}"
        ) from err


def hf_source(model: nn.Module, **extra: Any) -> dict[str, Any]:
    """``{"kind": "hf", "path", "model_type", "class", **extra}`` for a loaded transformers model.

    ``path`` is the absolute folder it was loaded from (``name_or_path``), or None when it was
    built in memory.
    """
    config = model.config  # type: ignore[attr-defined]
    origin = getattr(model, "name_or_path", "") or getattr(config, "_name_or_path", "")
    path = str(Path(origin).resolve()) if origin and Path(origin).is_dir() else None
    return {
        "kind": "hf",
        "path": path,
        "model_type": config.model_type,
        "class": type(model).__name__,
        **extra,
    }


def _folder(path: str | Path) -> Path:
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise PrunekitError(
            f"hf: {str(path)!r} is not a folder; hf:PATH names a local Hugging Face model folder "
            f"(config.json, weights, tokenizer files); nothing is downloaded"
        )
    if not (folder / "config.json").is_file():
        raise PrunekitError(
            f"hf: {folder} has no config.json; point hf:PATH at the folder save_pretrained wrote"
        )
    return folder


def _config(transformers: ModuleType, folder: Path) -> Any:
    try:
        return transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise PrunekitError(f"hf: {folder}/config.json cannot be read: {err}") from err


def _model_class(
    transformers: ModuleType, config: Any, class_name: str | None, folder: Path
) -> Any:
    if class_name is not None:
        cls = _known_class(transformers, class_name)
        if cls is None:
            raise PrunekitError(
                f"hf: {folder}: {class_name!r} is not a transformers model class; upgrade "
                f"transformers or load the folder with hf:{folder}"
            )
        return cls
    if is_decoder(config):
        return transformers.AutoModelForCausalLM
    for name in getattr(config, "architectures", None) or []:
        cls = _known_class(transformers, name)
        if cls is not None:
            return cls
    return transformers.AutoModel


def _known_class(transformers: ModuleType, name: str) -> Any:
    try:
        cls = getattr(transformers, name, None)
    except (ImportError, RuntimeError):  # a lazily imported class whose extras are missing
        return None
    if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
        return cls
    return None
