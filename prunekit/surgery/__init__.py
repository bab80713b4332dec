"""Every edit of a model lives here, and every edit runs inside one :func:`transaction`.

- ``masks``: pruned weights written as zeros (no hooks, no reparametrization);
- ``swaps``: a layer replaced by a compressed one (codebook, int8, low-bit), recorded for load;
- ``shrink``: layers rebuilt smaller by structured pruning, recorded for load;
- ``depth``: repeated blocks dropped;
- ``transaction``: ``with transaction(model): ...`` puts the model back exactly on failure.

Scoring and planning only read the model; the verbs (``prune_``, ``quantize_``,
``share_weights_``, ``finetune_``, ``shrink_depth_``, ``load``) apply their plan here.
"""

from prunekit.surgery.transaction import Transaction, transaction

__all__ = ["Transaction", "transaction"]
