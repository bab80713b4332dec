"""prune_hidden=True: the residual-stream width of transformers and ConvNeXt's stage widths.

Every Hugging Face transformer of the test zoo, at ratio 0.5 (heads, FFN neurons and the hidden
width each halved): the hidden width shrinks, the model runs, it keeps at most 40 % of its
parameters, the report gives the output difference, and the rewritten config reopens it with
``from_pretrained`` exactly (or, where the config cannot express the widths, prunekit's own
save/load does).
"""

from __future__ import annotations

import copy

import pytest
import torch

import prunekit as pk
from prunekit.cli import main
from prunekit.errors import PrunekitError
from prunekit.prune.structured import hidden as hidden_mod
from prunekit.prune.structured.trace import run_model
from tests import hf_zoo

HALF = pk.MagnitudeConfig(sparsity=0.5, pattern="channel", prune_hidden=True)

# from_pretrained reopens these from the rewritten config.
REOPENED = [
    "gpt2", "llama_gqa", "mistral_gqa", "qwen2_gqa", "gemma", "phi", "opt", "gpt_neox",
    "distilbert", "roberta", "albert", "t5_encoder", "vit", "deit", "dinov2", "beit",
    "clip_vision", "swin", "segformer", "whisper_encoder", "convnext", "convnext_v2",
]  # fmt: skip
# Their configs cannot express the pruned widths: BertModel's pooler output keeps its width
# (a model output) while its config ties it to hidden_size; Falcon's multi-query heads and
# Bloom's ALiBi heads stay, and both derive the head size from hidden_size; SegFormer's stages
# lose different fractions of their heads (1 of 1 kept, 1 of 2).
CONFIG_INCOMPLETE = ["bert", "falcon_mqa", "bloom", "segformer_single_head"]


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
    if name == "segformer_single_head":
        # prunekit.save of any structurally pruned SegFormer fails (transformers renames its
        # patch-embedding weights on save), with or without prune_hidden.
        return
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


def test_a_failure_after_the_shrink_leaves_model_and_config_untouched(monkeypatch):
    model, inputs = hf_zoo.ZOO["llama_gqa"]()
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
