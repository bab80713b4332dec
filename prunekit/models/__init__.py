"""Example models registered by name (trained on first use and cached); ``prunekit.specs`` turns
a model SPEC into one."""

from prunekit.models.cache import cache_files, cached_record, default_cache_dir, pretrained
from prunekit.models.gpt_tiny import (
    gpt_tiny_corpus,
    gpt_tiny_dir,
    gpt_tiny_tokenizer,
    pretrained_gpt_tiny,
)
from prunekit.models.hf import load_hf, load_tokenizer
from prunekit.models.lenet import LeNet5, LeNet300
from prunekit.models.minilm import load_minilm, minilm_tokenizer
from prunekit.models.registry import (
    ModelInfo,
    TrainingRecipe,
    available,
    build,
    model_info,
    register_model,
)
from prunekit.models.small_cnn import DigitsCNN
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
    "gpt_tiny_corpus",
    "gpt_tiny_dir",
    "gpt_tiny_tokenizer",
    "load_hf",
    "load_minilm",
    "load_tokenizer",
    "minilm_tokenizer",
    "model_info",
    "pretrained",
    "pretrained_gpt_tiny",
    "register_model",
]
