"""Data-parallel fine-tuning: torchrun with 2 CPU ranks (gloo) against one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prunekit.errors import PrunekitError
from prunekit.train.distributed import DataParallel, data_parallel
from tests.train import ddp_script

SCRIPT = Path(ddp_script.__file__)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(SCRIPT), str(out)]  # fmt: skip
    # A rank that failed or diverged would leave the other waiting in a collective: time out.
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def _rank(out: Path, scenario: str, rank: int) -> tuple[dict[str, torch.Tensor], dict]:
    weights = load_file(str(out / f"{scenario}-rank{rank}.safetensors"))
    return weights, json.loads((out / f"{scenario}-rank{rank}.json").read_text())


def _single(scenario: str) -> tuple[dict[str, torch.Tensor], dict]:
    """One process on batches twice the per-rank size, in the same order."""
    x, y = ddp_script.samples()
    data = ddp_script.batches(x, y, 2 * ddp_script.BATCH)
    eval_data = ddp_script.batches(x[:256], y[:256], 64)
    model, report = ddp_script.train(scenario, data, eval_data)
    return model.state_dict(), report


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["plain", "pruned", "distill"])
def test_two_ranks_equal_one_process_on_double_batches(ddp_run: Path, scenario: str) -> None:
    w0, info0 = _rank(ddp_run, scenario, 0)
    w1, info1 = _rank(ddp_run, scenario, 1)
    assert info0["world"] == 2 and info1["rank"] == 1  # finetune_ created the process group
    for name in w0:  # the ranks hold one model (rank 1 started from other weights)
        assert torch.equal(w0[name], w1[name]), name
    assert info0["report"]["history"] == info1["report"]["history"]
    single, report = _single(scenario)
    assert info0["report"]["steps"] == report["steps"] == 2 * ddp_script.STEPS
    for name, value in single.items():
        torch.testing.assert_close(w0[name], value, rtol=1e-4, atol=1e-5, msg=name)
    for ddp, one in zip(info0["report"]["history"], report["history"], strict=True):
        assert ddp["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)
        assert ddp["eval_accuracy"] == pytest.approx(one["eval_accuracy"], abs=1 / 256)
    if scenario == "pruned":
        zeros = {n: single[n] == 0 for n in ("0.weight", "2.weight")}
        for name, mask in zeros.items():
            assert 0.45 < mask.float().mean() < 0.55
            assert torch.equal(w0[name] == 0, mask), name  # the same weights stayed pruned


@pytest.mark.slow
def test_batchnorm_statistics_agree_across_ranks(ddp_run: Path) -> None:
    w0, _ = _rank(ddp_run, "batchnorm", 0)
    w1, _ = _rank(ddp_run, "batchnorm", 1)
    fresh = ddp_script.build("batchnorm").state_dict()
    assert not torch.equal(w0["1.running_mean"], fresh["1.running_mean"])
    for name in w0:
        assert torch.equal(w0[name], w1[name]), name


def test_single_process_is_untouched(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ranks = data_parallel(torch.nn.Linear(2, 2))
    assert (ranks.rank, ranks.world, ranks.is_main) == (0, 1, True)
    data = [torch.ones(1)] * 3
    assert ranks.shard(data) is data
    assert ranks.mean({"train_loss": 0.5}) == {"train_loss": 0.5}
    assert not ranks.all_finite(torch.tensor(float("nan")))


def test_world_size_without_torchrun_variables_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(PrunekitError, match="WORLD_SIZE=2 but RANK, MASTER_ADDR, MASTER_PORT"):
        data_parallel(torch.nn.Linear(2, 2))


def test_too_few_batches_for_the_ranks() -> None:
    with pytest.raises(PrunekitError, match="1 batches cannot be shared by 2 ranks"):
        DataParallel(rank=0, world=2).shard([torch.ones(1)])
    assert len(DataParallel(rank=1, world=2).shard([torch.ones(1)] * 5)) == 2
