"""``prunekit prune --low-memory``: a Hugging Face folder pruned one block at a time."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from prunekit.cli import main


@pytest.fixture
def llama_folder(hf_text_folder):
    from tests import hf_zoo
    from tests.models.test_hf import VOCAB

    return hf_text_folder(hf_zoo.llama_gqa(len(VOCAB)).to(torch.bfloat16), 12, 60)


def test_writes_a_pruned_folder_that_from_pretrained_opens(tmp_path, llama_folder, capsys):
    folder, text = llama_folder
    out = tmp_path / "out"
    argv = ["prune", "--model", f"hf:{folder}", "--method", "sparsegpt", "--sparsity", "0.5",
            "--data", f"text:{text}", "--seq-len", "16", "--num-samples", "8", "--low-memory",
            "--out", str(out), "--json"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "sparsegpt"
    model = transformers.AutoModelForCausalLM.from_pretrained(out / "model")
    assert model.dtype == torch.bfloat16
    weights = [
        m.weight for n, m in model.named_modules() if ".layers." in n and hasattr(m, "in_features")
    ]
    assert sum(int((w == 0).sum()) for w in weights) / sum(
        w.numel() for w in weights
    ) == pytest.approx(0.5, abs=0.01)
    assert {p.name for p in out.iterdir()} == {"model", "report.json", "report.md"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "magnitude"], "calibration-based method"),
        (["--method", "wanda", "--model", "builtin:lenet300"], "give --model hf:PATH"),
    ],
)
def test_bad_combinations_exit_2_and_write_nothing(tmp_path, llama_folder, capsys, extra, message):
    folder, text = llama_folder
    out = tmp_path / "out"
    argv = ["prune", "--model", f"hf:{folder}", "--sparsity", "0.5", "--data", f"text:{text}",
            "--low-memory", "--out", str(out), *extra]  # fmt: skip
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
