"""``prunekit prune --low-memory``: prune a Hugging Face model folder one block at a time.

For models larger than the memory available: the folder's safetensors files are read one block
at a time (:func:`prunekit.prune_folder`), and the pruned folder is written to ``OUT/model``
with ``OUT/report.json`` and ``OUT/report.md``. No before/after evaluation (it would load the
whole model twice).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prunekit.cli.common import output_dir, print_json, show, write_reports
from prunekit.config import PruneConfig
from prunekit.errors import PrunekitError
from prunekit.prune.methods.calibrated import CalibratedConfig


def prune_low_memory(
    model: str, config: PruneConfig, data: str | None, seq_len: int, out: Path, json_out: bool
) -> None:
    """Check the options, calibrate on ``data`` (text:FILE, tokenized by the folder's own
    tokenizer, fixed windows of ``seq_len`` tokens) and write the pruned folder."""
    from torch.utils.data import DataLoader

    from prunekit.data import load_data
    from prunekit.models.hf import load_tokenizer
    from prunekit.prune.folder import prune_folder

    if not model.startswith("hf:"):
        raise PrunekitError(
            f"--low-memory reads a Hugging Face model folder one block at a time; got --model "
            f"{model!r}: give --model hf:PATH"
        )
    if not isinstance(config, CalibratedConfig):
        raise PrunekitError(
            f"--low-memory prunes with a calibration-based method (wanda, sparsegpt); got "
            f"{config.method!r}"
        )
    if data is None or not data.startswith("text:"):
        raise PrunekitError(
            f"--low-memory calibrates on text; got --data {data!r}: give --data text:FILE"
        )
    folder = model.removeprefix("hf:")
    splits = load_data(data, tokenizer=load_tokenizer(folder), seq_len=seq_len, mode="stream")
    batches = DataLoader(splits.train, batch_size=1)
    with output_dir(out) as tmp:
        report = prune_folder(folder, tmp / "model", config, batches)
        summary: dict[str, Any] = {"model": model, "data": data, **report.to_dict()}
        write_reports(tmp, summary, report.to_markdown())
    if json_out:
        print_json(summary)
    else:
        show(report.to_markdown())
