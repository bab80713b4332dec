"""The artifact: exact round trips, clear errors, atomic writes, no pickle.

Codecs, swaps, compression and fuzzing have their own tests in tests/artifact/."""

from __future__ import annotations

import json
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import prunekit.artifact.io as pio
from prunekit.artifact.manifest import FORMAT_VERSION, write_manifest
from prunekit.errors import PrunekitError
from tests.zoo import SmallCNNBN as CNNBN


class MLP(nn.Module):
    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Linear(10, hidden)
        self.fc2 = nn.Linear(hidden, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(12, 6)
        self.head = nn.Linear(6, 12, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(tokens))


def _trained_cnn() -> CNNBN:
    torch.manual_seed(0)
    model = CNNBN()
    # Training-mode forwards move BN's running statistics away from their initial values, so
    # the round trip has to carry real buffer contents.
    for _ in range(3):
        model(torch.randn(8, 1, 8, 8))
    return model.eval()


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert sa[name].dtype == sb[name].dtype, name
        assert torch.equal(sa[name], sb[name]), name


def test_round_trip_mlp_is_bit_identical(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MLP().eval()
    out = pio.save(model, tmp_path / "model")
    assert out == tmp_path / "model"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.encoded.safetensors"]

    torch.manual_seed(1)
    fresh = MLP().train()
    loaded = pio.load(out, model=fresh)
    assert loaded is fresh and not loaded.training
    _assert_same_state(model, loaded)
    x = torch.randn(5, 10)
    assert torch.equal(model(x), loaded(x))


def test_round_trip_cnn_with_batchnorm_buffers(tmp_path: Path) -> None:
    model = _trained_cnn()
    assert int(model.bn.num_batches_tracked) == 3
    pio.save(model, tmp_path / "cnn")
    loaded = pio.load(tmp_path / "cnn", model=CNNBN())
    _assert_same_state(model, loaded)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(model(x), loaded(x))


def test_round_trip_keeps_tied_weight(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TiedLM()
    pio.save(model, tmp_path / "lm")
    manifest = json.loads((tmp_path / "lm" / "manifest.json").read_text())
    tied = {n: e["tied_to"] for n, e in manifest["tensors"].items() if "tied_to" in e}
    assert len(tied) == 1 and set(tied.items()) <= {
        ("head.weight", "embed.weight"),
        ("embed.weight", "head.weight"),
    }

    loaded = pio.load(tmp_path / "lm", model=TiedLM())
    assert loaded.head.weight is loaded.embed.weight
    _assert_same_state(model, loaded)
    tokens = torch.tensor([[1, 5, 7], [0, 11, 3]])
    assert torch.equal(model(tokens), loaded(tokens))


def test_manifest_describes_tensors_and_sparsity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MLP()
    with torch.no_grad():
        model.fc1.weight[:, :5] = 0  # 16 x 5 = 80 of fc1's 160 weights
    pio.save(model, tmp_path / "m")
    manifest = pio.read_manifest(tmp_path / "m")

    assert (
        manifest["format"] == "prunekit-artifact" and manifest["format_version"] == FORMAT_VERSION
    )
    assert isinstance(manifest["prunekit_version"], str)
    assert manifest["source"] == {"kind": "user", "class": f"{MLP.__module__}.MLP"}
    assert manifest["storage"] == "encoded"
    assert "structure" not in manifest and "swaps" not in manifest  # only when there are some
    fc1 = manifest["tensors"]["fc1.weight"]
    assert {k: fc1[k] for k in ("dtype", "shape", "numel", "nonzeros")} == {
        "dtype": "float32",
        "shape": [16, 10],
        "numel": 160,
        "nonzeros": 80,
    }
    # Half the weights are zero, so they take less than fp32; the chain is recorded per stream.
    assert fc1["encoding"] in ("dense", "bitmask", "relative")
    assert (
        fc1["values"] in ("planes", "raw")
        and {"codec", "bits", "count"} <= fc1["streams"][0].keys()
    )
    assert fc1["bytes"] == sum(s["bytes"] for s in fc1["streams"]) < 4 * 160
    weights = tmp_path / "m" / "model.encoded.safetensors"
    assert manifest["files"]["model.encoded.safetensors"]["bytes"] == weights.stat().st_size
    params = sum(p.numel() for p in model.parameters())
    assert manifest["sparsity"]["params"] == params
    assert manifest["sparsity"]["nonzeros"] == params - 80
    assert manifest["sparsity"]["prunable_sparsity"] == pytest.approx(80 / (160 + 64))


def test_shape_mismatch_names_tensor_and_shapes(tmp_path: Path) -> None:
    pio.save(MLP(hidden=16), tmp_path / "m")
    other = MLP(hidden=8)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(PrunekitError, match=r"'fc1\.weight'.*\[16, 10\].*\[8, 10\]"):
        pio.load(tmp_path / "m", model=other)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())


def test_different_tensor_names_are_rejected(tmp_path: Path) -> None:
    pio.save(MLP(), tmp_path / "m")
    with pytest.raises(PrunekitError, match="missing in the model"):
        pio.load(tmp_path / "m", model=CNNBN())


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "manifest.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "manifest.json").unlink(), "manifest.json is missing"),
        (lambda d: (d / "manifest.json").write_text('{"format": "other"}'), "not a prunekit"),
        (
            lambda d: (d / "model.encoded.safetensors").unlink(),
            "model.encoded.safetensors is missing",
        ),
        (lambda d: _flip_last_byte(d / "model.encoded.safetensors"), "checksum"),
        (lambda d: _edit_manifest(d, structure={"record": [{"module": "fc1"}]}), "malformed"),
        (
            lambda d: _edit_manifest(
                d, structure={"record": [{"module": "fc9", "attr": "in_features", "value": 3}]}
            ),
            "fc9 has 'in_features'",
        ),
    ],
)
def test_damaged_artifact_raises_prunekit_error(tmp_path: Path, damage, message: str) -> None:
    pio.save(MLP(), tmp_path / "m")
    damage(tmp_path / "m")
    with pytest.raises(PrunekitError, match=message):
        pio.load(tmp_path / "m", model=MLP())


def test_truncated_safetensors_raises_prunekit_error(tmp_path: Path) -> None:
    pio.save(MLP(), tmp_path / "m")
    # Without a checksum to compare, the safetensors reader itself has to catch the damage.
    manifest_file = tmp_path / "m" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["files"]["model.encoded.safetensors"] = {}
    write_manifest(manifest_file.parent, manifest)
    weights = tmp_path / "m" / "model.encoded.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(PrunekitError, match="cannot be read"):
        pio.load(tmp_path / "m", model=MLP())


def _edit_manifest(folder: Path, **fields: object) -> None:
    # Resealed (the manifest's own checksum recomputed): the checks behind it are under test.
    file = folder / "manifest.json"
    write_manifest(folder, {**json.loads(file.read_text()), **fields})


def _flip_last_byte(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF
    file.write_bytes(bytes(data))


def test_failed_save_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pio, "write_manifest", fail)
    with pytest.raises(OSError, match="disk full"):
        pio.save(MLP(), tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_the_previous_artifact(tmp_path: Path, monkeypatch) -> None:
    torch.manual_seed(0)
    old = MLP()
    pio.save(old, tmp_path / "m")

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pio, "write_manifest", fail)
    with pytest.raises(OSError):
        pio.save(MLP(), tmp_path / "m")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    _assert_same_state(old, pio.load(tmp_path / "m", model=MLP()))


def test_save_replaces_an_artifact_but_not_other_directories(tmp_path: Path) -> None:
    torch.manual_seed(0)
    pio.save(MLP(), tmp_path / "m")
    newer = MLP()
    pio.save(newer, tmp_path / "m")
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    _assert_same_state(newer, pio.load(tmp_path / "m", model=MLP()))

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("keep me")
    with pytest.raises(PrunekitError, match="prunekit did not write"):
        pio.save(newer, tmp_path / "docs")
    assert (tmp_path / "docs" / "notes.txt").read_text() == "keep me"


def test_load_without_model_rebuilds_builtin_source(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def build(name: str, **kwargs: object) -> nn.Module:
        calls.append((name, kwargs))
        return MLP(**kwargs)

    monkeypatch.setitem(sys.modules, "prunekit.models", types.SimpleNamespace(build=build))
    torch.manual_seed(0)
    model = MLP(hidden=8)
    source = {"kind": "builtin", "name": "mlp", "kwargs": {"hidden": 8}}
    pio.save(model, tmp_path / "m", source=source)
    loaded = pio.load(tmp_path / "m")
    # Built once on the meta device (sizes only), then for real.
    assert calls and all(call == ("mlp", {"hidden": 8}) for call in calls)
    assert not loaded.training
    _assert_same_state(model, loaded)


def test_load_without_model_of_user_class_says_what_to_pass(tmp_path: Path) -> None:
    pio.save(MLP(), tmp_path / "m")
    with pytest.raises(PrunekitError, match=r"pass model=YourClass\(\) to pk.load"):
        pio.load(tmp_path / "m")


def test_bad_source_is_rejected_before_writing(tmp_path: Path) -> None:
    with pytest.raises(PrunekitError, match="source"):
        pio.save(MLP(), tmp_path / "m", source={"name": "mlp"})
    with pytest.raises(PrunekitError, match="JSON"):
        pio.save(MLP(), tmp_path / "m", source={"kind": "builtin", "name": "x", "kwargs": {1j}})
    assert list(tmp_path.iterdir()) == []


def test_loading_never_unpickles(tmp_path: Path, monkeypatch) -> None:
    pio.save(_trained_cnn(), tmp_path / "m")

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle used while loading an artifact")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    pio.load(tmp_path / "m", model=CNNBN())


def test_artifact_bytes_is_the_sum_of_file_sizes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MLP()
    out = pio.save(model, tmp_path / "m")
    names = ("manifest.json", "model.encoded.safetensors")
    sizes = [(out / name).stat().st_size for name in names]
    assert pio.artifact_bytes(out) == sum(sizes)
    assert pio.artifact_size(model) == sum(sizes)
    plain = pio.save(model, tmp_path / "plain", compress=False)
    params = sum(p.numel() for p in model.parameters())
    assert (plain / "model.safetensors").stat().st_size > 4 * params  # fp32 plus the header
    with pytest.raises(PrunekitError, match="not an artifact directory"):
        pio.artifact_bytes(tmp_path / "missing")


def test_a_builtin_architecture_saved_without_a_source_loads_by_itself(tmp_path):
    from prunekit.models import LeNet5

    torch.manual_seed(0)
    model = LeNet5().eval()
    pio.save(model, tmp_path / "m")
    loaded = pio.load(tmp_path / "m")  # no model= needed: the manifest names builtin:lenet5
    assert isinstance(loaded, LeNet5)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))


def test_plain_storage_is_an_ordinary_safetensors_file(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    torch.manual_seed(0)
    model = MLP()
    out = pio.save(model, tmp_path / "m", compress=False)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.safetensors"]
    assert pio.read_manifest(out)["storage"] == "plain"
    stored = load_file(str(out / "model.safetensors"))
    assert stored.keys() == model.state_dict().keys()
    _assert_same_state(model, pio.load(out, model=MLP()))


def test_a_format_1_artifact_still_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _trained_cnn()
    out = pio.save(model, tmp_path / "m", compress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["storage"], manifest["manifest_sha256"]
    manifest["format_version"] = 1
    for entry in manifest["tensors"].values():
        del entry["bytes"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    _assert_same_state(model, pio.load(out, model=CNNBN()))


def test_a_model_of_another_dtype_is_rejected_and_left_untouched(tmp_path: Path) -> None:
    pio.save(MLP().half(), tmp_path / "m")
    other = MLP()
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(PrunekitError, match=r"'fc1\.weight' is float16 in the artifact"):
        pio.load(tmp_path / "m", model=other)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())


def test_compress_must_be_a_bool_or_none(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="compress"):
        pio.save(MLP(), tmp_path / "m", compress="yes")


def test_a_hugging_face_model_encoded_loads_with_pk_load_only(tmp_path: Path) -> None:
    import transformers

    from tests import hf_zoo

    model, inputs = hf_zoo.ZOO["gpt2"]()
    hf_zoo.perturb_(model)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight[::2] = 0
    pio.save(model, tmp_path / "plain")
    assert pio.read_manifest(tmp_path / "plain")["storage"] == "plain"  # from_pretrained opens it
    out = pio.save(model, tmp_path / "m", compress=True)
    assert pio.artifact_bytes(out) < pio.artifact_bytes(tmp_path / "plain")
    loaded = pio.load(out)
    assert type(loaded) is type(model)
    _assert_same_state(model, loaded)
    assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)
    # No model.safetensors: transformers refuses instead of initialising random weights.
    with pytest.raises(OSError):
        transformers.AutoModelForCausalLM.from_pretrained(out)


def test_every_file_is_checksummed(tmp_path: Path) -> None:
    from tests import hf_zoo

    model, _ = hf_zoo.ZOO["gpt2"]()
    out = pio.save(model, tmp_path / "m")
    files = pio.read_manifest(out)["files"]
    assert {"config.json", "model.safetensors"} <= files.keys()
    config = out / "config.json"
    config.write_text(config.read_text().replace("32", "33"))
    with pytest.raises(PrunekitError, match=r"config\.json: contents do not match"):
        pio.load(out)
