"""Block-wise pruning of a model folder gives the model that pruning it in memory gives."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import prunekit as pk
from prunekit.errors import PrunekitError
from prunekit.prune.folder import prune_folder
from tests.hf_zoo import llama_gqa


def _calibration() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(0, 64, (1, 16), generator=g)} for _ in range(4)]


@pytest.fixture
def folder(tmp_path):
    model = llama_gqa(vocab_size=64, layers=3).to(torch.bfloat16)
    # Small shards: the reader must follow the index across files.
    model.save_pretrained(tmp_path / "src", max_shard_size="20KB")
    return tmp_path / "src", model


@pytest.mark.parametrize(
    "config",
    [pk.SparseGPTConfig(sparsity=0.5, num_samples=4, block_size=16), pk.WandaConfig(sparsity=0.5)],
    ids=["sparsegpt", "wanda"],
)
def test_matches_in_memory_pruning(folder, tmp_path, config) -> None:
    src, _ = folder
    assert json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    report = prune_folder(src, tmp_path / "dst", config, _calibration())
    # The reference loads the folder too (from_pretrained keeps rotary frequencies in float32,
    # where model.to(bfloat16) above rounded them).
    model = transformers.AutoModelForCausalLM.from_pretrained(src)
    pk.prune_(model, config, data=_calibration())
    out = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "dst")
    assert out.dtype == torch.bfloat16
    expected = model.state_dict()
    for name, t in out.state_dict().items():
        assert torch.equal(t, expected[name]), name
    assert report.sparsity == pytest.approx(0.5, abs=0.01)
    assert len(report.layers) == 3 * 7


def test_too_little_memory_is_refused_before_writing(folder, tmp_path, monkeypatch) -> None:
    src, _ = folder
    monkeypatch.setattr("prunekit.memory.available_bytes", lambda: 1000)
    with pytest.raises(PrunekitError, match="GiB is available; use fewer calibration samples"):
        prune_folder(src, tmp_path / "dst", pk.SparseGPTConfig(sparsity=0.5), _calibration())
    assert not (tmp_path / "dst").exists()


def test_tied_lm_head_stays_tied_and_targets_name_whole_model_layers(tmp_path) -> None:
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "src")
    wanda = pk.WandaConfig(sparsity=0.5, targets=["re:.*mlp\\.down_proj$"])
    report = prune_folder(tmp_path / "src", tmp_path / "dst", wanda, _calibration())
    assert [r.name for r in report.layers] == [f"model.layers.{i}.mlp.down_proj" for i in (0, 1)]
    out = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "dst")
    assert out.lm_head.weight.data_ptr() == out.model.embed_tokens.weight.data_ptr()
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "src")
    pk.prune_(ref, wanda, data=_calibration())
    assert all(torch.equal(a, b) for a, b in zip(out.parameters(), ref.parameters(), strict=True))
