"""Hugging Face models read from a local folder (``hf:PATH``): never downloads, never runs code.

A folder is data: ``trust_remote_code=False`` on every transformers call, so a config.json
with an ``auto_map`` (a model that needs the folder's own Python) is refused, never imported,
and never prompts. What config.json asks to build is sized first (:func:`check_config_size`):
layer counts within bounds, and the parameters, counted on the meta device, within what the
folder's weights and the machine's memory can hold; values transformers accepts but a layer
would trip over at its first forward (a type other than the default's, NaN, a negative head
count) are refused there too.

Decoders (``config.is_decoder``, an architecture ending in ``ForCausalLM``/``LMHeadModel``, or a
known decoder ``model_type``) load with ``AutoModelForCausalLM``, so they carry their LM head
and compute their own loss from ``labels``; other models load as the transformers class their
``architectures`` names, else with ``AutoModel``. Weights keep the checkpoint's dtype.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from prunekit.errors import PrunekitError, quote

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
WEIGHT_SUFFIXES = (".safetensors", ".bin")
# The deepest real transformers have a few hundred blocks; a config asking for more is damaged.
MAX_LAYERS = 1024
# from_pretrained fills the model from the folder's weights: a config that builds far more than
# they hold (beyond tied copies and a fresh task head) is refused before it is built.
MAX_WEIGHTS_RATIO, WEIGHTS_SLACK = 4, 256 << 20
MAX_CONFIG_BYTES, MAX_LABELS = 16 << 20, 1 << 20
NO_CODE = {"trust_remote_code": False, "local_files_only": True}


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
    if any(name.endswith(DECODER_SUFFIXES) for name in _architectures(config)):
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
    weights = sum(f.stat().st_size for f in folder.iterdir() if f.suffix in WEIGHT_SUFFIXES)
    check_config_size(
        folder, config, _builder(cls), max_bytes=MAX_WEIGHTS_RATIO * weights + WEIGHTS_SLACK
    )
    try:
        model = cls.from_pretrained(str(folder), **NO_CODE)
    except Exception as err:  # the folder is data: any way it fails to load is a bad folder
        raise PrunekitError(
            f"hf: cannot load the {config.model_type} model in {folder} as {cls.__name__} "
            f"({type(err).__name__}: {_clip(err, 300)})"
        ) from err
    return model.eval()


def build_hf_model(
    path: str | Path,
    class_name: str | None = None,
    dtype: Any = None,
    check_bytes: Callable[[int], None] | None = None,
) -> nn.Module:
    """The architecture ``config.json`` in folder ``path`` describes, freshly initialised, in
    eval mode: for weights that do not fit the config (a structurally pruned model), which are
    loaded after its shapes are restored. ``dtype``: of the floating-point weights.
    ``check_bytes(n)`` raises if the ``n`` bytes the architecture needs are too many for the
    caller (e.g. far more than an artifact's weights can fill)."""
    folder = _folder(path)
    transformers = transformers_module()
    config = _config(transformers, folder)
    cls = _model_class(transformers, config, class_name, folder)
    kwargs = {} if dtype is None else {"dtype": dtype}
    build = _builder(cls)
    needed = check_config_size(folder, config, build, dtype=dtype)
    if check_bytes is not None:
        check_bytes(needed)
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
        return transformers.AutoTokenizer.from_pretrained(str(folder), **NO_CODE)
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
    _check_label_count(folder)
    # A value of the wrong type fails anywhere in transformers' config code (its validators,
    # its repr, to_dict): every failure to read the file, up to a dict again, is a bad file.
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), **NO_CODE)
        config.to_dict()
    except Exception as err:
        raise PrunekitError(
            f"hf: {folder}/config.json cannot be read ({type(err).__name__}: {_clip(err, 300)}); "
            f"prunekit never runs a folder's own code (auto_map), so only architectures "
            f"transformers ships load"
        ) from None
    return config


def _check_label_count(folder: Path) -> None:
    # transformers makes a label name for each of num_labels while reading the config, before
    # anything can be sized: 10**30 labels fill any memory.
    file = folder / "config.json"
    if file.stat().st_size > MAX_CONFIG_BYTES:
        raise PrunekitError(f"hf: {file} is over {MAX_CONFIG_BYTES:,} bytes; not a config")
    try:
        labels = json.loads(file.read_text(encoding="utf-8")).get("num_labels")
    except (ValueError, RecursionError, AttributeError):
        return  # not a JSON object: transformers says so
    if labels is not None and (
        not isinstance(labels, int) or isinstance(labels, bool) or not 0 <= labels <= MAX_LABELS
    ):
        raise PrunekitError(
            f"hf: {file} asks for num_labels={quote(labels)}; at most {MAX_LABELS:,} labels"
        )


def check_config_size(
    folder: Path,
    config: Any,
    build: Callable[..., nn.Module],
    max_bytes: int | None = None,
    dtype: torch.dtype | None = None,
) -> int:
    """Bytes of the parameters and buffers ``config`` builds (floating-point ones in ``dtype``,
    default: the config's own), counted on the meta device (no memory, no initialisation),
    after bounding its layer counts and checking its values (:func:`_value_problem`, head
    counts). Refuses a config that cannot be built, one needing more than ``max_bytes`` or than
    the memory available."""
    fields = config.to_dict()
    for key, value in _layer_counts(fields):
        if value > MAX_LAYERS or value < 0:
            raise PrunekitError(
                f"hf: {folder}/config.json asks for {key}={value}; prunekit builds at most "
                f"{MAX_LAYERS} layers per stack; the config is damaged"
            )
    problem = _value_problem(config, fields)
    if problem:
        raise PrunekitError(f"hf: {folder}/config.json: {problem}; the config is damaged")
    bad = _head_counts(fields)
    if bad:
        # A negative count can still divide the width (BERT builds with -4 heads of -8) and
        # then fails at the first forward.
        key, value = bad[0]
        raise PrunekitError(
            f"hf: {folder}/config.json asks for {key}={value}; head counts and sizes are "
            f"positive integers; the config is damaged"
        )
    dtype = dtype or _config_dtype(config)
    try:
        with torch.device("meta"):
            probe = build(config, **({} if dtype is None else {"dtype": dtype}))
    except Exception as err:  # any config error surfaces here, not half-way through a build
        raise PrunekitError(
            f"hf: {folder}/config.json does not describe a model transformers can build "
            f"({type(err).__name__}: {' '.join(str(err).split())[:200]}); fix or re-save it"
        ) from None
    tensors = {id(t): t for t in [*probe.parameters(), *probe.buffers()]}
    needed = sum(t.numel() * t.element_size() for t in tensors.values())
    if max_bytes is not None and needed > max_bytes:
        raise PrunekitError(
            f"hf: {folder}/config.json builds a model of {needed:,} bytes, far more than the "
            f"folder's weights ({max_bytes:,} bytes at most); the config does not match them"
        )
    available = _available_memory()
    if available is not None and needed > available:
        raise PrunekitError(
            f"hf: the model in {folder} needs {needed / 2**30:.1f} GiB; "
            f"{available / 2**30:.1f} GiB of memory is available; free memory or use a machine "
            f"with more"
        )
    return needed


def _layer_counts(config: dict[str, Any], prefix: str = "") -> list[tuple[str, int]]:
    # Layer counts are named *layers* (num_hidden_layers, n_layer, encoder_layers) or *depths*
    # (Swin/ConvNeXt stage lists); sub-configs (text_config, vision_config) nest.
    out = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += _layer_counts(value, f"{name}.")
        elif "layer" in name.lower() or "depth" in name.lower():
            values = value if isinstance(value, list) else [value]
            ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
            if ints:
                out.append((name, sum(ints) if isinstance(value, list) else ints[0]))
    return out


def _value_problem(config: Any, fields: dict[str, Any]) -> str | None:
    """What is wrong with a value transformers accepts but a layer trips over at its first
    forward: a type other than the config class's default's (``chunk_size_feed_forward:
    "x"``), a non-finite float, a dropout probability outside [0, 1]."""
    try:
        defaults = type(config)().to_dict()
    except Exception:  # a composite config without defaults: nothing to compare with
        defaults = {}
    for key, value in fields.items():
        if isinstance(value, float) and not math.isfinite(value):
            return f"{key} is {value}; expected a finite number"
        default = defaults.get(key)
        if value is None or default is None or isinstance(default, list | dict):
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        fits = {
            bool: isinstance(value, bool),
            int: number and isinstance(value, int),
            float: number,
            str: isinstance(value, str),
        }.get(type(default), True)
        if not fits:
            return f"{key} is {quote(value)}; expected a {type(default).__name__}"
        dropout = "dropout" in key or "pdrop" in key or key.endswith("_prob")
        if number and dropout and not 0 <= value <= 1:
            return f"{key} is {quote(value)}; a dropout probability is in [0, 1]"
    return None


def _head_counts(config: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """The head counts and sizes (``num_attention_heads``, ``n_head``, ``head_dim``, Swin's
    ``num_heads`` lists; sub-configs nest) that are not positive: ``(key, value)``."""
    out = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += _head_counts(value, f"{name}.")
        elif "head" in name.lower() and ("num" in name.lower() or key in ("n_head", "head_dim")):
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, int) and not isinstance(v, bool) and v <= 0 for v in values):
                out.append((name, value))
    return out


def _architectures(config: Any) -> list[str]:
    names = getattr(config, "architectures", None)
    return [n for n in names if isinstance(n, str)] if isinstance(names, list | tuple) else []


def _clip(err: Exception, limit: int) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _config_dtype(config: Any) -> torch.dtype | None:
    # Read from the instance: newer transformers warn on the deprecated torch_dtype property.
    fields = vars(config)
    dtype = fields.get("dtype") or fields.get("torch_dtype")
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else None


def _available_memory() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _builder(cls: Any) -> Callable[..., nn.Module]:
    return cls.from_config if hasattr(cls, "from_config") else cls._from_config


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
    for name in _architectures(config):
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
