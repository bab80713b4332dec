"""Example models registered by name: architecture, the dataset each trains on, its recipe."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pydantic import Field
from torch import nn

from prunekit.errors import PrunekitError, quote
from prunekit.models import gpt_tiny
from prunekit.models.lenet import LeNet5, LeNet300
from prunekit.models.minilm import (
    HIDDEN,
    PretrainedWeights,
    load_minilm,
    minilm_architecture,
    minilm_text_spec,
)
from prunekit.models.mobilenet import MobileNetV2Small
from prunekit.models.small_cnn import DigitsCNN
from prunekit.models.vgg import VGGBN
from prunekit.train.config import FinetuneConfig


class TrainingRecipe(FinetuneConfig):
    """How ``pretrained`` trains a builtin from scratch: a :class:`FinetuneConfig` (the loop's
    settings, AdamW with warm-up + cosine LR by default) and the batch size of the loader."""

    batch_size: int = Field(128, ge=1)


class Recipe(Protocol):
    """What the cache keys a trained builtin on: any recipe that serialises to a dict."""

    def to_dict(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: ``factory(**kwargs)`` builds it untrained for ``dataset``.

    ``input_shape`` is one sample's shape without the batch dimension, e.g. ``(1, 28, 28)``;
    ``num_classes`` the width of the last output dimension.
    ``task`` is ``"classification"`` (``[B, *input_shape]`` → logits ``[B, num_classes]``) or
    ``"causal-lm"`` (token ids ``[B, T]`` → logits ``[B, T, vocab]``) or ``"embedding"``
    (token ids ``[B, T]`` → token states ``[B, T, num_classes]``, mean-pooled into sentences).
    ``loader()``, when given, returns the trained model in place of ``pretrained`` training
    ``factory()`` on ``dataset`` with ``recipe`` (pretrained elsewhere, e.g. ``minilm``, or
    trained and cached by its own module, e.g. ``gpt-tiny``). ``dataset`` is a data SPEC, or a
    function returning one when it names a file made on first use (``text:FILE``).
    """

    name: str
    factory: Callable[..., nn.Module]
    dataset: str | Callable[[], str]
    input_shape: tuple[int, ...]
    num_classes: int
    recipe: TrainingRecipe | Recipe
    summary: str
    task: str = "classification"
    loader: Callable[[], nn.Module] | None = None

    def data_spec(self) -> str:
        """The data SPEC of ``dataset`` (calling it when it is a function)."""
        return self.dataset() if callable(self.dataset) else self.dataset


_MODELS: dict[str, ModelInfo] = {}


def register_model(info: ModelInfo) -> None:
    """Make ``info.name`` buildable, trainable by ``pretrained``, loadable as ``builtin:NAME``."""
    if info.name in _MODELS:
        raise RuntimeError(f"model {info.name!r} is registered twice")
    _MODELS[info.name] = info


def available() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_MODELS)


def model_info(name: str) -> ModelInfo:
    """The registration of ``name``; a PrunekitError listing the known names otherwise."""
    info = _MODELS.get(name)
    if info is None:
        raise PrunekitError(
            f"model name {quote(name)} is not a built-in model; choose one of: "
            f"{', '.join(available())}"
        )
    return info


def builtin_source(model: nn.Module) -> dict[str, object] | None:
    """``{"kind": "builtin", …}`` when ``model`` is a registered example architecture with its
    default shapes (so ``prunekit.load`` can rebuild it by name), else None."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for info in _MODELS.values():
        if info.factory is type(model):
            reference = info.factory()
            if {k: tuple(v.shape) for k, v in reference.state_dict().items()} == shapes:
                return {
                    "kind": "builtin",
                    "name": info.name,
                    "kwargs": {},
                    "dataset": info.data_spec(),
                }
    return None


def build(name: str, **kwargs: object) -> nn.Module:
    """A fresh, untrained instance of the registered model ``name`` (kwargs go to its class)."""
    info = model_info(name)
    try:
        return info.factory(**kwargs)
    except TypeError as err:
        raise PrunekitError(
            f"model {quote(name)}: bad keyword arguments {quote(kwargs, 200)}: {str(err)[:200]}"
        ) from err


_FMNIST = ("fashion-mnist", (1, 28, 28))

register_model(
    ModelInfo(
        "lenet300",
        LeNet300,
        *_FMNIST,
        num_classes=10,
        recipe=TrainingRecipe(epochs=10, lr=1e-3, batch_size=128),
        summary="LeNet-300-100 MLP, 266k weights (Han et al. 2015)",
    )
)
register_model(
    ModelInfo(
        "lenet5",
        LeNet5,
        *_FMNIST,
        num_classes=10,
        recipe=TrainingRecipe(epochs=6, lr=1e-3, batch_size=128),
        summary="LeNet-5 (Caffe variant), 431k weights",
    )
)
register_model(
    ModelInfo(
        "vgg-bn",
        VGGBN,
        *_FMNIST,
        num_classes=10,
        recipe=TrainingRecipe(epochs=3, lr=2e-3, batch_size=128, weight_decay=5e-4),
        summary="small VGG-style CNN with BatchNorm, 6 convs, ~29 MMACs/sample",
    )
)
register_model(
    ModelInfo(
        "mobilenet-v2",
        MobileNetV2Small,
        *_FMNIST,
        num_classes=10,
        recipe=TrainingRecipe(epochs=2, lr=3e-3, batch_size=128, weight_decay=5e-4),
        summary="MobileNetV2-style CNN: inverted residuals, depthwise 3×3, ~4 MMACs/sample",
    )
)
register_model(
    ModelInfo(
        "digits-cnn",
        DigitsCNN,
        "digits",
        (1, 8, 8),
        num_classes=10,
        recipe=TrainingRecipe(epochs=10, lr=1e-3, batch_size=64),
        summary="small CNN with BatchNorm for 8×8 digits, trains in seconds",
    )
)
register_model(
    ModelInfo(
        gpt_tiny.NAME,
        gpt_tiny.build_gpt_tiny,
        gpt_tiny.calib_spec,
        (gpt_tiny.RECIPE.seq_len,),
        num_classes=gpt_tiny.RECIPE.vocab_size,
        recipe=gpt_tiny.RECIPE,
        summary="GPT-2-style causal LM, 4 layers × 256 wide, 4.3M params, trained on fortunes",
        task="causal-lm",
        loader=gpt_tiny.load_gpt_tiny,
    )
)
register_model(
    ModelInfo(
        "minilm",
        minilm_architecture,
        minilm_text_spec,
        (128,),
        num_classes=HIDDEN,
        recipe=PretrainedWeights(),
        summary="all-MiniLM-L6-v2 sentence encoder, 22.7M params, pretrained (prunekit[minilm])",
        task="embedding",
        loader=load_minilm,
    )
)
