"""Weight sharing: k-means codebooks per layer, fine-tunable shared values, stored indices.

``share_weights_(model, KMeansConfig(bits=5))`` clusters each layer's non-zero weights into
``2**bits`` values (Deep Compression, Han et al. 2016) and swaps the layer for a codebook layer;
``finetune_`` then trains the shared values. Importing this package registers the ``kmeans``
method and the ``shared`` module swap.
"""

from prunekit.registry import register
from prunekit.share.api import LayerShare, ShareReport, share_weights_
from prunekit.share.config import KMeansConfig
from prunekit.share.kmeans import Codebook, cluster, decode, index_dtype
from prunekit.share.layers import SharedConv, SharedLayer, SharedLinear

register(
    "kmeans",
    "share",
    KMeansConfig,
    "k-means codebook: 2^bits shared values per layer (Han et al. 2016); no data",
    share_weights_,
    example={"bits": 4},
)

__all__ = [
    "Codebook",
    "KMeansConfig",
    "LayerShare",
    "ShareReport",
    "SharedConv",
    "SharedLayer",
    "SharedLinear",
    "cluster",
    "decode",
    "index_dtype",
    "share_weights_",
]
