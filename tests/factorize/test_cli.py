"""``prunekit factorize``: a budgeted factorization, fine-tuned, written, reloaded; a budget out of
reach exits 2 and writes nothing."""

import json

import torch

import prunekit as pk
from prunekit.cli import main
from prunekit.factorize import LowRankConv2d, LowRankLinear
from prunekit.measure import count_macs


def test_factorize_to_a_macs_budget_finetunes_and_writes_a_model_that_reloads(
    digits, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    argv = ["factorize", "--model", "builtin:digits-cnn", "--out", str(out), "--json",
            "--macs-reduction", "2", "--decomposition", "spatial",
            "--finetune-epochs", "2"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["factorize"]["budget"]["reached"] >= 2.0
    assert report["finetune"]["epochs"] == 2
    model = pk.load(out / "model")
    kinds = {type(m) for m in model.modules()}
    assert LowRankConv2d in kinds and LowRankLinear in kinds
    x, y = next(iter(digits.loader("test", batch_size=360)))
    dense = pk.models.pretrained("digits-cnn", progress=False)
    assert count_macs(dense, x[:1]).dense / count_macs(model, x[:1]).dense >= 2.0
    with torch.no_grad():
        accuracy = float((model.eval()(x).argmax(1) == y).float().mean())
    assert accuracy >= 0.93
    assert abs(report["comparison"]["after"]["accuracy"] - accuracy) < 1e-6


def test_a_budget_out_of_reach_exits_2_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    argv = ["factorize", "--model", "builtin:digits-cnn", "--out", str(out),
            "--macs-reduction", "500"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "macs_reduction: 500× is out of reach" in err and "\n" not in err.strip()
    assert not out.exists()
