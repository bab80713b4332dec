"""prunekit: make trained PyTorch models smaller and faster while keeping their accuracy.

import prunekit as pk
report = pk.prune_(model, pk.MagnitudeConfig(sparsity=0.9, scope="global"))
pk.finetune_(model, train_batches, epochs=2)
print(pk.compare(dense, model, data=val_batches))
"""

from prunekit import data, models
from prunekit.accelerate import AccelerateConfig, AccelerateReport, accelerate_
from prunekit.analyze import (
    ParetoPoint,
    SensitivityProfile,
    analyze_sensitivity,
    map_trials,
    plot_pareto,
    plot_sensitivity,
)
from prunekit.artifact.io import load, save
from prunekit.auto import (
    AutoConfig,
    AutoReport,
    BitsReport,
    BitsSearchConfig,
    auto_compress,
    search_bits,
)
from prunekit.config import BaseConfig, PruneConfig
from prunekit.distill import (
    DepthReport,
    DistillConfig,
    DistillReport,
    RecoverReport,
    distill_,
    recover_,
    shrink_depth_,
)
from prunekit.errors import DataNotFoundError, PrunekitError
from prunekit.export import ExecuTorchReport, ExportReport, export_executorch, export_onnx
from prunekit.factorize import FactorizeReport, LowRankConfig, factorize_
from prunekit.measure import Comparison, Measurement, compare, measure
from prunekit.measure.onnx import OnnxLatency, OnnxModule, onnx_latency
from prunekit.measure.runtimes import RuntimeReport, RuntimeResult, measure_runtimes
from prunekit.prune import (
    AGP,
    BNScaleConfig,
    Iterative,
    MagnitudeConfig,
    MovementConfig,
    OneShot,
    PruneReport,
    RandomConfig,
    ReconstructionConfig,
    SparseGPTConfig,
    TaylorConfig,
    WandaConfig,
    prune_,
)
from prunekit.prune.folder import prune_folder
from prunekit.prune.structured import StructuredReport
from prunekit.quantize import (
    GPTQConfig,
    Int8DynamicConfig,
    Int8StaticConfig,
    QATConfig,
    QuantizeReport,
    RTNConfig,
    SmoothQuantConfig,
    convert_,
    prepare_qat_,
    quantize_,
)
from prunekit.recipe import Recipe, RecipeError, RecipeReport, run_recipe
from prunekit.registry import MethodInfo, methods
from prunekit.report import Report
from prunekit.share import KMeansConfig, ShareReport, share_weights_
from prunekit.train import FinetuneConfig, FinetuneReport, finetune_, teacher_copy

__version__ = "0.1.0"

__all__ = [
    "AGP",
    "AccelerateConfig",
    "AccelerateReport",
    "AutoConfig",
    "AutoReport",
    "BNScaleConfig",
    "BaseConfig",
    "BitsReport",
    "BitsSearchConfig",
    "Comparison",
    "DataNotFoundError",
    "DepthReport",
    "DistillConfig",
    "DistillReport",
    "ExecuTorchReport",
    "ExportReport",
    "FactorizeReport",
    "FinetuneConfig",
    "FinetuneReport",
    "GPTQConfig",
    "Int8DynamicConfig",
    "Int8StaticConfig",
    "Iterative",
    "KMeansConfig",
    "LowRankConfig",
    "MagnitudeConfig",
    "Measurement",
    "MethodInfo",
    "MovementConfig",
    "OneShot",
    "OnnxLatency",
    "OnnxModule",
    "ParetoPoint",
    "PruneConfig",
    "PruneReport",
    "PrunekitError",
    "QATConfig",
    "QuantizeReport",
    "RTNConfig",
    "RandomConfig",
    "Recipe",
    "RecipeError",
    "RecipeReport",
    "ReconstructionConfig",
    "RecoverReport",
    "Report",
    "RuntimeReport",
    "RuntimeResult",
    "SensitivityProfile",
    "ShareReport",
    "SmoothQuantConfig",
    "SparseGPTConfig",
    "StructuredReport",
    "TaylorConfig",
    "WandaConfig",
    "__version__",
    "accelerate_",
    "analyze_sensitivity",
    "auto_compress",
    "compare",
    "convert_",
    "data",
    "distill_",
    "export_executorch",
    "export_onnx",
    "factorize_",
    "finetune_",
    "load",
    "map_trials",
    "measure",
    "measure_runtimes",
    "methods",
    "models",
    "onnx_latency",
    "plot_pareto",
    "plot_sensitivity",
    "prepare_qat_",
    "prune_",
    "prune_folder",
    "quantize_",
    "recover_",
    "run_recipe",
    "save",
    "search_bits",
    "share_weights_",
    "shrink_depth_",
    "teacher_copy",
]
