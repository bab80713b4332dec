"""Swapped-in layers survive save → load: the swap record is replayed before the tensors load.

Two tiny swap kinds are registered here, shaped like the real ones (a codebook layer with
``codebook`` floats and ``indices`` where 0 is a pruned zero and k > 0 is ``codebook[k-1]``; an
int8 layer with ``weight`` int8 and per-row ``scale``), so these tests do not depend on the
share or quantize packages.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import prunekit as pk
from prunekit.artifact.manifest import write_manifest
from prunekit.errors import PrunekitError
from prunekit.surgery import swaps
from tests import zoo


class CodebookLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bits: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.codebook = nn.Parameter(torch.zeros((1 << bits) - 1))
        self.register_buffer("indices", torch.zeros(out_features, in_features, dtype=torch.uint8))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        table = torch.cat([self.codebook.new_zeros(1), self.codebook])
        return F.linear(x, table[self.indices.long()], self.bias)


class Int8Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features, 1))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.float() * self.scale, self.bias)


def _build_codebook(original: nn.Module, args: dict) -> nn.Module:
    # Sized from the layer's size attributes, which a structure replay has already set. Args
    # come from a manifest that may be damaged: a builder checks them before allocating.
    bits = args.get("bits")
    if not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"bits must be an integer in 1..8; got {bits!r}")
    return CodebookLinear(original.in_features, original.out_features, bits)


def _build_int8(original: nn.Module, args: dict) -> nn.Module:
    return Int8Linear(original.in_features, original.out_features, original.bias is not None)


swaps.register_swap("test-codebook", _build_codebook)
swaps.register_swap("test-int8", _build_int8)


def share_(model: nn.Module, name: str, bits: int) -> None:
    old = model.get_submodule(name)
    new = _build_codebook(old, {"bits": bits})
    w = old.weight.detach()
    kept = w != 0
    with torch.no_grad():
        new.codebook.copy_(torch.quantile(w[kept], torch.linspace(0, 1, (1 << bits) - 1)))
        nearest = (w[..., None] - new.codebook).abs().argmin(-1) + 1
        new.indices.copy_(torch.where(kept, nearest, 0).to(torch.uint8))
        new.bias.copy_(old.bias)
    swaps.swap_(model, name, new, "test-codebook", {"bits": bits})


def quantize_(model: nn.Module, name: str) -> None:
    old = model.get_submodule(name)
    new = _build_int8(old, {})
    w = old.weight.detach()
    with torch.no_grad():
        new.scale.copy_(w.abs().amax(1, keepdim=True).clamp_min(1e-8) / 127)
        new.weight.copy_((w / new.scale).round().to(torch.int8))
        if old.bias is not None:
            new.bias.copy_(old.bias)
    swaps.swap_(model, name, new, "test-int8", {})


def _compressed_mlp() -> nn.Module:
    torch.manual_seed(0)
    model = zoo.MLP().eval()
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.8))
    share_(model, "net.1", bits=5)
    quantize_(model, "net.3")
    return model


def _same(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(a(x), b(x))


def test_swapped_layers_round_trip_into_a_fresh_model(tmp_path) -> None:
    model = _compressed_mlp()
    pk.save(model, tmp_path / "m")
    manifest = pk.artifact.io.read_manifest(tmp_path / "m")
    assert (
        manifest["swaps"]
        == swaps.swap_record(model)
        == [
            {"module": "net.1", "kind": "test-codebook", "args": {"bits": 5}},
            {"module": "net.3", "kind": "test-int8", "args": {}},
        ]
    )
    indices = manifest["tensors"]["net.1.indices"]
    assert indices["values"] == "int" and indices["streams"][-1]["bits"] <= 5
    assert manifest["tensors"]["net.3.weight"]["dtype"] == "int8"

    loaded = pk.load(tmp_path / "m", model=zoo.MLP())
    assert isinstance(loaded.net[1], CodebookLinear) and isinstance(loaded.net[3], Int8Linear)
    assert swaps.swap_record(loaded) == swaps.swap_record(model)
    _same(model, loaded, torch.randn(4, 1, 8, 8))


def test_a_structurally_pruned_then_swapped_model_round_trips(tmp_path) -> None:
    torch.manual_seed(0)
    model = zoo.MLP().eval()
    x = torch.randn(4, 1, 8, 8)
    pk.prune_(model, pk.MagnitudeConfig(pattern="channel", sparsity=0.5), example_inputs=x)
    assert model.net[1].out_features == 16
    share_(model, "net.1", bits=4)
    quantize_(model, "net.3")
    pk.save(model, tmp_path / "m")
    manifest = pk.artifact.io.read_manifest(tmp_path / "m")
    assert manifest["structure"]["record"] and len(manifest["swaps"]) == 2

    loaded = pk.load(tmp_path / "m", model=zoo.MLP())
    assert loaded.net[1].indices.shape == (16, 64) and loaded.net[3].weight.shape == (10, 16)
    _same(model, loaded, x)
    pk.save(loaded, tmp_path / "again")  # the reloaded model saves the same artifact
    again = pk.artifact.io.read_manifest(tmp_path / "again")
    assert again["swaps"] == manifest["swaps"] and again["tensors"] == manifest["tensors"]


def _edit_manifest(folder, edit) -> None:
    file = folder / "manifest.json"
    manifest = json.loads(file.read_text())
    edit(manifest)
    write_manifest(folder, manifest)  # resealed: the checks behind the checksum are under test


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["swaps"][0].update(kind="test-unknown"), "does not know"),
        (lambda m: m["swaps"][0].update(module="net.7"), "differ"),
        (lambda m: m["swaps"][0].update(args={"bits": "five"}), "cannot rebuild"),
        (lambda m: m["swaps"][0].update(args={"bits": 3}), "shape"),
        (lambda m: m.update(swaps={"net.1": "test-codebook"}), "swaps must be a list"),
        (lambda m: m.pop("swaps"), "differ"),
    ],
)
def test_a_bad_swap_record_fails_clearly_and_leaves_the_model_untouched(
    tmp_path, edit, message: str
) -> None:
    pk.save(_compressed_mlp(), tmp_path / "m")
    _edit_manifest(tmp_path / "m", edit)
    fresh = zoo.MLP()
    modules = list(fresh.modules())
    state = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(PrunekitError, match=message):
        pk.load(tmp_path / "m", model=fresh)
    assert list(fresh.modules()) == modules and swaps.swap_record(fresh) == []
    assert all(torch.equal(state[k], v) for k, v in fresh.state_dict().items())


def test_a_hugging_face_model_with_swaps_is_encoded_and_rebuilds_itself(tmp_path) -> None:
    from tests import hf_zoo

    model, inputs = hf_zoo.ZOO["llama_gqa"]()
    hf_zoo.perturb_(model)
    quantize_(model, "model.layers.0.mlp.up_proj")
    pk.save(model, tmp_path / "m")  # no compress=: from_pretrained could not load it anyway
    assert pk.artifact.io.read_manifest(tmp_path / "m")["storage"] == "encoded"
    loaded = pk.load(tmp_path / "m")  # config.json → architecture, then the swap replayed
    assert isinstance(loaded.model.layers[0].mlp.up_proj, Int8Linear)
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)


def test_a_builtin_with_swapped_layers_saved_without_source_loads_by_itself(tmp_path) -> None:
    from prunekit.models import LeNet300

    torch.manual_seed(0)
    model = LeNet300().eval()
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.9, scope="global"))
    share_(model, "fc1", bits=5)
    pk.save(model, tmp_path / "m")
    assert pk.artifact.io.read_manifest(tmp_path / "m")["source"]["name"] == "lenet300"
    loaded = pk.load(tmp_path / "m")  # built by name, then the swap replayed
    _same(model, loaded, torch.randn(2, 1, 28, 28))
