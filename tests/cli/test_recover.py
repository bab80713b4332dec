"""``prunekit prune --recover distill``: one-shot pruning, then time-boxed label-free
distillation from the dense model; the masks and the N:M pattern stay, the embeddings move back
towards the dense model's; bad input exits 2 with one line."""

import json

import pytest
import torch
import transformers

import prunekit as pk
from prunekit.cli import main
from prunekit.data import load_data
from prunekit.measure.text import embedding_fidelity
from prunekit.models.hf import load_tokenizer
from prunekit.specs import load_model
from tests.models.test_hf import VOCAB


@pytest.fixture
def bert_folder(hf_text_folder):
    """A tiny BERT whose blocks matter: with the usual 0.02 init its residual stream is all
    embeddings, and pruning would not move the sentence embeddings at all."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, initializer_range=0.3,
    )  # fmt: skip
    return hf_text_folder(transformers.BertModel(config).eval(), words_per_line=10, lines=120)


def _prune(folder, text, out, *extra):
    argv = ["prune", "--model", f"hf:{folder}", "--method", "sparsegpt", "--pattern", "2:4",
            "--data", f"text:{text}", "--seq-len", "16", "--out", str(out), "--json",
            *extra]  # fmt: skip
    assert main(argv) == 0


def test_recover_distill_keeps_the_2_4_masks_and_raises_fidelity(tmp_path, capsys, bert_folder):
    folder, text = bert_folder
    _prune(folder, text, tmp_path / "plain")
    # A bound on the steps, not on the time, so the test does not depend on the machine's speed
    # (3 steps fall short of the bound below; 40 clear it three times over).
    _prune(folder, text, tmp_path / "recovered", "--recover", "distill",
           "--recover-steps", "40")  # fmt: skip
    capsys.readouterr()
    run = json.loads((tmp_path / "recovered" / "report.json").read_text())["recover"]
    assert run["steps"] == 40 and not run["out_of_time"]
    assert run["batch_size"] == 32  # lines of text recover in batches of 32, as the bench did
    dense, _ = load_model(f"hf:{folder}")
    tok = load_tokenizer(str(folder))
    test = load_data(f"text:{text}", tokenizer=tok, seq_len=16, mode="lines").loader("test", 16)
    plain, recovered = (
        pk.load(tmp_path / "plain" / "model"),
        pk.load(tmp_path / "recovered" / "model"),
    )
    for name, module in plain.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layer." in name:
            mask = recovered.get_submodule(name).weight == 0
            assert torch.equal(mask, module.weight == 0)  # the same masks, exactly
            assert torch.all(mask.reshape(-1, 4).sum(dim=1) == 2)
    before = embedding_fidelity(plain, dense, test)
    assert before < 0.99  # pruning moved the embeddings; recovery moves them back
    assert embedding_fidelity(recovered, dense, test) > before + (1 - before) / 4


def test_recover_text_adds_unlabelled_lines(tmp_path, capsys, bert_folder):
    folder, text = bert_folder
    lines = text.read_text().splitlines()
    extra = tmp_path / "more.txt"
    extra.write_text("\n".join(reversed(lines[:50])) + "\n")
    _prune(folder, text, tmp_path / "out", "--recover", "distill", "--recover-steps", "30",
           "--recover-text", str(extra))  # fmt: skip
    capsys.readouterr()
    run = json.loads((tmp_path / "out" / "report.json").read_text())["recover"]
    train = load_data(f"text:{text}", tokenizer=load_tokenizer(str(folder)), seq_len=16,
                      mode="lines").train  # fmt: skip
    # the data's training lines and every line of the extra file (both of its splits)
    assert run["text_lines"] == len(train) + 50
    assert run["steps"] == 30


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--recover", "finetune"], "--recover must be 'distill'"),
        (["--recover", "distill", "--recover-minutes", "0"], "--recover-minutes must be > 0"),
        (["--recover", "distill", "--recover-steps", "0"], "--recover-steps must be > 0"),
        (["--recover", "distill", "--finetune-epochs", "1"], "use one"),
        (["--recover", "distill", "--data", "digits"], "is not text"),
        (["--recover-text", "README.md"], "add --recover distill"),
        (["--recover", "distill", "--recover-text", "no-such.txt"], "--recover-text must be"),
    ],
)
def test_bad_recover_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    argv = ["prune", "--model", "builtin:digits-cnn", "--method", "magnitude", "--sparsity",
            "0.5", "--out", str(tmp_path / "out"), *args]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
