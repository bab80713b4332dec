"""Bad input to any subcommand exits 2 with one line, before the model loads or anything is
written; input that only fails once the model is known fails before any work on it."""

import json
from pathlib import Path

import pytest

from prunekit.cli import main

M = "builtin:digits-cnn"
PRUNE = ["prune", "--model", M, "--method", "magnitude"]
FACTORIZE = ["factorize", "--model", M, "--out"]
LAUGHS = "[&a [1,1,1,1,1,1,1,1,1]" + "".join(
    f", &{b} [" + ",".join([f"*{a}"] * 9) + "]" for a, b in zip("abcdef", "bcdefg", strict=True)
) + "]"  # fmt: skip


@pytest.fixture
def no_loading(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    for target in ("prunekit.specs.load_model", "prunekit.cli.export.load_model",
                   "prunekit.cli.measure.load_model", "prunekit.cli.demo.pretrained"):  # fmt: skip
        monkeypatch.setattr(target, fail)


@pytest.fixture
def paths(tmp_path):
    """Placeholders for the argv templates below."""
    (tmp_path / "a-file").write_text("the user's file")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    (tmp_path / "earlier-run").mkdir()
    (tmp_path / "earlier-run" / "state.json").write_text("{}")
    (tmp_path / "r.yaml").write_text("steps:\n  - prune: {method: magnitude, sparsity: 0.5}\n")
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    return {
        "file": tmp_path / "a-file",
        "user": tmp_path / "mine",
        "new": tmp_path / "new",
        "run": tmp_path / "earlier-run",
        "recipe": tmp_path / "r.yaml",
        "binary": tmp_path / "binary.yaml",
    }


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


BAD = [
    ([*PRUNE, "--out", "{file}"], "--out '{file}': is a file; name a new or empty directory"),
    (
        [*PRUNE, "--out", "{user}"],
        "holds 'notes.txt', which is no output of prunekit prune, analyze or auto",
    ),
    ([*PRUNE, "--out", "{file}/sub"], "is a file, so nothing can be written under it"),
    (
        [*PRUNE, "--out", "{new}", "--finetune-epochs", "1", "--schedule", "weird"],
        "--schedule must be one of oneshot, iterative, agp; got 'weird'",
    ),
    ([*PRUNE, "--out", "{new}", "--finetune-epochs", "-1"], "--finetune-epochs must be ≥ 0"),
    ([*PRUNE, "--out", "{new}", "--lr", "0", "--finetune-epochs", "1"], "--lr must be > 0"),
    ([*PRUNE, "--out", "{new}", "--batch-size", "0"], "--batch-size must be ≥ 1"),
    ([*PRUNE, "--out", "{new}", "--seq-len", "1"], "--seq-len must be ≥ 2"),
    ([*PRUNE, "--out", "{new}", "--data", "nope"], "data spec 'nope' is not recognised"),
    ([*PRUNE, "--out", "{new}", "--data", "text:{new}.txt"], "no such file"),
    ([*PRUNE, "--out", "{new}", "--set", f"targets={LAUGHS}"], "more than 10,000 YAML values"),
    (["run", "{binary}", "--model", M, "--out", "{new}"], "is not UTF-8 text"),
    (["run", "{recipe}", "--model", M, "--out", "{file}"], "is a file"),
    (["run", "{recipe}", "--model", M, "--out", "{user}"], "holds no prunekit run"),
    (["run", "{recipe}", "--model", M, "--out", "{run}"], "holds an earlier run; pass --resume"),
    (["run", "{recipe}", "--model", M, "--out", "{new}", "--batch-size", "0"], "--batch-size"),
    (["run", "{recipe}", "--model", M, "--out", "{new}", "--data", "nope"], "'nope' is not"),
    (["analyze", "--model", M, "--out", "{file}"], "is a file"),
    (["analyze", "--model", M, "--out", "{new}", "--workers", "0"], "--workers must be ≥ 1"),
    (["auto", "--model", M, "--out", "{new}", "--backend", "nope"], "--backend must be one of"),
    (["auto", "--model", M, "--out", "{new}", "--val-size", "1.5"], "--val-size must be a"),
    (["auto", "--model", M, "--out", "{user}"], "which is no output of prunekit prune"),
    (["export", M, "--onnx", "{user}"], "is a directory; name the file to write"),
    (["export", M, "--onnx", "{file}/m.onnx"], "is a file, so nothing can be written under it"),
    (["export", M, "--onnx", "{new}.onnx", "--opset", "5"], "--opset must be 18 or newer"),
    (["export", M, "--onnx", "{new}.onnx", "--input-shape", "9999,9999,9999"], "values; an"),
    (["measure", M, "--data", "nope"], "data spec 'nope' is not recognised"),
    (["measure", M, "--seq-len", "0"], "--seq-len must be ≥ 2"),
    (["demo", "--epochs", "0"], "--epochs must be ≥ 1"),
    (["demo", "--sparsity", "1.5"], "sparsity must be in [0, 1); got 1.5"),
    (["pareto", "{user}", "--out", "{user}"], "is a directory; name the file to write"),
    ([*FACTORIZE, "{file}"], "is a file; name a new or empty directory"),
    ([*FACTORIZE, "{new}", "--energy", "0.9", "--rank-ratio", "0.5"], "not several"),
    ([*FACTORIZE, "{new}", "--macs-reduction", "1"], "macs_reduction: Input should be greater"),
    ([*FACTORIZE, "{new}", "--decomposition", "tucker"], "decomposition: Input should be"),
    ([*FACTORIZE, "{new}", "--finetune-epochs", "-1"], "--finetune-epochs must be ≥ 0"),
]


def _id(argv: list[str]) -> str:
    return " ".join(a for a in argv if a not in PRUNE[1:])[:60]


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[_id(a) for a, _ in BAD])
def test_bad_input_exits_2_before_the_model_loads(argv, message, paths, no_loading, capsys):
    root = paths["file"].parent
    before = _snapshot(root)
    assert main([a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and len(err) < 400
    assert message.format(**paths) in err
    assert _snapshot(root) == before  # nothing written, nothing deleted
    assert not paths["new"].exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="Linux /proc takes no new entries")
@pytest.mark.parametrize(
    "argv",
    [
        [*PRUNE, "--out", "/proc/prunekit-test/out"],
        ["analyze", "--model", M, "--out", "/proc/prunekit-test"],
        ["run", "{recipe}", "--model", M, "--out", "/proc/prunekit-test"],
        ["export", M, "--onnx", "/proc/prunekit-test.onnx"],
    ],
    ids=["prune", "analyze", "run", "export"],
)
def test_an_unwritable_output_exits_2_before_the_model_loads(argv, paths, no_loading, capsys):
    assert main([a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot write in '/proc'" in err and "\n" not in err


USER_DATA = """
import torch
from torch.utils.data import TensorDataset

def wide():
    x, y = torch.randn(40, 100), torch.arange(40) % 10
    return TensorDataset(x[:30], y[:30]), TensorDataset(x[30:], y[30:])

def many_classes():
    x, y = torch.randn(40, 64), torch.arange(40) % 20
    return TensorDataset(x[:30], y[:30]), TensorDataset(x[30:], y[30:])
"""


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("wide", "the model fails on its samples (inputs of shape [2, 100])"),
        ("many_classes", "20 classes, but the model outputs 10 per sample"),
    ],
)
@pytest.mark.parametrize("command", ["prune", "run", "measure"])
def test_data_the_model_cannot_take_exits_2_before_any_work(
    command, function, message, tmp_path, factory, paths, capsys, monkeypatch
):
    def no_work(*args, **kwargs):
        raise AssertionError("work started on data the model cannot take")

    for target in ("prunekit.cli.prune.prune_", "prunekit.cli.run.run_recipe",
                   "prunekit.cli.measure.measure_model"):  # fmt: skip
        monkeypatch.setattr(target, no_work)
    data = tmp_path / "user_data.py"
    data.write_text(USER_DATA)
    spec = f"py:{data}:{function}"
    out = tmp_path / "out"
    argv = {
        "prune": [*PRUNE[:2], f"py:{factory}:make", *PRUNE[3:], "--out", str(out)],
        "run": ["run", str(paths["recipe"]), "--model", f"py:{factory}:make", "--out", str(out)],
        "measure": ["measure", f"py:{factory}:make"],
    }[command]
    assert main([*argv, "--data", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--data {spec}: {message}" in err and "\n" not in err
    assert not out.exists()


def test_a_seq_len_beyond_the_models_positions_exits_2_before_any_work(
    tmp_path, gpt2_folder, capsys, monkeypatch
):
    def no_work(*args, **kwargs):
        raise AssertionError("work started with windows longer than the model's positions")

    monkeypatch.setattr("prunekit.cli.prune.prune_", no_work)
    folder, text = gpt2_folder
    positions = json.loads((folder / "config.json").read_text())["n_positions"]
    out = tmp_path / "out"
    argv = ["prune", "--model", f"hf:{folder}", "--method", "magnitude", "--data", f"text:{text}",
            "--seq-len", str(positions + 1), "--out", str(out)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert f"--seq-len {positions + 1}: the model has {positions} positions" in err
    assert not out.exists()
