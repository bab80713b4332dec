"""``accelerate_``: per layer, swap to the fastest kernel measured for the given inputs (dense,
sparse CSR or int8 dynamic), where its outputs stay within tolerance.

    report = pk.accelerate_(model, example_inputs=(x,), batch_sizes=[1, 64])
"""

from prunekit.accelerate.api import accelerate_
from prunekit.accelerate.config import AccelerateConfig
from prunekit.accelerate.kernels import CSRLinear
from prunekit.accelerate.report import AccelerateReport, LayerKernel

__all__ = ["AccelerateConfig", "AccelerateReport", "CSRLinear", "LayerKernel", "accelerate_"]
