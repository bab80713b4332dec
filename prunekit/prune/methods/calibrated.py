"""Fields shared by the one-shot methods that calibrate on layer inputs (Wanda, SparseGPT)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from prunekit.config import UNSTRUCTURED, PruneConfig


class CalibratedConfig(PruneConfig):
    """num_samples: calibration samples (sequences or images) read.
    allocation: ``uniform`` (every block at ``sparsity``), ``owl`` (blocks whose |W|·‖X‖
        scores hold more outliers are pruned less) or ``sensitivity`` (each layer's relative
        output error versus its sparsity is estimated from the dense model's w²·‖X‖², and the
        layers' sparsities minimise the summed error; Optimal Brain Compression's budget
        solve, Frantar et al. 2022). The overall count stays exact; ignored for N:M.
    owl_threshold, owl_lambda: OWL's outlier threshold M and spread λ (Yin et al. 2023).
    sensitivity_lambda: how far a layer's sparsity may move from ``sparsity`` either way.
    device: where each block's calibration and solve run (``cuda``, ``cuda:1``, ``cpu``, or
        ``auto``: the GPU when there is one); each block is moved there and back in turn, so the
        model stays where it is. Unset: where the model is.
    refine: after the one-shot step, swap pruned and kept weights within each output row (within
        each group of M for N:M) while the row's reconstruction error drops, at most
        ``refine_iterations`` swaps per row (DSnoT, Zhang et al. 2023; no training, the sparsity
        and pattern unchanged). SparseGPT then solves the kept weights again for the new mask.

    Transformers are pruned block by block: block i+1 is calibrated on the outputs of the
    already-pruned block i. By default only layers inside the repeated blocks are pruned
    (embeddings and the LM head are left alone).
    """

    num_samples: int = Field(128, ge=1)
    allocation: Literal["uniform", "owl", "sensitivity"] = "uniform"
    owl_threshold: float = Field(5.0, gt=0)
    owl_lambda: float = Field(0.08, ge=0, lt=0.5)
    sensitivity_lambda: float = Field(0.15, ge=0, lt=0.5)
    device: str | None = None
    refine: bool = False
    refine_iterations: int = Field(100, ge=1)

    needs_data: ClassVar[bool] = True
    needs_activations: ClassVar[bool] = True
    # They solve each layer's weights row by row from its inputs: nothing to rank whole units.
    patterns: ClassVar[tuple[str, ...]] = (UNSTRUCTURED, "N:M")

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str | None) -> str | None:
        from prunekit.calibrate import check_device

        return check_device(v)

    @model_validator(mode="after")
    def _layerwise(self) -> CalibratedConfig:
        if self.scope != "layer":
            raise ValueError(
                f"scope={self.scope!r}: {type(self).__name__} prunes layer by layer from each "
                f"layer's inputs; use scope='layer' (and allocation='owl' or 'sensitivity' for "
                f"non-uniform sparsity)"
            )
        return self
