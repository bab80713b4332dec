"""``prunekit export DIR --onnx FILE`` on saved models: channel-pruned, static int8, weight-only."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

import prunekit as pk
from prunekit.cli import main
from prunekit.models import DigitsCNN


@pytest.fixture(scope="module")
def saved(pruned_digits_dir):
    return pruned_digits_dir


def test_export_a_saved_pruned_model(saved, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert main(["export", str(saved), "--onnx", str(out)]) == 0, capsys.readouterr().err
    assert "onnxruntime vs PyTorch: max |diff|" in capsys.readouterr().out
    model = pk.load(saved)
    x = torch.randn(7, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4, rtol=1e-3)


def test_input_shape_quantize_and_json(saved, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    args = ["export", str(saved), "--onnx", str(out), "--input-shape", "1,1,8,8"]
    code = main([*args, "--quantize", "int8-dynamic", "--static-batch", "--json"])
    assert code == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)["export"]
    assert report["quantize"] == "int8-dynamic" and report["batch_sizes"] == [1]
    assert report["bytes"] == out.stat().st_size < report["float_bytes"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--input-shape", "1,a"], "--input-shape: expected positive integers"),
        (["--input-shape", "1,3,8,8"], "example_inputs: the model fails on them"),
        (["--input-shape", "1,1,8,8", "--data", "digits"], "pass one of them, not both"),
        (["--quantize", "int4"], "--quantize: expected one of int8-dynamic"),
    ],
)
def test_bad_input_exits_2_with_one_line(saved, tmp_path, capsys, extra, message):
    out = tmp_path / "m.onnx"
    assert main(["export", str(saved), "--onnx", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_missing_directory_exits_2(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "is not recognised" in capsys.readouterr().err


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """DigitsCNN saved twice by pk.save: static int8 (calibrated on random images) and 4-bit
    weight-only with groups of 32."""
    torch.manual_seed(0)
    calib = [torch.randn(8, 1, 8, 8) for _ in range(4)]
    static = DigitsCNN().eval()
    pk.quantize_(static, pk.Int8StaticConfig(), data=calib)
    weight_only = DigitsCNN().eval()
    pk.quantize_(weight_only, pk.RTNConfig(bits=4, group_size=32))
    root = tmp_path_factory.mktemp("quantized")
    return {
        "int8-static": pk.save(static, root / "static"),
        "weight-only": pk.save(weight_only, root / "weight-only"),
    }


@pytest.mark.parametrize("kind", ["int8-static", "weight-only"])
def test_export_a_saved_quantized_model(quantized, kind, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    assert main(["export", str(quantized[kind]), "--onnx", str(out), "--json"]) == 0, (
        capsys.readouterr().err
    )
    report = json.loads(capsys.readouterr().out)["export"]
    assert report["bytes"] == out.stat().st_size and report["forms"]
    model = pk.load(quantized[kind])
    x = torch.randn(7, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    if kind == "weight-only":
        assert "MatMulNBits" in " ".join(report["forms"])
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)
    else:  # int8 in both; see test_static_int8_exports_a_qdq_graph_onnxruntime_runs_in_int8
        assert report["quantize"] == "int8-static" and report["quantized_sqnr_db"] >= 30
        assert np.abs(got - want).max() <= 4 * (want.max() - want.min()) / 255
