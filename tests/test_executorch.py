"""ExecuTorch export: the .pte runs in ExecuTorch's runtime like PyTorch, quantized programs are
smaller and close, prunekit's own layers export dense, failures name the op and write nothing."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from executorch.runtime import Runtime
from torch import nn

import prunekit as pk
import prunekit.export.executorch as et_module
from prunekit.cli import main
from prunekit.cli.export import random_inputs
from prunekit.data import load_data
from prunekit.errors import PrunekitError
from prunekit.export import ExecuTorchReport, export_executorch
from prunekit.export.dense import dense_twin
from prunekit.export.inputs import flat_tensors
from prunekit.models import available, build, model_info
from tests import hf_zoo, zoo


def _calibrated(name: str) -> tuple[nn.Module, list]:
    """A zoo model whose BatchNorm statistics moved off their defaults, and its batches."""
    model, batches = zoo.build(name)
    with torch.no_grad():
        for x, _ in batches:
            model.train()(x)
    return model.eval(), batches


def _run_file(path, *inputs: torch.Tensor) -> list[torch.Tensor]:
    method = Runtime.get().load_program(path).load_method("forward")
    return list(method.execute(inputs))


def _sqnr(got: torch.Tensor, want: torch.Tensor) -> float:
    return float(10 * torch.log10(want.square().sum() / (got - want).square().sum()))


@pytest.mark.parametrize("name", ["cnn-bn", "mlp"])
def test_float_program_runs_in_executorch_like_pytorch(name, tmp_path):
    model, batches = _calibrated(name)
    x = batches[0][0][:2]
    report = export_executorch(model, tmp_path / "m.pte", x)

    assert isinstance(report, ExecuTorchReport) and report.quantize is None
    assert report.bytes == (tmp_path / "m.pte").stat().st_size
    assert report.max_abs_diff < 1e-4 and report.input_shapes == [[2, 1, 8, 8]]
    assert report.delegated_ops == report.total_ops > 0  # every op runs in XNNPACK
    assert report.dense_note is None
    other = batches[1][0][:2]  # the file, not just the checked buffer, on other values
    (got,) = _run_file(tmp_path / "m.pte", other)
    with torch.no_grad():
        torch.testing.assert_close(got, model(other), atol=1e-4, rtol=1e-3)
    text = str(report)
    assert "ExecuTorch vs PyTorch: max |diff|" in text and "XNNPACK" in text
    assert json.loads(json.dumps(report.to_dict()))["bytes"] == report.bytes


def _other_inputs(example: object) -> tuple[torch.Tensor, ...]:
    """Values other than the example's (which the export itself checked), same shapes."""
    g = torch.Generator().manual_seed(1)
    tensors = example.values() if isinstance(example, dict) else (example,)
    return tuple(
        torch.randint(0, int(t.max()) + 1, t.shape, generator=g)
        if not t.is_floating_point()
        else torch.randn(t.shape, generator=g)
        for t in tensors
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", available())
def test_every_built_in_model_runs_in_executorch_like_pytorch(name, tmp_path):
    model = build(name).eval()  # the architecture is what exports; its weights do not matter
    example = random_inputs(model, (2, *model_info(name).input_shape))
    report = export_executorch(model, tmp_path / "m.pte", example)
    assert report.max_abs_diff < 1e-4 and report.delegated_ops > 0

    other = _other_inputs(example)
    got = _run_file(tmp_path / "m.pte", *other)
    with torch.no_grad():
        want = flat_tensors(model(*other) if not isinstance(example, dict) else model(other[0]))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-3)


def test_a_failed_check_writes_nothing_and_keeps_the_old_file(tmp_path, monkeypatch):
    model, batches = _calibrated("mlp")
    path = tmp_path / "m.pte"
    path.write_bytes(b"old")
    real = et_module._run
    monkeypatch.setattr(et_module, "_run", lambda *a: [t + 1 for t in real(*a)])
    with pytest.raises(PrunekitError, match=r"differs from PyTorch's by up to 1.*nothing was"):
        export_executorch(model, path, batches[0][0][:1])
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["m.pte"]


def test_channel_pruned_model_exports_its_smaller_layers(tmp_path):
    model, batches = _calibrated("cnn-bn")
    x = batches[0][0][:1]
    dense = export_executorch(model, tmp_path / "dense.pte", x)
    pk.prune_(model, pk.MagnitudeConfig(pattern="channel", sparsity=0.5), example_inputs=(x,))
    report = export_executorch(model, tmp_path / "pruned.pte", x)
    assert report.bytes < 0.7 * dense.bytes and report.max_abs_diff < 1e-4
    (got,) = _run_file(tmp_path / "pruned.pte", x)
    with torch.no_grad():
        torch.testing.assert_close(got, model(x), atol=1e-4, rtol=1e-3)


def test_weight_shared_and_unstructured_pruned_layers_export_dense(tmp_path):
    model, batches = _calibrated("mlp")
    x = batches[0][0][:1]
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.5))
    pk.share_weights_(model, pk.KMeansConfig(bits=4))
    report = export_executorch(model, tmp_path / "shared.pte", x)
    assert "2 weight-shared layers as float layers" in report.dense_note
    assert "of the weights are zero and stored dense" in report.dense_note
    assert "exported dense:" in str(report) and report.max_abs_diff < 1e-4


def test_prunekit_quantized_layers_export_dense_and_static_regions_are_refused(tmp_path):
    model, batches = _calibrated("mlp")
    x = batches[0][0][:1]
    pk.quantize_(model, pk.Int8DynamicConfig(min_features=1))
    report = export_executorch(model, tmp_path / "q.pte", x)
    assert "2 int8 layers as float layers" in report.dense_note
    (got,) = _run_file(tmp_path / "q.pte", x)
    with torch.no_grad():  # the int8 weights, dequantized; activations stay float
        assert _sqnr(got, model(x)) > 25

    static, batches = _calibrated("mlp")
    pk.quantize_(static, pk.Int8StaticConfig(), data=[b[0] for b in batches])
    with pytest.raises(
        PrunekitError, match=r"module '.*' is a static int8 region.*quantize='int8'"
    ):
        export_executorch(static, tmp_path / "s.pte", x)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.pte"]


def test_static_int8_is_smaller_and_close_to_float(tmp_path):
    model, batches = _calibrated("cnn-bn")
    x = batches[0][0][:1]
    fp32 = export_executorch(model, tmp_path / "fp32.pte", x)
    report = export_executorch(model, tmp_path / "int8.pte", x, quantize="int8", data=batches)
    assert report.quantize == "int8" and report.bytes < 0.7 * fp32.bytes
    assert report.sqnr_db > 25  # measured 41 dB; a wrong scale or layout gives < 10
    assert report.delegated_ops == report.total_ops
    (got,) = _run_file(tmp_path / "int8.pte", x)
    with torch.no_grad():
        assert _sqnr(got, model(x)) > 25
    assert "SQNR" in str(report)


def test_dynamic_4bit_bert_keeps_its_outputs(tmp_path):
    model = hf_zoo.bert(layers=1)
    g = torch.Generator().manual_seed(0)
    inputs = {
        "input_ids": torch.randint(0, 64, (1, 8), generator=g),
        "attention_mask": torch.ones(1, 8, dtype=torch.long),
    }
    report = export_executorch(model, tmp_path / "bert.pte", inputs, quantize="8da4w")
    assert report.sqnr_db > 20 and report.output_names[0] == "last_hidden_state"
    assert report.input_shapes == [[1, 8], [1, 8]] and report.delegated_ops > 0
    got = _run_file(tmp_path / "bert.pte", inputs["input_ids"], inputs["attention_mask"])
    with torch.no_grad():
        want = model(**inputs).last_hidden_state
    assert _sqnr(got[0], want) > 20


def test_dynamic_int8_linear_layers(tmp_path):
    model, batches = _calibrated("mlp")
    report = export_executorch(
        model, tmp_path / "m.pte", batches[0][0][:2], quantize="int8-dynamic"
    )
    assert report.sqnr_db > 25 and report.delegated_ops == report.total_ops


class _Spectrum(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft(x).abs()


class _Unexportable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.spectrum = _Spectrum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spectrum(self.fc(x))


def test_unexportable_model_names_the_op_and_module_and_writes_nothing(tmp_path):
    with pytest.raises(PrunekitError) as info:
        export_executorch(_Unexportable().eval(), tmp_path / "m.pte", torch.randn(1, 8))
    message = str(info.value)
    assert "op aten.abs, called by module 'spectrum' (_Spectrum)" in message
    assert "\n" not in message and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"quantize": "int4"}, r"quantize: expected one of \['int8', 'int8-dynamic', '8da4w'\]"),
        ({"quantize": "int8"}, "data: quantize='int8' calibrates"),
        ({"num_samples": 0}, "num_samples: must be an integer >= 1"),
    ],
)
def test_bad_arguments_are_one_line_errors(kwargs, match, tmp_path):
    model, _ = zoo.build("mlp")
    with pytest.raises(PrunekitError, match=match):
        export_executorch(model, tmp_path / "m.pte", torch.randn(1, 1, 8, 8), **kwargs)
    with pytest.raises(PrunekitError, match="is a directory"):
        export_executorch(model, tmp_path, torch.randn(1, 1, 8, 8))


def test_without_executorch_installed_the_error_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "executorch.exir", None)
    model, _ = zoo.build("mlp")
    with pytest.raises(
        PrunekitError, match=r"needs ExecuTorch .*pip install 'prunekit\[executorch\]'"
    ):
        export_executorch(model, tmp_path / "m.pte", torch.randn(1, 1, 8, 8))
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def saved(pruned_digits_dir):
    return pruned_digits_dir


def test_cli_exports_a_saved_model(saved, tmp_path, capsys):
    out = tmp_path / "model.pte"
    assert main(["export", str(saved), "--executorch", str(out)]) == 0, capsys.readouterr().err
    assert "ExecuTorch vs PyTorch: max |diff|" in capsys.readouterr().out
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    (got,) = _run_file(out, x)
    with torch.no_grad():
        torch.testing.assert_close(got, pk.load(saved)(x), atol=1e-4, rtol=1e-3)


def test_cli_static_int8_calibrates_on_the_data_and_prints_json(saved, tmp_path, capsys):
    out = tmp_path / "q.pte"
    args = ["export", str(saved), "--executorch", str(out), "--quantize", "int8", "--json"]
    assert main([*args, "--data", "digits"]) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)["export"]
    assert report["quantize"] == "int8" and report["bytes"] == out.stat().st_size
    assert report["input_shapes"] == [[1, 1, 8, 8]] and report["sqnr_db"] > 20


@pytest.mark.slow
def test_cli_prune_then_int8_export_of_a_built_in_model_gives_the_same_answers(tmp_path, capsys):
    run, pte = tmp_path / "run", tmp_path / "q.pte"
    prune = ["prune", "--model", "builtin:digits-cnn", "--method", "magnitude"]
    prune += ["--pattern", "channel", "--sparsity", "0.5", "--finetune-epochs", "1"]
    assert main([*prune, "--out", str(run)]) == 0, capsys.readouterr().err
    export = ["export", str(run), "--executorch", str(pte), "--quantize", "int8"]
    assert main([*export, "--data", "digits"]) == 0, capsys.readouterr().err

    pruned = pk.load(run / "model").eval()

    def widths(model: nn.Module) -> list[int]:
        return [c.out_channels for c in model.modules() if isinstance(c, nn.Conv2d)]

    shrunk = list(zip(widths(pruned), widths(build("digits-cnn")), strict=True))
    assert all(p <= d for p, d in shrunk) and any(p < d for p, d in shrunk)
    images, _ = next(iter(load_data("digits").loader("test", batch_size=100)))
    program = Runtime.get().load_program(pte).load_method("forward")
    got = torch.cat([program.execute((x[None],))[0] for x in images])  # batch-1 program
    with torch.no_grad():
        want = pruned(images)
    assert (got.argmax(1) == want.argmax(1)).float().mean() >= 0.97


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--onnx", "m.onnx"], "pass exactly one of them"),
        (["--quantize", "int4"], "--quantize: expected one of int8, int8-dynamic, 8da4w"),
        (["--latency"], "--latency: ONNX options"),
        (["--quantize", "int8", "--input-shape", "1,1,8,8"], "pass --data SPEC instead"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(saved, tmp_path, capsys, extra, message):
    out = tmp_path / "m.pte"
    assert main(["export", str(saved), "--executorch", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_gpt2_conv1d_layers_export_as_the_linear_layers_they_are():
    model = hf_zoo.gpt2(layers=1)
    ids = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(0))
    twin, note = dense_twin(model)
    with torch.no_grad():
        torch.testing.assert_close(twin(ids).logits, model(ids).logits)
    assert sum(isinstance(m, nn.Linear) for m in twin.modules()) == 5  # 4 Conv1D + lm_head
    assert note is None and twin is not model
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 1  # the user's is kept


def test_gpt2_exports_at_a_batch_above_one(tmp_path):
    # Conv1D's view() after attention failed to lower at batch > 1 (non-contiguous input).
    model = hf_zoo.gpt2(layers=1).eval()
    ids = torch.randint(0, 64, (3, 8), generator=torch.Generator().manual_seed(0))
    report = export_executorch(model, tmp_path / "g.pte", ids)
    (got,) = _run_file(tmp_path / "g.pte", ids)
    with torch.no_grad():
        torch.testing.assert_close(got, model(ids).logits, atol=1e-4, rtol=1e-3)
    assert report.input_shapes == [[3, 8]]
