"""Training: one readable, mask-aware fine-tuning loop, its config and its losses."""

from prunekit.train.config import FinetuneConfig
from prunekit.train.loop import FinetuneReport, finetune_, teacher_copy

__all__ = ["FinetuneConfig", "FinetuneReport", "finetune_", "teacher_copy"]
