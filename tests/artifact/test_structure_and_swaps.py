"""A structurally pruned model that then has layers swapped (shared, quantized, QAT) saves and
loads again with identical outputs — with the real builders, which size the swapped-in layer
from the original one, so the original must have the pruned shapes when they run."""

from __future__ import annotations

import pytest
import torch

import prunekit as pk
from prunekit import quantize as q
from prunekit.artifact.manifest import write_manifest
from prunekit.models import build as build_builtin
from tests import hf_zoo
from tests.zoo import CNNBN, MLP, image_batches

SWAPS = {
    "shared": lambda m, data: pk.share_weights_(m, pk.KMeansConfig(bits=4, conv_bits=5)),
    "int8-dynamic": lambda m, data: q.quantize_(m, q.Int8DynamicConfig(min_features=0)),
    "int8-static": lambda m, data: q.quantize_(m, q.Int8StaticConfig(num_samples=16), data=data),
    "rtn": lambda m, data: q.quantize_(m, q.RTNConfig(bits=4, group_size=-1)),
    "gptq": lambda m, data: q.quantize_(
        m, q.GPTQConfig(bits=4, group_size=-1, num_samples=16), data=data
    ),
    "qat": lambda m, data: q.quantize_(m, q.QATConfig(), data=data),
    "qat-converted": lambda m, data: (q.quantize_(m, q.QATConfig(), data=data), q.convert_(m)),
    "shared-then-int8": lambda m, data: (
        pk.share_weights_(m, pk.KMeansConfig(bits=4)),
        q.quantize_(m, q.Int8DynamicConfig(min_features=0)),
    ),
}
# Int8-static swaps whole regions (conv+BN+ReLU); the MLP's linear layers are fine too.
MODELS = {"mlp": MLP, "cnn-bn": CNNBN}


def _pruned(name: str) -> tuple[torch.nn.Module, list]:
    torch.manual_seed(0)
    model, data = MODELS[name](), image_batches()
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.5, pattern="channel"), data=data)
    return model, data


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("swap", list(SWAPS))
def test_pruned_then_swapped_round_trips(model_name, swap, tmp_path) -> None:
    model, data = _pruned(model_name)
    SWAPS[swap](model, data)
    x = data[0][0]
    with torch.no_grad():
        out = model.eval()(x)
    pk.save(model, tmp_path / "m")
    back = pk.load(tmp_path / "m", model=MODELS[model_name]())
    with torch.no_grad():
        assert torch.equal(back(x), out)
    assert back.state_dict().keys() == model.state_dict().keys()


@pytest.mark.parametrize("swap", ["shared", "rtn", "int8-dynamic"])
def test_builtin_pruned_then_swapped_reloads_without_the_model(swap, tmp_path) -> None:
    # The case: builtin:digits-cnn, channel-pruned, shared or quantized. pk.save finds
    # the builtin source by itself, so pk.load needs no model.
    torch.manual_seed(0)
    model = build_builtin("digits-cnn").eval()
    x = torch.randn(4, 1, 8, 8)
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.5, pattern="channel"), example_inputs=(x,))
    SWAPS[swap](model, [(x, torch.zeros(4, dtype=torch.long))])
    with torch.no_grad():
        out = model.eval()(x)
    pk.save(model, tmp_path / "m")
    assert pk.artifact.io.read_manifest(tmp_path / "m")["source"]["kind"] == "builtin"
    back = pk.load(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(back(x), out)


def test_legacy_swap_records_without_original_shapes_still_load(tmp_path) -> None:
    # Artifacts written by prunekit 0.1 carry no original shapes in their swap records; the
    # pruned shapes follow from the replayed size attributes (in/out features, channels).
    model, data = _pruned("cnn-bn")
    SWAPS["shared"](model, data)
    x = data[0][0]
    with torch.no_grad():
        out = model.eval()(x)
    pk.save(model, tmp_path / "m", compress=False)
    manifest = pk.artifact.io.read_manifest(tmp_path / "m")
    assert all("shapes" in e for e in manifest["swaps"])
    for entry in manifest["swaps"]:
        del entry["shapes"]
    write_manifest(tmp_path / "m", manifest)
    back = pk.load(tmp_path / "m", model=CNNBN())
    with torch.no_grad():
        assert torch.equal(back(x), out)


def test_head_pruned_bert_then_int8_round_trips(tmp_path) -> None:
    model, inputs = hf_zoo.ZOO["bert"]()
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.5, pattern="head"), example_inputs=inputs)
    q.quantize_(model, q.Int8DynamicConfig(min_features=0))
    with torch.no_grad():
        out = model.eval()(**inputs).last_hidden_state
    pk.save(model, tmp_path / "m")
    back = pk.load(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(back(**inputs).last_hidden_state, out)
