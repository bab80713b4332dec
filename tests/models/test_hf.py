"""hf:PATH models and builtin:minilm: loading, save/load round trips, from_pretrained, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import transformers
from torch import nn

from prunekit.artifact import io
from prunekit.errors import PrunekitError
from prunekit.measure.text import embed
from prunekit.models import build
from prunekit.models.hf import is_decoder, load_hf, load_tokenizer
from prunekit.models.minilm import minilm_dir, minilm_tokenizer
from prunekit.specs import load_model
from tests import hf_zoo

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz", "the"]


def tiny_tokenizer(folder: Path) -> transformers.PreTrainedTokenizerBase:
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    return transformers.BertTokenizerFast(vocab_file=str(vocab))


def tiny_bert() -> nn.Module:
    return hf_zoo.bert(len(VOCAB))


def tiny_gpt2(vocab_size: int = 97) -> nn.Module:
    return hf_zoo.gpt2(vocab_size)


@pytest.fixture
def bert_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "bert"
    folder.mkdir()
    tiny_bert().save_pretrained(str(folder))
    tiny_tokenizer(tmp_path).save_pretrained(str(folder))
    return folder


@pytest.fixture
def gpt2_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "gpt2"
    tiny_gpt2().save_pretrained(str(folder))
    tiny_tokenizer(tmp_path).save_pretrained(str(folder))
    return folder


def ids(n: int = 12, vocab: int = len(VOCAB)) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(5, vocab, (2, n), generator=g)
    return {"input_ids": x, "attention_mask": torch.ones_like(x)}


def test_hf_spec_loads_an_encoder_as_its_architecture(bert_dir: Path) -> None:
    model, source = load_model(f"hf:{bert_dir}")
    assert type(model).__name__ == "BertModel" and not model.training
    assert source == {
        "kind": "hf",
        "path": str(bert_dir.resolve()),
        "model_type": "bert",
        "class": "BertModel",
    }
    expected = tiny_bert()(**ids()).last_hidden_state
    torch.testing.assert_close(model(**ids()).last_hidden_state, expected, rtol=0, atol=0)


def test_decoders_load_with_their_lm_head(gpt2_dir: Path) -> None:
    model, tokenizer, source = load_hf(gpt2_dir)
    assert type(model).__name__ == "GPT2LMHeadModel" and source["class"] == "GPT2LMHeadModel"
    assert tokenizer("abc")["input_ids"]
    assert model(**ids(), labels=ids()["input_ids"]).loss is not None


@pytest.mark.parametrize(
    ("config", "decoder"),
    [
        ({"model_type": "llama", "architectures": None}, True),
        ({"model_type": "custom", "architectures": ["MyForCausalLM"]}, True),
        ({"model_type": "bert", "architectures": ["BertModel"], "is_decoder": True}, True),
        ({"model_type": "bert", "architectures": ["BertForMaskedLM"]}, False),
    ],
)
def test_decoder_detection(config: dict, decoder: bool) -> None:
    assert is_decoder(type("Config", (), config)()) is decoder


@pytest.mark.parametrize("make", [tiny_bert, tiny_gpt2])
def test_save_load_round_trip_is_also_a_hugging_face_folder(make, tmp_path: Path) -> None:
    model = make()
    with torch.no_grad():  # weights that from_pretrained's initialisation could not reproduce
        for p in model.parameters():
            p.mul_(1.5)
    tokenizer = tiny_tokenizer(tmp_path)
    out = tmp_path / "artifact"
    io.save(model, out, tokenizer=tokenizer)

    assert (out / "manifest.json").is_file() and (out / "config.json").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "hf"
    assert manifest["source"]["class"] == type(model).__name__
    inputs = ids()
    expected = model(**inputs)[0]
    for reloaded in (
        io.load(out),
        type(model).from_pretrained(str(out), local_files_only=True).eval(),
        load_model(str(out))[0],
        load_model(f"hf:{out}")[0],
    ):
        assert type(reloaded) is type(model)
        assert torch.equal(reloaded(**inputs)[0], expected)
    assert load_tokenizer(out)("abc")["input_ids"] == tokenizer("abc")["input_ids"]


def test_tied_lm_head_stays_tied_after_load(tmp_path: Path) -> None:
    model = tiny_gpt2()
    io.save(model, tmp_path / "gpt")
    tensors = json.loads((tmp_path / "gpt" / "manifest.json").read_text())["tensors"]
    assert tensors["lm_head.weight"]["tied_to"] == "transformer.wte.weight"
    loaded = io.load(tmp_path / "gpt")
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()


def test_minilm_builtin_embeds_by_meaning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path))
    model, source = load_model("builtin:minilm")
    assert source["kind"] == "hf" and source["name"] == "minilm"
    assert source["path"] == str(minilm_dir())
    assert source["dataset"] == f"text:{tmp_path / 'data' / 'wordnet-glosses.txt'}"
    assert len((tmp_path / "data" / "wordnet-glosses.txt").read_text().splitlines()) == 4000
    architecture = build("minilm")
    assert {k: v.shape for k, v in architecture.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(22.7e6, rel=0.01)
    emb = embed(
        model,
        minilm_tokenizer(),
        ["a man is eating food", "a man eats a meal", "the stock market fell"],
    )
    assert emb.shape == (3, 384)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    similar, unrelated = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert similar > 0.6 > unrelated + 0.3


def test_minilm_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(PrunekitError, match=r"pip install 'prunekit\[minilm\]'"):
        minilm_dir()


def test_hf_errors_name_the_folder_and_the_fix(tmp_path: Path, bert_dir: Path) -> None:
    with pytest.raises(PrunekitError, match="is not a folder"):
        load_model(f"hf:{tmp_path / 'nope'}")
    with pytest.raises(PrunekitError, match=r"no config\.json"):
        load_model(f"hf:{tmp_path}")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        (bert_dir / name).unlink(missing_ok=True)
    model, _ = load_model(f"hf:{bert_dir}")  # the model alone needs no tokenizer
    assert isinstance(model, nn.Module)
    with pytest.raises(PrunekitError, match=rf"{re.escape(str(bert_dir))}.*has no tokenizer"):
        load_hf(bert_dir)
    with pytest.raises(PrunekitError, match="carries its own weights"):
        load_model(f"hf:{bert_dir}", weights="w.safetensors")
