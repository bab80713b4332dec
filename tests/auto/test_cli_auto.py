"""``prunekit auto`` as a user runs it: the files it writes and what they hold."""

import csv
import json

import pytest
import torch
import yaml
from safetensors.torch import save_model

import prunekit as pk
from prunekit.cli import main
from prunekit.recipe import Recipe
from tests.auto.conftest import mlp

FACTORY = """
import torch
from torch import nn

def make():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )
"""


@pytest.fixture
def user_model(tmp_path, digits_mlp):
    """A py:FILE.py:FUNCTION spec and a weights file holding the trained digits MLP."""
    (tmp_path / "net.py").write_text(FACTORY)
    save_model(digits_mlp, str(tmp_path / "w.safetensors"))
    return f"py:{tmp_path / 'net.py'}:make", str(tmp_path / "w.safetensors")


def test_auto_writes_model_recipe_frontier_plot_and_reports(tmp_path, user_model, capsys):
    spec, weights = user_model
    out = tmp_path / "run"
    code = main([
        "auto", "--model", spec, "--weights", weights, "--data", "digits", "--max-drop", "3",
        "--trials", "4", "--trial-epochs", "2", "--final-epochs", "2", "--val-size", "0.2",
        "--backend", "local", "--out", str(out), "--json",
    ])  # fmt: skip
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    for name in ("model", "recipe.yaml", "frontier.csv", "pareto.png", "report.json", "report.md"):
        assert (out / name).exists(), name
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((out / "report.json").read_text())
    assert report == json.loads(json.dumps(printed))
    final = report["final"]
    assert report["comparison"]["after"]["artifact_bytes"] == final["bytes"]
    assert final["within_budget"] and final["checked_on"] == "test"

    recipe = Recipe.from_yaml(out / "recipe.yaml")  # validates every step
    raw = yaml.safe_load((out / "recipe.yaml").read_text())
    assert raw["steps"][0]["prune"]["layer_sparsity"] == final["choice"]["layer_sparsity"]
    assert [next(iter(s.to_dict())) for s in recipe.steps][:2] == ["prune", "finetune"]

    with (out / "frontier.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert {int(r["trial"]) for r in rows if r["on_frontier"] == "True"} == set(report["frontier"])

    model = pk.load(out / "model", model=mlp())  # a user's own class: pass one to load
    test = pk.data.load_data("digits").loader("test", batch_size=512)
    x, _ = next(iter(test))
    assert torch.isfinite(model(x)).all()
    accuracy = pk.measure(model, test, latency=False, artifact=False).accuracy
    assert accuracy == pytest.approx(final["test_accuracy"])


def test_auto_rejects_a_bad_objective_with_exit_2(capsys):
    code = main(["auto", "--model", "builtin:lenet300", "--objective", "speed", "--out", "x"])
    assert code == 2
    assert "objective" in capsys.readouterr().err
