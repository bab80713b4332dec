"""prune_hidden=True: the residual-stream width of transformers and ConvNeXt's stage widths.

Every Hugging Face transformer of the test zoo, at ratio 0.5 (heads, FFN neurons and the hidden
width each halved): the hidden width shrinks, the model runs, it keeps at most 40 % of its
parameters, the report gives the output difference, and the rewritten config reopens it with
``from_pretrained`` exactly (or, where the config cannot express the widths, prunekit's own
save/load does).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import transformers

import prunekit as pk
from prunekit.cli import main
from prunekit.errors import PrunekitError
from prunekit.prune.structured import hidden as hidden_mod
from prunekit.prune.structured.trace import run_model
from tests import hf_zoo

HALF = pk.MagnitudeConfig(sparsity=0.5, pattern="channel", prune_hidden=True)

# from_pretrained reopens these from the rewritten config.
REOPENED = [
    "gpt2", "llama_gqa", "mistral_gqa", "qwen2_gqa", "gemma", "phi", "opt", "gpt_neox", "bert",
    "distilbert", "roberta", "albert", "t5_encoder", "vit", "deit", "dinov2", "beit",
    "clip_vision", "swin", "segformer", "whisper_encoder", "convnext", "convnext_v2",
]  # fmt: skip
# Their configs cannot express the pruned widths: Falcon's multi-query heads and Bloom's ALiBi
# heads stay, and both derive the head size from hidden_size; SegFormer's stages lose different
# fractions of their heads (1 of 1 kept, 1 of 2).
CONFIG_INCOMPLETE = ["falcon_mqa", "bloom", "segformer_single_head"]


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _outputs(model: torch.nn.Module, inputs: dict) -> list[torch.Tensor]:
    with torch.no_grad():
        return [o.clone() for o in run_model(model, inputs)]


def _pruned(name: str):
    model, inputs = hf_zoo.ZOO[name]()
    hf_zoo.perturb_(model)
    before = _params(model)
    report = pk.prune_(model, HALF, example_inputs=inputs)
    return model, inputs, report, before


def _check_pruned(model, inputs, report, before) -> None:
    widths = [(g.before, g.after) for g in report.groups if g.kind == "hidden"]
    assert widths and all(after < before_ for before_, after in widths)
    outputs = _outputs(model, inputs)
    assert outputs and all(torch.isfinite(o).all() for o in outputs if o.is_floating_point())
    assert _params(model) <= 0.40 * before
    h = report.hidden_width
    assert h is not None and h.rel_error is not None and 0 < h.rel_error < 10
    assert -1 <= h.cosine <= 1


@pytest.mark.parametrize("name", REOPENED)
def test_half_width_runs_keeps_at_most_40_percent_and_reopens(name, tmp_path):
    model, inputs, report, before = _pruned(name)
    _check_pruned(model, inputs, report, before)
    h = report.hidden_width
    assert h.config_complete is True and h.config_updates
    model.save_pretrained(tmp_path)
    reopened = type(model).from_pretrained(tmp_path).eval()
    for a, b in zip(_outputs(model, inputs), _outputs(reopened, inputs), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", CONFIG_INCOMPLETE)
def test_configs_that_cannot_express_the_widths_still_save_and_load(name, tmp_path):
    model, inputs, report, before = _pruned(name)
    _check_pruned(model, inputs, report, before)
    assert report.hidden_width.config_complete is False
    pk.save(model, tmp_path / "m")
    loaded = pk.load(tmp_path / "m")
    for a, b in zip(_outputs(model, inputs), _outputs(loaded, inputs), strict=True):
        assert torch.equal(a, b)


def test_heads_and_ffn_are_still_verified_against_the_masked_model():
    _, _, report, _ = _pruned("llama_gqa")
    kinds = {g.kind for g in report.groups if g.after < g.before}
    assert kinds == {"head", "channel", "hidden"}
    assert report.max_diff is not None and report.max_diff < 1e-4


def test_a_narrowed_model_output_is_reported_and_compared_on_the_kept_channels():
    _, _, report, _ = _pruned("t5_encoder")
    assert report.hidden_width.resized == ["output 0: [2, 8, 32] → [2, 8, 16]"]
    notes = "\n".join(report.notes())
    assert "not output-equivalent" in notes and "narrower output" in notes


def _bert_classifier() -> transformers.BertForSequenceClassification:
    """Built like tests/hf_zoo.py's ``bert``, with a pooler read by a 3-label classifier."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=hf_zoo.VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, num_labels=3,
    )  # fmt: skip
    return hf_zoo.perturb_(transformers.BertForSequenceClassification(config).eval())


def _reopens_exactly(model, inputs, path) -> None:
    model.save_pretrained(path)
    reopened = type(model).from_pretrained(path).eval()
    for a, b in zip(_outputs(model, inputs), _outputs(reopened, inputs), strict=True):
        assert torch.equal(a, b)


def test_bert_pooler_output_narrows_with_the_stream_and_is_compared_on_its_kept_channels():
    model, inputs = hf_zoo.ZOO["bert"]()
    hf_zoo.perturb_(model)
    silent = [2, 9, 30]
    with torch.no_grad():
        model.pooler.dense.weight[silent] = 0.0  # pooler_output is tanh(0) = 0 there
        model.pooler.dense.bias[silent] = 0.0
    reference = _outputs(model, inputs)
    # Only the stream (and the pooler tied to it): heads and FFN would change the reference.
    config = pk.MagnitudeConfig(
        sparsity=0.5, pattern="channel", prune_hidden=True, targets=["re:^embeddings"]
    )
    report = pk.prune_(model, config, example_inputs=inputs)
    assert {g.name for g in report.groups} == {"embeddings.word_embeddings", "pooler.dense"}
    h = report.hidden_width
    assert h.resized == ["output 0: [2, 8, 32] → [2, 8, 16]", "output 1: [2, 32] → [2, 16]"]
    assert model.pooler.dense.weight.shape == (16, 16)
    gone = report.plan["pooler.dense.weight"][0]
    assert set(silent) <= set(gone)
    # Each output is compared on its own kept channels: the stream's, the pooler's.
    stream = np.setdiff1d(np.arange(32), report.plan["encoder.layer.1.output.LayerNorm.weight"][0])
    pooled = np.setdiff1d(np.arange(32), gone)
    assert not np.array_equal(stream, pooled)
    expected = [reference[0][..., stream], reference[1][:, pooled]]
    after = _outputs(model, inputs)
    err = sum(float((a - r).double().pow(2).sum()) for a, r in zip(after, expected, strict=True))
    norm = sum(float(r.double().pow(2).sum()) for r in expected)
    assert h.rel_error == pytest.approx((err / norm) ** 0.5, rel=1e-3)


def test_bert_classifier_reopens_and_its_logits_keep_their_width(tmp_path):
    model, inputs = _bert_classifier(), hf_zoo.text_inputs()
    report = pk.prune_(model, HALF, example_inputs=inputs)
    assert report.hidden_width.config_complete is True and report.hidden_width.resized == []
    assert model.config.hidden_size == 16
    assert model.bert.pooler.dense.weight.shape == (16, 16)
    assert model.classifier.weight.shape == (3, 16)
    assert _outputs(model, inputs)[0].shape == (2, 3)
    _reopens_exactly(model, inputs, tmp_path)


def test_a_layer_tied_to_the_hidden_width_follows_it_not_the_ratio(tmp_path):
    # The stream and the heads lose a quarter, the FFN and (by the ratio) the pooler half: the
    # pooler takes the stream's 24 instead, which the rewritten config expresses.
    config = pk.MagnitudeConfig(
        sparsity=0.5, pattern="channel", prune_hidden=True,
        layer_sparsity={"re:embeddings": 0.25, "re:attention": 0.25},
    )  # fmt: skip
    model, inputs = _bert_classifier(), hf_zoo.text_inputs()
    report = pk.prune_(model, config, example_inputs=inputs)
    widths = {g.name: (g.before, g.after) for g in report.groups}
    assert widths["bert.embeddings.word_embeddings"] == (32, 24)
    assert widths["bert.encoder.layer.0.intermediate.dense"] == (64, 32)
    assert widths["bert.pooler.dense"] == (32, 24)
    assert report.hidden_width.config_complete is True
    assert report.hidden_width.config_updates["hidden_size"] == 24
    _reopens_exactly(model, inputs, tmp_path)


def test_the_channels_carrying_no_signal_go_first():
    model, inputs = hf_zoo.ZOO["llama_gqa"]()
    silent = [3, 11, 20]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p[silent] = 0.0  # every RMSNorm outputs 0 there: the stream carries nothing
    report = pk.prune_(model, HALF, example_inputs=inputs)
    gone = report.plan["model.norm.weight"][0]
    assert set(silent) <= set(gone)


def test_dry_run_plans_the_hidden_width_and_changes_nothing():
    model, inputs = hf_zoo.ZOO["gpt2"]()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    report = pk.prune_(model, HALF, example_inputs=inputs, dry_run=True)
    assert not report.applied and len(report.plan["transformer.wte.weight"][1]) == 16
    assert model.config.n_embd == 32
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def _unchanged(model, state, config) -> None:
    now = model.state_dict()
    assert now.keys() == state.keys()
    assert all(torch.equal(state[k], now[k]) for k in state)
    assert model.config.to_dict() == config


@pytest.mark.parametrize("name", ["llama_gqa", "bert"])
def test_a_failure_after_the_shrink_leaves_model_and_config_untouched(name, monkeypatch):
    model, inputs = hf_zoo.ZOO[name]()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    config = model.config.to_dict()
    reference = _outputs(model, inputs)

    original = hidden_mod.rewrite_config_

    def rewrite_then_fail(m):
        original(m)  # the config is rewritten, then something fails
        raise RuntimeError("disk full")

    monkeypatch.setattr(hidden_mod, "rewrite_config_", rewrite_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        pk.prune_(model, HALF, example_inputs=inputs)
    _unchanged(model, state, config)
    for a, b in zip(_outputs(model, inputs), reference, strict=True):
        assert torch.equal(a, b)


def test_a_model_without_norms_is_refused_untouched():
    model, inputs = hf_zoo.ZOO["resnet"]()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PrunekitError, match="no LayerNorm/RMSNorm") as err:
        pk.prune_(model, HALF, example_inputs=inputs)
    assert "prune_hidden=False" in str(err.value)
    _unchanged(model, state, model.config.to_dict())


def test_a_blocked_norm_chain_names_the_module_and_why():
    model, inputs = hf_zoo.ZOO["mobilevit"]()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    config = model.config.to_dict()
    with pytest.raises(PrunekitError) as err:
        pk.prune_(model, HALF, example_inputs=inputs)
    message = str(err.value)
    assert "mobilevit.encoder.layer.2.transformer.layer.0.layernorm_before (LayerNorm)" in message
    assert "reshaped across dimensions" in message
    _unchanged(model, state, config)


@pytest.mark.parametrize(
    "fields", [{"pattern": "head"}, {"pattern": "unstructured"}, {"reconstruct": True}]
)
def test_config_refuses_prune_hidden_outside_plain_channel_pruning(fields):
    with pytest.raises(ValueError, match="prune_hidden=True needs pattern='channel'"):
        pk.MagnitudeConfig(**{"pattern": "channel", "prune_hidden": True, **fields})


def test_cli_prune_hidden_on_a_model_without_norms_exits_2(tmp_path, capsys):
    from safetensors.torch import save_model

    from prunekit.models import DigitsCNN

    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_model(DigitsCNN(), str(weights))
    argv = ["prune", "--model", "builtin:digits-cnn", "--weights", str(weights), "--data",
            "digits", "--method", "magnitude", "--pattern", "channel", "--sparsity", "0.5",
            "--prune-hidden", "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "prune_hidden" in err and "no LayerNorm/RMSNorm" in err
    assert not (tmp_path / "o").exists()


def test_prune_hidden_is_a_recipe_field():
    config = pk.MagnitudeConfig(pattern="channel", prune_hidden=True)
    assert pk.MagnitudeConfig(**config.to_dict()) == config
    assert copy.deepcopy(config).prune_hidden is True
