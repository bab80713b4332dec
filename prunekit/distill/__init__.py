"""Knowledge distillation: a student learns a teacher's outputs and, optionally, its hidden states.

``distill_(student, teacher, data, DistillConfig(...))`` trains the student in place on the
fine-tuning loop (``prunekit.finetune_``), so pruned, weight-shared and QAT students keep their
structure. Importing this package registers the ``kd`` method (kind ``distill``).
"""

from prunekit.distill.api import DistillReport, distill_
from prunekit.distill.config import DistillConfig
from prunekit.distill.depth import DepthReport, shrink_depth_
from prunekit.distill.recover import RecoverReport, recover_
from prunekit.distill.step import Distiller
from prunekit.registry import register

register(
    "kd",
    "distill",
    DistillConfig,
    "knowledge distillation from a teacher: soft targets (KL·T²) or embedding matching, "
    "optional hidden states; needs data",
    distill_,
    example={"epochs": 1},
)

__all__ = [
    "DepthReport",
    "DistillConfig",
    "DistillReport",
    "Distiller",
    "RecoverReport",
    "distill_",
    "recover_",
    "shrink_depth_",
]
