"""Training: one readable, mask-aware fine-tuning loop and its losses."""

from prunekit.train.loop import FinetuneReport, finetune_, teacher_copy

__all__ = ["FinetuneReport", "finetune_", "teacher_copy"]
