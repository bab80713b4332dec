"""Low-rank factorization: each layer's weight replaced by its truncated SVD, as two layers.

``factorize_(model, LowRankConfig(energy=0.9))`` splits each chosen ``nn.Linear`` into two
(in -> rank -> out) and each ``nn.Conv2d`` into a k×k conv to ``rank`` channels and a 1×1 conv
(Denton et al. 2014); ``finetune_`` then trains both. Importing this package registers the
``svd`` method and the ``low-rank`` module swap.
"""

from prunekit.factorize.api import FactorizeReport, LayerFactorize, factorize_
from prunekit.factorize.config import LowRankConfig
from prunekit.factorize.layers import LowRankConv2d, LowRankLayer, LowRankLinear
from prunekit.factorize.svd import Spectrum, choose_rank, spectrum
from prunekit.registry import register

register(
    "svd",
    "factorize",
    LowRankConfig,
    "truncated SVD: each Linear/Conv2d becomes two low-rank layers (Denton et al. 2014); no data",
    factorize_,
    example={"rank_ratio": 0.25},
)

__all__ = [
    "FactorizeReport",
    "LayerFactorize",
    "LowRankConfig",
    "LowRankConv2d",
    "LowRankLayer",
    "LowRankLinear",
    "Spectrum",
    "choose_rank",
    "factorize_",
    "spectrum",
]
