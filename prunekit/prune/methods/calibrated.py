"""Fields shared by the one-shot methods that calibrate on layer inputs (Wanda, SparseGPT)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from prunekit.config import UNSTRUCTURED, PruneConfig


class CalibratedConfig(PruneConfig):
    """num_samples: calibration samples (sequences or images) read.
    allocation: ``uniform`` (every block at ``sparsity``) or ``owl`` (blocks whose |W|·‖X‖
        scores hold more outliers are pruned less; the overall count stays exact).
    owl_threshold, owl_lambda: OWL's outlier threshold M and spread λ (Yin et al. 2023).

    Transformers are pruned block by block: block i+1 is calibrated on the outputs of the
    already-pruned block i. By default only layers inside the repeated blocks are pruned
    (embeddings and the LM head are left alone).
    """

    num_samples: int = Field(128, ge=1)
    allocation: Literal["uniform", "owl"] = "uniform"
    owl_threshold: float = Field(5.0, gt=0)
    owl_lambda: float = Field(0.08, ge=0, lt=0.5)

    needs_data: ClassVar[bool] = True
    needs_activations: ClassVar[bool] = True
    # They solve each layer's weights row by row from its inputs: nothing to rank whole units.
    patterns: ClassVar[tuple[str, ...]] = (UNSTRUCTURED, "N:M")

    @model_validator(mode="after")
    def _layerwise(self) -> CalibratedConfig:
        if self.scope != "layer":
            raise ValueError(
                f"scope={self.scope!r}: {type(self).__name__} prunes layer by layer from each "
                f"layer's inputs; use scope='layer' (and allocation='owl' for non-uniform "
                f"sparsity across blocks)"
            )
        return self
