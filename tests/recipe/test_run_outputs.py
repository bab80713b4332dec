"""A run's final files describe one model, and what a killed run leaves is cleaned on resume."""

import json
import os

import pytest
import torch
from torch import nn

import prunekit.recipe.runner as runner
from prunekit.recipe import Evaluation, Recipe, run_recipe

QUICK = Evaluation(batch_sizes=(1,), min_run_time=0.05, step_latency=False)
RECIPE = "steps:\n  - prune: {method: magnitude, sparsity: 0.5}\n  - measure: {latency: false}"


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _state(out):
    return json.loads((out / "state.json").read_text())


def test_a_report_never_stays_beside_a_model_it_does_not_describe(loaders, tmp_path, monkeypatch):
    recipe, model, out = Recipe.from_yaml(RECIPE), _mlp(), tmp_path / "run"
    run_recipe(recipe, model, *loaders(), out=out, evaluation=QUICK)
    assert _state(out)["complete"] and (out / "report.json").is_file()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # after model/ was written again, before the reports

    monkeypatch.setattr(runner, "compare", killed)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, model, *loaders(), out=out, evaluation=QUICK, resume=True)
    assert (out / "model" / "manifest.json").is_file()
    assert not (out / "report.json").exists() and not (out / "report.md").exists()
    assert not _state(out)["complete"]

    monkeypatch.undo()
    report = run_recipe(recipe, model, *loaders(), out=out, evaluation=QUICK, resume=True)
    assert _state(out)["complete"] and report.resumed_steps == 2
    saved = json.loads((out / "report.json").read_text())
    assert saved["comparison"]["after"]["nonzeros"] == report.rows[-1]["nonzeros"]


def test_resume_removes_what_a_killed_write_left(loaders, tmp_path):
    recipe, model, out = Recipe.from_yaml(RECIPE), _mlp(), tmp_path / "run"
    run_recipe(recipe, model, *loaders(), out=out, evaluation=QUICK)
    leftovers = [out / ".state.json.partial-k2j3", out / ".report.json.partial-x9z"]
    for path in leftovers:
        path.write_text("{")
    (out / "steps" / ".02-measure.partial-ab12").mkdir()
    run_recipe(recipe, model, *loaders(), out=out, evaluation=QUICK, resume=True)
    assert not any(p.exists() for p in leftovers)
    assert sorted(p.name for p in (out / "steps").iterdir()) == ["01-prune", "02-measure"]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    # Written like any file open() makes (mkstemp's 0600 would hide them from a shared group).
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "state.json").stat().st_mode & 0o777 == 0o666 & ~umask
