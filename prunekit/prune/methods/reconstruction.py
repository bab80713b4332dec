"""Reconstruction-error channel pruning (ThiNet, Luo et al. 2017; He et al. 2017): the channels
whose removal, with the layers reading them refit by least squares, changes those layers'
outputs least go; then the refit is done. Structured only: the error is a whole channel's."""

from __future__ import annotations

from typing import ClassVar

from prunekit.config import PruneConfig
from prunekit.prune.structured.reconstruct import reconstruction_groups
from prunekit.registry import register


class ReconstructionConfig(PruneConfig):
    """Rank channels (or heads) by the output error their removal causes in the layers that
    read them, on ``reconstruct_samples`` calibration samples; with ``reconstruct`` (on by
    default) those layers are then refit to the unpruned model's outputs."""

    pattern: str = "channel"
    reconstruct: bool = True

    needs_data: ClassVar[bool] = True
    needs_activations: ClassVar[bool] = True
    # The error is measured per input channel of a layer: nothing to say about single weights.
    patterns: ClassVar[tuple[str, ...]] = ("channel", "head")


register(
    "reconstruction", "prune", ReconstructionConfig,
    "channels whose removal least changes the next layer's output (least squares on "
    "calibration data), then that layer refit (structured)",
    reconstruction_groups, group_scores=reconstruction_groups, example={"sparsity": 0.5},
)  # fmt: skip
