"""Repairs for post-training static int8 (``Int8StaticConfig(equalize=…, bias_correction=…,
rounding=…)``): cross-layer equalization, empirical bias correction, AdaRound.

Each algorithm's math is plain tensor functions in its own module (``equalize``, ``adaround``);
``region`` runs them on one static-int8 region around torch.ao's convert.
"""

from prunekit.quantize.repairs.adaround import learn_rounding, nearest_codes
from prunekit.quantize.repairs.equalize import equalize_, find_pairs, input_ranges, output_ranges
from prunekit.quantize.repairs.region import RepairStats, float_copy, fold_batchnorm, repair_layers_

__all__ = [
    "RepairStats",
    "equalize_",
    "find_pairs",
    "float_copy",
    "fold_batchnorm",
    "input_ranges",
    "learn_rounding",
    "nearest_codes",
    "output_ranges",
    "repair_layers_",
]
