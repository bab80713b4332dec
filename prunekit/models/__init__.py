"""Example models registered by name (trained on first use and cached) and the model SPEC parser."""

from prunekit.models.cache import cache_files, cached_record, default_cache_dir, pretrained
from prunekit.models.lenet import LeNet5, LeNet300
from prunekit.models.registry import (
    ModelInfo,
    TrainingRecipe,
    available,
    build,
    model_info,
    register_model,
)
from prunekit.models.small_cnn import DigitsCNN
from prunekit.models.spec import load_model
from prunekit.models.vgg import VGGBN

__all__ = [
    "VGGBN",
    "DigitsCNN",
    "LeNet5",
    "LeNet300",
    "ModelInfo",
    "TrainingRecipe",
    "available",
    "build",
    "cache_files",
    "cached_record",
    "default_cache_dir",
    "load_model",
    "model_info",
    "pretrained",
    "register_model",
]
