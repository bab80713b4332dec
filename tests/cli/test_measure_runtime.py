"""``prunekit measure DIR --runtime …``: the model in each runtime, one row each."""

from __future__ import annotations

import json

import pytest
import torch

import prunekit as pk
from prunekit.cli import main
from prunekit.models import DigitsCNN

# Runs in PyTorch, but branches on a tensor's value, which no exporter can trace.
BRANCHY = """
import torch
from torch import nn

class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = x.flatten(1)
        if x.mean() > 0:
            x = x * 2
        return self.fc(x)

def make():
    torch.manual_seed(0)
    return Branchy()
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A builtin architecture saved by pk.save: its manifest names the digits dataset."""
    torch.manual_seed(0)
    return pk.save(DigitsCNN().eval(), tmp_path_factory.mktemp("run") / "model")


def test_runtime_all_gives_a_row_per_runtime(saved, capsys):
    code = main(["measure", str(saved), "--runtime", "all", "--batch-size", "4", "--json"])
    assert code == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out)
    assert out["batch_sizes"] == [1, 4]
    rows = {r["runtime"]: r for r in out["runtimes"]}
    assert list(rows) == ["torch", "onnxruntime", "executorch"]
    for r in rows.values():
        assert r["error"] is None, r["error"]
        assert r["bytes"] > 0
        assert sorted(r["latency_ms"]) == ["1", "4"] and min(r["latency_ms"].values()) > 0
        assert r["accuracy"] == pytest.approx(rows["torch"]["accuracy"], abs=1 / 360)


def test_quantize_int8_calibrates_on_the_training_split_in_each_runtime(saved, capsys):
    args = ["measure", str(saved), "--runtime", "torch,executorch", "--quantize", "int8"]
    assert main([*args, "--no-latency", "--json"]) == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out)
    torch_row, pte_row = out["runtimes"]
    assert out["config"]["quantize"] == "int8"
    assert torch_row["note"] == "int8 by quantize_" and pte_row["note"].startswith("int8 XNNPACK")
    assert torch_row["error"] is None and pte_row["error"] is None


def test_one_runtime_as_a_table(saved, capsys):
    code = main(["measure", str(saved), "--runtime", "onnxruntime", "--no-latency"])
    assert code == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "onnxruntime" in text and "model.onnx" in text and "executorch" not in text


def test_an_unexportable_model_gets_a_row_with_the_reason(tmp_path, capsys):
    factory = tmp_path / "branchy.py"
    factory.write_text(BRANCHY)
    args = ["measure", f"py:{factory}:make", "--data", "digits", "--json", "--no-latency"]
    assert main([*args, "--runtime", "torch,onnxruntime"]) == 0, capsys.readouterr().err
    torch_row, onnx_row = json.loads(capsys.readouterr().out)["runtimes"]
    assert torch_row["error"] is None and torch_row["accuracy"] is not None
    assert "could not export Branchy" in onnx_row["error"] and onnx_row["bytes"] is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--runtime", "tflite"], "--runtime: expected torch, onnxruntime, executorch"),
        (["--runtime", "torch,torch"], "--runtime: expected"),
        (["--runtime", "all", "--batch-size", "0"], "--batch-size must be ≥ 1"),
        (["--quantize", "int8"], "--quantize: expected int8 or int8-dynamic together with"),
        (["--runtime", "all", "--quantize", "fp16"], "--quantize: expected int8 or int8-dynamic"),
    ],
)
def test_bad_runtime_exits_2_with_one_line(saved, capsys, extra, message):
    assert main(["measure", str(saved), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
