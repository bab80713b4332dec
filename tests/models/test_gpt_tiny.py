"""builtin:gpt-tiny: the architecture, its tokenizer, and (slow) that training really learns."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import transformers
from torch import nn

from prunekit.data.corpus import corpus_splits
from prunekit.errors import PrunekitError
from prunekit.measure import perplexity
from prunekit.models import available, build, model_info
from prunekit.models import gpt_tiny as gt


@pytest.fixture(scope="module")
def train_lines() -> list[str]:
    return corpus_splits()["train"][:1500]


@pytest.fixture(scope="module")
def tokenizer(train_lines: list[str]):
    return gt.train_tokenizer(train_lines, vocab_size=512)


def test_registered_as_a_causal_lm() -> None:
    info = model_info("gpt-tiny")
    assert "gpt-tiny" in available() and info.task == "causal-lm" and info.loader is not None
    assert info.num_classes == gt.RECIPE.vocab_size


def test_has_the_intended_parameter_count_and_tied_head() -> None:
    r = gt.RECIPE
    d, layers = r.n_embd, r.n_layer
    # token + position embeddings, per block 12·d² weights + 13·d biases/norms, final norm
    expected = r.vocab_size * d + r.n_positions * d + layers * (12 * d * d + 13 * d) + 2 * d
    model = build("gpt-tiny")
    assert sum(p.numel() for p in model.parameters()) == expected == 1_350_400
    assert model.lm_head.weight is model.transformer.wte.weight


def test_every_linear_in_width_is_a_multiple_of_8() -> None:
    conv1d = transformers.pytorch_utils.Conv1D
    widths = {}
    for name, module in build("gpt-tiny").named_modules():
        if isinstance(module, nn.Linear):
            widths[name] = module.weight.shape[1]
        elif isinstance(module, conv1d):  # GPT-2's Conv1D stores weight as [in, out]
            widths[name] = module.weight.shape[0]
    assert len(widths) == 4 * gt.RECIPE.n_layer + 1
    assert all(width % 8 == 0 for width in widths.values()), widths


def test_maps_token_ids_to_next_token_logits() -> None:
    torch.manual_seed(0)
    model = build("gpt-tiny", n_layer=1).eval()
    ids = torch.randint(0, gt.RECIPE.vocab_size, (2, 16))
    assert model(input_ids=ids).logits.shape == (2, 16, gt.RECIPE.vocab_size)


def test_bad_override_is_a_prunekit_error() -> None:
    with pytest.raises(PrunekitError, match="n_layers"):
        build("gpt-tiny", n_layers=2)


def test_tokenizer_round_trips_and_reloads(tokenizer, train_lines: list[str], tmp_path) -> None:
    assert tokenizer.convert_tokens_to_ids(gt.EOT) == 0 and len(tokenizer) == 512
    ascii_lines = [line for line in train_lines if line.isascii()][:300]
    for line in ascii_lines:
        assert tokenizer.decode(tokenizer.encode(line)) == line
    tokenizer.save_pretrained(tmp_path)
    reloaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert [reloaded.encode(x) for x in ascii_lines] == [tokenizer.encode(x) for x in ascii_lines]


def test_tokenizer_training_is_deterministic(tokenizer, train_lines: list[str]) -> None:
    again = gt.train_tokenizer(train_lines, vocab_size=512)
    assert again.get_vocab() == tokenizer.get_vocab()
    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()


def test_lines_are_joined_by_eot_and_cut_into_windows(tokenizer) -> None:
    stream = gt.token_stream(tokenizer, ["Hello there.", "Bye."])
    assert int((stream == 0).sum()) == 1
    assert tokenizer.decode(stream) == "Hello there.<|endoftext|>Bye."
    assert gt.windows(stream, 3).shape == (stream.numel() // 3, 3)


def test_perplexities_of_uninformed_models_are_near_the_vocab_size() -> None:
    stream = torch.arange(64).repeat(40)
    assert gt.unigram_perplexity(stream, gt.windows(stream, 16), 64) == pytest.approx(64)
    torch.manual_seed(0)
    model = build("gpt-tiny", n_layer=1, vocab_size=512)
    windows = torch.randint(0, 512, (4, 32))
    assert 256 < perplexity(model, [windows]) < 1024


def test_cache_folder_is_replaced_whole(tmp_path: Path) -> None:
    folder = tmp_path / "gpt-tiny"
    gt._write_folder(folder, lambda tmp: (tmp / "a.json").write_text("1"))
    gt._write_folder(folder, lambda tmp: (tmp / "b.json").write_text("2"))
    assert [p.name for p in tmp_path.iterdir()] == ["gpt-tiny"]
    assert [p.name for p in folder.iterdir()] == ["b.json"]


@pytest.mark.slow
def test_training_learns_and_the_cache_reloads_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, source = gt.pretrained_gpt_tiny(tmp_path, max_steps=30, progress=False)
    folder = Path(source["path"])
    assert folder == gt.gpt_tiny_dir(tmp_path)
    assert source["kind"] == "hf" and source["name"] == "gpt-tiny"
    assert source["dataset"] == f"text:{tmp_path / 'data' / 'fortunes' / 'calib.txt'}"
    assert {"config.json", "model.safetensors", "tokenizer.json", gt.RECORD} <= {
        p.name for p in folder.iterdir()
    }
    record = gt._read_record(folder)
    assert record["eval_perplexity"] < 0.25 * record["untrained_perplexity"]
    assert record["tokens"]["eval"] > 30_000 and record["tokens"]["train"] > 500_000

    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    lines = Path(source["eval"].removeprefix("text:")).read_text().splitlines()
    windows = gt.windows(gt.token_stream(tokenizer, lines), 128)[:8]
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=windows).logits, reloaded(input_ids=windows).logits)
    assert math.isclose(perplexity(model, [windows]), perplexity(reloaded, [windows]))

    # A second call loads the cache instead of training again.
    monkeypatch.setattr(gt, "_train_into", lambda *a: pytest.fail("retrained"))
    again, _ = gt.pretrained_gpt_tiny(tmp_path, max_steps=30, progress=False)
    assert torch.equal(again.lm_head.weight, model.lm_head.weight)
