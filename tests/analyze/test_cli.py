"""``prunekit analyze`` and ``prunekit pareto`` as a user runs them."""

import json

import pytest
import yaml

import prunekit as pk
from prunekit.analyze import SensitivityProfile
from prunekit.cli import main
from prunekit.recipe import Recipe


def _analyze(factory, out, *args):
    spec = f"py:{factory}:make"
    return main(["analyze", "--model", spec, "--data", "digits", "--out", str(out), *args])


def test_analyze_writes_csv_plot_recipe_and_reports(factory, tmp_path, capsys):
    out = tmp_path / "a"
    code = _analyze(factory, out, "--ratios", "0,0.5,0.9", "--max-drop", "2", "--json")
    assert code == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out)
    profile = SensitivityProfile.from_csv(out / "sensitivity.csv")
    assert profile.layers == ["1", "3"] and profile.ratios == [0.0, 0.5, 0.9]
    assert profile.baseline == printed["baseline"] == profile.curve("1")[0].metric
    assert printed["suggested"] == profile.suggest(2.0)
    assert json.loads((out / "report.json").read_text()) == printed
    assert (out / "sensitivity.png").stat().st_size > 10_000
    assert "| 1 | 2,048 |" in (out / "report.md").read_text()

    recipe = yaml.safe_load((out / "suggested.yaml").read_text())
    Recipe.from_dict(recipe)  # a valid recipe
    step = recipe["steps"][0]["prune"]
    assert step["layer_sparsity"] == profile.suggest(2.0)
    config = pk.MagnitudeConfig(**{k: v for k, v in step.items() if k != "method"})
    assert config.layer_sparsity == profile.suggest(2.0)


def test_analyze_nm_suggests_which_layers_to_leave_dense(factory, tmp_path, capsys):
    out = tmp_path / "nm"
    assert _analyze(factory, out, "--pattern", "2:4", "--max-drop", "0") == 0
    profile = SensitivityProfile.from_csv(out / "sensitivity.csv")
    assert profile.ratios == [0.5]
    step = yaml.safe_load((out / "suggested.yaml").read_text())["steps"][0]["prune"]
    fragile = [n for n, s in profile.suggest(0.0).items() if s == 0.0]
    assert step.get("ignore", []) == fragile and "layer_sparsity" not in step


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ratios", "0.5,1.2"], "--ratios: every sparsity must be in [0, 1)"),
        (["--ratios", "half"], "--ratios takes comma-separated sparsities"),
        (["--backend", "spark"], "--backend must be one of auto, ray, local"),
        (["--method", "nope"], "method 'nope' is not registered"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(factory, tmp_path, capsys, args, message):
    out = tmp_path / "bad"
    assert _analyze(factory, out, *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not out.exists()


def test_pareto_plots_runs(tmp_path, capsys):
    dense = {"artifact_bytes": 4000, "params": 900, "accuracy": 0.99}
    runs = []
    for name, size, acc in [("sparse", 900, 0.97), ("int8", 1100, 0.985)]:
        d = tmp_path / name
        d.mkdir()
        after = {"artifact_bytes": size, "params": 900, "accuracy": acc}
        (d / "report.json").write_text(
            json.dumps({"comparison": {"before": dense, "after": after}})
        )
        runs.append(str(d))
    png = tmp_path / "plots" / "pareto.png"
    assert main(["pareto", *runs, "--out", str(png), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [p["label"] for p in printed["points"]] == ["sparse", "dense", "int8"]
    assert png.stat().st_size > 10_000
    assert main(["pareto", str(tmp_path), "--out", str(png)]) == 2
    assert "no report.json" in capsys.readouterr().err
