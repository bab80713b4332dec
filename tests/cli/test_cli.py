"""The command line as a user runs it: exit codes, files written, one-line errors."""

import json

import pytest
import torch

import prunekit as pk
from prunekit.cli import main


def test_methods_lists_every_registered_method(capsys):
    assert main(["methods", "--json"]) == 0
    listed = {m["name"] for m in json.loads(capsys.readouterr().out)}
    assert listed == {m.name for m in pk.methods()}


@pytest.mark.slow
def test_prune_a_builtin_then_measure_and_load_it(cache, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "prune",
            "--model",
            "builtin:digits-cnn",
            "--method",
            "magnitude",
            "--sparsity",
            "0.8",
            "--scope",
            "global",
            "--finetune-epochs",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["prune"]["zeros"] == round(0.8 * report["prune"]["numel"])
    assert report["comparison"]["after"]["accuracy"] > 0.9
    assert "after/before" in (out / "report.md").read_text()
    model = pk.load(out / "model")  # rebuilt from the manifest: no class needed
    weights = [
        m.weight for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
    ]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(0.8 * sum(w.numel() for w in weights))
    capsys.readouterr()
    assert main(["measure", str(out / "model"), "--json", "--no-latency"]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert measured["accuracy"] == pytest.approx(report["comparison"]["after"]["accuracy"])
    # The run's folder itself names the model too (its model/ beside the reports).
    assert main(["measure", str(out), "--json", "--no-latency"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == measured["accuracy"]


def test_prune_a_user_factory_with_taylor_and_nm(tmp_path, capsys, factory):
    out = tmp_path / "run"
    code = main(
        [
            "prune",
            "--model",
            f"py:{factory}:make",
            "--method",
            "taylor",
            "--pattern",
            "2:4",
            "--data",
            "digits",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert report["prune"]["sparsity"] == 0.5
    model = pk.load(
        out / "model",
        model=__import__("torch").nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
        ),
    )
    groups = model[1].weight.reshape(-1, 4)
    assert torch.all((groups == 0).sum(dim=1) == 2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "magnitude", "--sparsity", "1.5"], "sparsity must be in [0, 1)"),
        (["--method", "nope"], "method 'nope' is not registered"),
        (
            ["--method", "magnitude", "--pattern", "3:4", "--sparsity", "0.5"],
            "leave sparsity unset",
        ),
        (["--method", "magnitude", "--target", "conv9"], "'conv9' matches no prunable layer"),
        (["--method", "magnitude", "--distill"], "add --finetune-epochs"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, factory, args, message):
    argv = [
        "prune",
        "--model",
        f"py:{factory}:make",
        "--data",
        "digits",
        "--out",
        str(tmp_path / "o"),
        *args,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_missing_required_option_is_a_usage_error(capsys):
    assert main(["prune", "--method", "magnitude"]) == 2


@pytest.mark.slow
def test_demo_runs_end_to_end(cache, capsys):
    assert main(["demo", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "magnitude" in out and "taylor" in out and "summary" in out


def test_prune_gradually_with_agp_from_the_cli(tmp_path, capsys, factory):
    out = tmp_path / "run"
    code = main(
        [
            "prune",
            "--model",
            f"py:{factory}:make",
            "--method",
            "magnitude",
            "--sparsity",
            "0.75",
            "--data",
            "digits",
            "--finetune-epochs",
            "2",
            "--schedule",
            "agp",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    steps = [p["sparsity"] for p in report["finetune"]["pruning"]]
    assert len(steps) > 2 and steps == sorted(steps) and steps[-1] == pytest.approx(0.75)
    assert report["finetune"]["history"][-1]["sparsity"] == pytest.approx(0.75, abs=1e-3)


@pytest.mark.slow
def test_prune_then_recover_with_the_original_model_teaching(cache, tmp_path, capsys):
    from prunekit.data import load_data
    from prunekit.distill.losses import distillation_loss
    from prunekit.models import pretrained

    reports, outputs = {}, {}
    for distill in (True, False):
        out = tmp_path / ("kd" if distill else "plain")
        argv = ["prune", "--model", "builtin:digits-cnn", "--method", "magnitude", "--sparsity",
                "0.95", "--scope", "global", "--finetune-epochs", "3", "--out", str(out),
                "--json", *(["--distill"] if distill else [])]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
        reports[distill] = json.loads(capsys.readouterr().out)
        outputs[distill] = pk.load(out / "model").eval()
    report = reports[True]
    assert "original model" in report["finetune"]["teacher"]
    history = report["finetune"]["history"]
    assert history[-1]["eval_accuracy"] > report["accuracy_after_prune"]
    # The teacher taught: the student's outputs are closer to the original model's than those
    # of the same run without it.
    dense = pretrained("digits-cnn", progress=False).eval()
    x = torch.cat([x for x, _ in load_data("digits").loader("test", batch_size=1000)])
    with torch.no_grad():
        kl = {k: float(distillation_loss(m(x), dense(x), 4.0)) for k, m in outputs.items()}
    assert kl[True] < 0.6 * kl[False]


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_prune_a_hugging_face_causal_lm_on_text(tmp_path, capsys, method, gpt2_folder):
    import transformers

    folder, text = gpt2_folder
    out = tmp_path / "run"
    code = main(
        [
            "prune",
            "--model",
            f"hf:{folder}",
            "--method",
            method,
            "--pattern",
            "2:4",
            "--data",
            f"text:{text}",
            "--seq-len",
            "16",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert report["evaluation"]["seq_len"] == 16 and report["evaluation"]["split"] == "test"
    (name,) = [k for k in report["comparison"]["after"]["metrics"] if k.startswith("perplexity")]
    assert "16 tokens" in name and "test split" in name
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out / "model")
    c_fc = reloaded.transformer.h[0].mlp.c_fc.weight  # Conv1D: [in, out]; groups run along in
    assert torch.all((c_fc.t().reshape(-1, 4) == 0).sum(dim=1) == 2)
    assert (
        reloaded.transformer.wte.weight.count_nonzero() == reloaded.transformer.wte.weight.numel()
    )
    assert transformers.AutoTokenizer.from_pretrained(out / "model") is not None
    # the saved folder measures to the same perplexity, with the same settings in its name
    assert (
        main(
            [
                "measure",
                str(out / "model"),
                "--data",
                f"text:{text}",
                "--seq-len",
                "16",
                "--json",
                "--no-latency",
            ]
        )
        == 0
    )
    measured = json.loads(capsys.readouterr().out)
    assert measured["metrics"][name] == pytest.approx(
        report["comparison"]["after"]["metrics"][name]
    )


def test_text_shorter_than_one_window_is_a_clear_error(tmp_path, capsys, gpt2_folder):
    folder, text = gpt2_folder
    text.write_text("short\nlines\n")
    code = main(
        [
            "prune",
            "--model",
            f"hf:{folder}",
            "--method",
            "wanda",
            "--data",
            f"text:{text}",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    assert "window" in capsys.readouterr().err


def test_any_config_field_is_reachable_with_set(tmp_path, capsys, gpt2_folder):
    folder, text = gpt2_folder
    argv = [
        "prune",
        "--model",
        f"hf:{folder}",
        "--method",
        "wanda",
        "--sparsity",
        "0.5",
        "--data",
        f"text:{text}",
        "--seq-len",
        "16",
        "--set",
        "allocation=owl",
    ]
    out = ["--out", str(tmp_path / "run"), "--json"]
    assert main([*argv, "--set", "owl_lambda=0.1", *out]) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["allocation"] == "owl" and report["config"]["owl_lambda"] == 0.1
    assert main([*argv, "--set", "bogus=1", "--out", str(tmp_path / "o")]) == 2
    assert "bogus" in capsys.readouterr().err
