"""pk.measure_runtimes: one row per runtime, each measured on its own outputs."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.errors import PrunekitError
from prunekit.models import DigitsCNN


class Branchy(nn.Module):
    """Branches on a tensor's value: runs in PyTorch, but no exporter can trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if x.mean() > 0:
            x = x * 2
        return self.fc(x)


@pytest.fixture(scope="module")
def val():
    return pk.data.load_data("digits").loader("test", batch_size=256)


def test_every_runtime_gets_a_row_with_its_own_accuracy(val):
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = pk.measure_runtimes(model, val, batch_sizes=(1, 8), min_run_time=0.02)
    rows = {r.runtime: r for r in report.runtimes}
    assert list(rows) == ["torch", "onnxruntime", "executorch"]
    reference = rows["torch"]
    for r in rows.values():
        assert r.error is None, r.error
        assert r.bytes > 0 and r.file
        assert sorted(r.latency_ms) == [1, 8] and min(r.latency_ms.values()) > 0
        assert r.peak_rss_bytes is None or r.peak_rss_bytes >= 0
        # fp32 in every runtime: the same predictions, up to a near-tie.
        assert r.accuracy_samples == reference.accuracy_samples == 360
        assert r.accuracy == pytest.approx(reference.accuracy, abs=1 / 360)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    text = str(report)
    assert all(name in text for name in rows) and "ms @ batch 8" in text
    assert json.loads(json.dumps(report.to_dict()))["runtimes"][2]["runtime"] == "executorch"


def test_a_runtime_that_cannot_take_the_model_says_why_and_the_others_run(val):
    report = pk.measure_runtimes(Branchy(), val, batch_sizes=(1,), min_run_time=0.02)
    rows = {r.runtime: r for r in report.runtimes}
    assert rows["torch"].error is None and rows["torch"].latency_ms[1] > 0
    assert rows["torch"].accuracy is not None
    for name in ("onnxruntime", "executorch"):
        error = rows[name].error
        assert error and "\n" not in error and "Branchy" in error
        assert rows[name].latency_ms == {} and rows[name].bytes is None
    _, table = report.table()
    assert table[1][0] == "onnxruntime"
    assert rows["onnxruntime"].error.startswith(table[1][-1].removesuffix("…"))
    assert f"onnxruntime: {rows['onnxruntime'].error}" in report.notes()


def test_task_metrics_run_on_each_runtime_s_outputs():
    from prunekit.measure import perplexity
    from tests import hf_zoo

    model = hf_zoo.gpt2()
    ids = [
        torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(i)) for i in (0, 1)
    ]
    windows = [{"input_ids": x} for x in ids]
    report = pk.measure_runtimes(
        model,
        windows,
        runtimes=("torch", "onnxruntime"),
        batch_sizes=(1,),
        latency=False,
        accuracy=False,
        metrics=lambda m: {"perplexity (2 windows x 16 tokens)": perplexity(m, windows)},
    )
    torch_row, onnx_row = report.runtimes
    assert onnx_row.error is None, onnx_row.error
    (name,) = torch_row.metrics
    assert onnx_row.metrics[name] == pytest.approx(torch_row.metrics[name], rel=1e-4)
    columns, _ = report.table()
    assert "perplexity" in columns and "top-1 %" not in columns


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"runtimes": ("tflite",)}, "runtimes: expected distinct names"),
        ({"runtimes": "torch"}, "runtimes: expected a list"),
        ({"batch_sizes": (0,)}, "batch_sizes: expected positive integers"),
        ({"quantize": "int4"}, "quantize: expected one of"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(val, kwargs, message):
    with pytest.raises(PrunekitError, match=message):
        pk.measure_runtimes(DigitsCNN(), val, **kwargs)


def test_inputs_come_from_data_or_example_inputs():
    with pytest.raises(PrunekitError, match="example_inputs: pass example_inputs or data"):
        pk.measure_runtimes(DigitsCNN())
    with pytest.raises(PrunekitError, match="one-shot iterator"):
        pk.measure_runtimes(DigitsCNN(), iter([torch.zeros(1, 1, 8, 8)]))
    report = pk.measure_runtimes(
        DigitsCNN(), example_inputs=torch.randn(2, 1, 8, 8), runtimes=["torch"], latency=False
    )
    (row,) = report.runtimes
    assert row.error is None and row.accuracy is None and row.latency_ms == {}
    with pytest.raises(PrunekitError, match="example_inputs: the model fails on them"):
        pk.measure_runtimes(DigitsCNN(), example_inputs=torch.randn(2, 3, 8, 8))


def test_without_the_executorch_extra_its_row_says_how_to_install_it(val, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "executorch.exir", None)  # import fails as if absent
    report = pk.measure_runtimes(
        DigitsCNN(), val, runtimes=("torch", "executorch"), batch_sizes=(1,), latency=False
    )
    torch_row, pte_row = report.runtimes
    assert torch_row.error is None and torch_row.accuracy is not None
    assert "pip install 'prunekit[executorch]'" in pte_row.error


@pytest.mark.parametrize("mode", ["int8", "int8-dynamic"])
def test_quantize_runs_each_runtime_s_own_int8_form_of_the_float_model(val, mode):
    model = pk.models.pretrained("digits-cnn").eval()  # trained: int8 must keep its accuracy
    before = {k: v.clone() for k, v in model.state_dict().items()}
    float_bytes = pk.measure_runtimes(model, val, latency=False, accuracy=False).runtimes
    report = pk.measure_runtimes(model, val, batch_sizes=(1, 4), latency=False, quantize=mode)
    rows = {r.runtime: r for r in report.runtimes}
    for r, f in zip(report.runtimes, float_bytes, strict=True):
        assert r.error is None, r.error
        assert r.bytes < 0.6 * f.bytes  # int8 weights in every runtime's own file
        assert r.accuracy >= 0.97
    assert rows["torch"].note == f"{mode} by quantize_"
    assert rows["executorch"].note.startswith(f"{mode} XNNPACK")
    assert report.config["quantize"] == mode
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_static_int8_without_calibration_data_is_refused():
    with pytest.raises(PrunekitError, match="quantize='int8' calibrates: pass data="):
        pk.measure_runtimes(DigitsCNN(), example_inputs=torch.randn(1, 1, 8, 8), quantize="int8")
