"""Hugging Face models whose ``save_pretrained`` renames weights by default: transformers 5
writes SegFormer's ``stages.N.blocks`` as ``encoder.block.N``, ViT's and Swin's ``q_proj`` as
``attention.query`` and GPT-NeoX's ``lm_head`` as ``embed_out`` (its checkpoint conversion
mapping, reversed). ``pk.save`` keeps the state_dict names, so ``pk.load`` and
``from_pretrained`` both reopen the folder exactly, structurally pruned or not."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

import prunekit as pk
from prunekit.artifact.io import read_manifest
from prunekit.prune.structured.trace import run_model
from tests import hf_zoo


def _outputs(model: torch.nn.Module, inputs: dict) -> list[torch.Tensor]:
    with torch.no_grad():
        return [o.clone() for o in run_model(model, inputs)]


def _assert_same_outputs(a: torch.nn.Module, b: torch.nn.Module, inputs: dict) -> None:
    for x, y in zip(_outputs(a, inputs), _outputs(b, inputs), strict=True):
        assert torch.equal(x, y)


def _stored_names(folder) -> set[str]:
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        return set(f.keys())


@pytest.mark.parametrize("name", ["segformer", "vit", "swin", "gpt_neox"])
def test_a_model_whose_save_renames_weights_round_trips_and_opens_with_from_pretrained(
    name, tmp_path
):
    model, inputs = hf_zoo.ZOO[name]()
    hf_zoo.perturb_(model)
    out = pk.save(model, tmp_path / "m")
    manifest = read_manifest(out)
    assert manifest["storage"] == "plain"
    untied = {n for n, e in manifest["tensors"].items() if "tied_to" not in e}
    assert _stored_names(out) == untied
    _assert_same_outputs(model, pk.load(out), inputs)
    _assert_same_outputs(model, type(model).from_pretrained(out).eval(), inputs)


@pytest.mark.parametrize("prune_hidden", [False, True])
def test_a_structurally_pruned_segformer_round_trips(prune_hidden, tmp_path):
    model, inputs = hf_zoo.ZOO["segformer"]()
    hf_zoo.perturb_(model)
    config = pk.MagnitudeConfig(sparsity=0.5, pattern="channel", prune_hidden=prune_hidden)
    pk.prune_(model, config, example_inputs=inputs)
    out = pk.save(model, tmp_path / "m")
    assert read_manifest(out)["structure"]["record"]
    _assert_same_outputs(model, pk.load(out), inputs)
    fresh, _ = hf_zoo.ZOO["segformer"]()  # the user's own dense instance, as built before pruning
    _assert_same_outputs(model, pk.load(out, model=fresh), inputs)


def test_a_transformers_without_the_opt_out_is_refused_with_the_way_out(tmp_path):
    # A save_pretrained that cannot be asked to keep the names (transformers before 5, which
    # renames a few models' weights on save) writes a file the manifest cannot describe.
    model, inputs = hf_zoo.ZOO["segformer"]()
    model.save_pretrained = lambda folder, **kw: type(model).save_pretrained(model, folder, **kw)
    with pytest.raises(pk.PrunekitError, match=r"names differ from state_dict\(\).*compress=True"):
        pk.save(model, tmp_path / "m")
    assert not (tmp_path / "m").exists()
    _assert_same_outputs(model, pk.load(pk.save(model, tmp_path / "m", compress=True)), inputs)
