"""Output folders appear whole (model and reports together) or not at all; long runs show their
progress also when the output goes to a file."""

import json
import os
import subprocess
import sys

import prunekit.cli.common as cli_common
from prunekit.cli import main


def _prune(factory, out, sparsity):
    return main(["prune", "--model", f"py:{factory}:make", "--method", "magnitude",
                 "--sparsity", str(sparsity), "--data", "digits", "--out", str(out),
                 "--json"])  # fmt: skip


def _outputs(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_prune_replaces_model_and_reports_together_or_not_at_all(
    tmp_path, factory, capsys, monkeypatch
):
    out = tmp_path / "out"
    assert _prune(factory, out, 0.5) == 0, capsys.readouterr().err
    first = _outputs(out)
    assert {"model/manifest.json", "report.json", "report.md"} <= set(first)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stopped after the model was written, before the reports

    monkeypatch.setattr(cli_common, "write_reports", killed)
    code = _prune(factory, out, 0.7)
    assert _outputs(out) == first  # the old model beside the old report, untouched
    assert code == 130  # as for Ctrl-C
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.py", "out"]  # no partial left

    monkeypatch.undo()
    capsys.readouterr()
    assert _prune(factory, out, 0.7) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["sparsity"] == 0.7
    assert json.loads((out / "model" / "manifest.json").read_text())["source"]["pruned_with"][
        "sparsity"
    ] == 0.7  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.py", "out"]


def test_a_killed_runs_partial_output_folder_is_removed_by_the_next(tmp_path, factory, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.partial-{dead.pid}-x1y2"
    (stale / "model").mkdir(parents=True)
    assert _prune(factory, tmp_path / "out", 0.5) == 0, capsys.readouterr().err
    assert not stale.exists()


RECIPE = """
steps:
  - prune: {method: magnitude, sparsity: 0.5}
  - finetune: {epochs: 2}
"""


def test_a_recipe_run_into_a_file_shows_each_step_and_epoch_as_it_goes(tmp_path, factory):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    log = tmp_path / "log.txt"
    with log.open("w") as f:
        done = subprocess.run(
            [sys.executable, "-c", "from prunekit.cli import entry; entry()", "run", str(recipe),
             "--model", f"py:{factory}:make", "--data", "digits", "--out", str(tmp_path / "o")],
            stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"},
            timeout=300,
        )  # fmt: skip
    lines = log.read_text().splitlines()
    assert done.returncode == 0, lines[-5:]
    started = lines.index("step 2/2: finetune…")
    epochs = [i for i, line in enumerate(lines) if "epoch " in line and "train_loss" in line]
    finished = next(i for i, line in enumerate(lines) if line.startswith("✓ step 2/2: finetune"))
    assert len(epochs) == 2 and started < epochs[0] < epochs[1] < finished
    assert "epoch 1/2: train_loss" in lines[epochs[0]]


def test_measure_a_user_model_folder_gives_its_sizes_without_the_model(tmp_path, capsys):
    # It refused ("not a built-in one … pass model="): sizes, bytes and bits per non-zero are
    # in the artifact and need no model.
    import json

    import torch

    import prunekit as pk
    from prunekit.cli import main

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.Linear(32, 10)
    )
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.75))
    out = pk.save(model, tmp_path / "m")
    capsys.readouterr()
    assert main(["measure", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["params"] == sum(p.numel() for p in model.parameters())
    assert result["nonzeros"] == sum(int((p != 0).sum()) for p in model.parameters())
    assert result["artifact_bytes"] == pk.artifact.io.artifact_bytes(out)
    assert result["bits_per_nonzero"] > 0 and result["accuracy"] is None
    assert main(["measure", str(out)]) == 0
    assert "need the model" in capsys.readouterr().out
