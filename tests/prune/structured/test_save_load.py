"""A structurally pruned model survives pk.save → pk.load: shapes, attributes, exact outputs.

The manifest carries the structure record; load replays it on the freshly built dense model
before loading the weights. Hugging Face folders also get the widths config.json can express.
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from torch import nn

import prunekit as pk
from prunekit.errors import PrunekitError
from prunekit.surgery.shrink import structure_record
from tests import hf_zoo, zoo


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _logits(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        out = model(**inputs)
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


@pytest.mark.parametrize("factory", [zoo.CNNBN, zoo.Residual, zoo.GroupedConcat])
def test_channel_pruned_cnn_round_trips_into_a_fresh_instance(tmp_path, factory):
    torch.manual_seed(0)
    model = factory().eval()
    (x, _), *_ = zoo.image_batches()
    report = pk.prune_(model, pk.MagnitudeConfig(pattern="channel", sparsity=0.5), example_inputs=x)
    assert report.applied and report.params[1] < report.params[0]

    pk.save(model, tmp_path / "m")
    manifest = pk.artifact.io.read_manifest(tmp_path / "m")
    assert manifest["structure"]["record"] == structure_record(model)
    assert "from_pretrained" not in manifest["structure"]  # a plain module: no HF config

    torch.manual_seed(1)
    loaded = pk.load(tmp_path / "m", model=factory())
    assert _shapes(loaded) == _shapes(model)
    assert torch.equal(loaded(x), model(x))
    assert structure_record(loaded) == structure_record(model)


def test_a_reloaded_pruned_model_saves_the_same_structure_again(tmp_path):
    torch.manual_seed(0)
    model = zoo.CNNBN().eval()
    (x, _), *_ = zoo.image_batches()
    pk.prune_(model, pk.MagnitudeConfig(pattern="channel", sparsity=0.5), example_inputs=x)
    pk.save(model, tmp_path / "a")
    pk.save(pk.load(tmp_path / "a", model=zoo.CNNBN()), tmp_path / "b")
    first, second = (pk.artifact.io.read_manifest(tmp_path / d) for d in ("a", "b"))
    assert first["structure"] == second["structure"] and first["tensors"] == second["tensors"]
    assert torch.equal(pk.load(tmp_path / "b", model=zoo.CNNBN())(x), model(x))


def test_a_pruned_builtin_saved_without_source_rebuilds_by_name(tmp_path):
    from prunekit.models import DigitsCNN

    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x = torch.randn(4, 1, 8, 8)
    pk.prune_(model, pk.MagnitudeConfig(pattern="channel", sparsity=0.5), example_inputs=x)
    pk.save(model, tmp_path / "m")
    assert pk.artifact.io.read_manifest(tmp_path / "m")["source"]["name"] == "digits-cnn"
    loaded = pk.load(tmp_path / "m")  # no model=: built by name, then the record replayed
    assert isinstance(loaded, DigitsCNN) and torch.equal(loaded(x), model(x))


def test_a_model_of_another_shape_is_rejected_and_left_untouched(tmp_path):
    torch.manual_seed(0)
    model = zoo.CNNBN().eval()
    (x, _), *_ = zoo.image_batches()
    pk.prune_(model, pk.MagnitudeConfig(pattern="channel", sparsity=0.5), example_inputs=x)
    pk.save(model, tmp_path / "m")

    other = zoo.CNNBN()
    other.head = nn.Linear(16 * 4 * 4, 12)  # 12 outputs: not what the artifact was pruned from
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(PrunekitError, match=r"'head'.*out_features=12.*imply 10"):
        pk.load(tmp_path / "m", model=other)
    assert {k: v for k, v in other.state_dict().items()}.keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
    assert other.head.in_features == 256 and other.features[0].out_channels == 8
    assert structure_record(other) == []

    with pytest.raises(PrunekitError, match="missing in the model"):
        pk.load(tmp_path / "m", model=zoo.Residual())


LLAMA_HEADS = {"num_attention_heads": 2, "num_key_value_heads": 1}


@pytest.mark.parametrize(
    ("name", "from_pretrained", "config"),
    [
        # BERT's head size is hidden/heads, GPT-2's n_embd/n_head: a head count cannot say it.
        ("bert", False, {"intermediate_size": 32}),
        ("gpt2", False, {"n_inner": 64}),
        # LLaMA's config fixes head_dim, so the head counts and FFN width say everything.
        ("llama_gqa", True, {"intermediate_size": 32, **LLAMA_HEADS}),
    ],
)
def test_head_and_ffn_pruned_transformer_round_trips(tmp_path, name, from_pretrained, config):
    model, inputs = hf_zoo.ZOO[name]()
    hf_zoo.perturb_(model)
    dense = _shapes(model)
    pk.prune_(model, pk.MagnitudeConfig(pattern="head", sparsity=0.5), example_inputs=inputs)
    pk.prune_(model, pk.MagnitudeConfig(pattern="channel", sparsity=0.5), example_inputs=inputs)
    assert _shapes(model) != dense

    pk.save(model, tmp_path / "m")
    structure = pk.artifact.io.read_manifest(tmp_path / "m")["structure"]
    assert structure["from_pretrained"] is from_pretrained and structure["config"] == config
    written = json.loads((tmp_path / "m" / "config.json").read_text())
    assert {k: written[k] for k in config} == config

    loaded = pk.load(tmp_path / "m")  # rebuilt from config.json, then the record replayed
    assert type(loaded) is type(model) and _shapes(loaded) == _shapes(model)
    assert torch.equal(_logits(loaded, inputs), _logits(model, inputs))
    fresh, _ = hf_zoo.ZOO[name]()  # the user's own dense instance, as built before pruning
    into = pk.load(tmp_path / "m", model=fresh)
    assert torch.equal(_logits(into, inputs), _logits(model, inputs))


def test_uniformly_ffn_pruned_llama_opens_with_from_pretrained(tmp_path):
    model, inputs = hf_zoo.ZOO["llama_gqa"]()
    hf_zoo.perturb_(model)
    config = pk.MagnitudeConfig(pattern="channel", sparsity=0.5, targets=["re:.*\\.mlp\\..*"])
    pk.prune_(model, config, example_inputs=inputs)
    assert {m.out_features for n, m in model.named_modules() if n.endswith("up_proj")} == {32}

    pk.save(model, tmp_path / "m")
    assert pk.artifact.io.read_manifest(tmp_path / "m")["structure"]["from_pretrained"] is True
    reopened = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert reopened.config.intermediate_size == 32
    assert _shapes(reopened) == _shapes(model)
    assert torch.equal(_logits(reopened, inputs), _logits(model, inputs))
    assert torch.equal(_logits(pk.load(tmp_path / "m"), inputs), _logits(model, inputs))


def test_saving_edits_config_json_not_the_models_config(tmp_path):
    model, inputs = hf_zoo.ZOO["llama_gqa"]()
    pk.prune_(model, pk.MagnitudeConfig(pattern="channel", sparsity=0.5), example_inputs=inputs)
    pk.save(model, tmp_path / "m")
    keys = ("intermediate_size", "num_attention_heads", "num_key_value_heads")
    assert [getattr(model.config, k) for k in keys] == [64, 4, 2]
    written = json.loads((tmp_path / "m" / "config.json").read_text())
    assert [written[k] for k in keys] == [32, 2, 1]
