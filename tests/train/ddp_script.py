"""Fine-tunes small digits classifiers; run by ``test_distributed`` under torchrun (2 ranks, gloo)
and imported by it for the single-process reference.

Under torchrun every rank writes ``OUT/<scenario>-rank<r>.safetensors`` (the trained weights) and
``OUT/<scenario>-rank<r>.json`` (the report and what the rank saw). The script never creates the
process group itself: ``prunekit.finetune_`` must do it from torchrun's environment variables.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch import nn

import prunekit as pk
from prunekit.data import load_data
from prunekit.distill import DistillConfig, distill_

BATCH = 32  # per rank; the single-process reference takes batches of 2 * BATCH
STEPS = 11  # global steps per epoch; the ranks get 2 * STEPS + 1 batches (one left over)
SCENARIOS = ("plain", "pruned", "batchnorm", "distill")


def samples() -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``(2·STEPS + 1)·BATCH`` digits training samples: ``x [N, 64]``, ``y [N]``."""
    train = load_data("digits").train
    n = (2 * STEPS + 1) * BATCH
    x = torch.stack([train[i][0].reshape(-1) for i in range(n)])
    y = torch.stack([torch.as_tensor(train[i][1]) for i in range(n)])
    return x, y


def batches(x: torch.Tensor, y: torch.Tensor, size: int) -> list[tuple[torch.Tensor, ...]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x) - size + 1, size)]


def build(scenario: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if scenario == "distill":  # a narrower student: its hidden states need a projection
        return nn.Sequential(nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 10))
    if scenario == "batchnorm":
        return nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
    return nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))


def train(scenario: str, data: list, eval_data: list, seed: int = 0) -> tuple[nn.Module, dict]:
    """Fine-tune the scenario's model from the init of ``seed``; returns it and the report."""
    model = build(scenario, seed)
    if scenario == "distill":
        teacher = build("plain", seed=1)
        config = DistillConfig(epochs=2, lr=1e-2, hidden="auto", max_grad_norm=1.0)
        report = distill_(model, teacher, data, config, eval_data=eval_data, progress=False)
        return model, report.to_dict()
    kwargs: dict = {}
    if scenario == "pruned":
        # Pruned, then trained with a teacher and clipped gradients: the loop's other paths.
        pk.prune_(model, pk.MagnitudeConfig(sparsity=0.5))
        kwargs = {"teacher": pk.teacher_copy(build("plain", seed=1)), "max_grad_norm": 1.0}
    report = pk.finetune_(
        model, data, epochs=2, lr=1e-2, eval_data=eval_data, progress=False, **kwargs
    )
    return model, report.to_dict()


def main(out: Path) -> None:
    rank = int(os.environ["RANK"])
    x, y = samples()
    data = batches(x, y, BATCH)
    eval_data = batches(x[:256], y[:256], 64)
    for scenario in SCENARIOS:
        # Rank 1 starts from other weights: the loop must start every rank from rank 0's.
        model, report = train(scenario, data, eval_data, seed=rank)
        info = {"report": report, "world": dist.get_world_size(), "rank": dist.get_rank()}
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(out / f"{scenario}-rank{rank}.safetensors"))
        (out / f"{scenario}-rank{rank}.json").write_text(json.dumps(info))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
