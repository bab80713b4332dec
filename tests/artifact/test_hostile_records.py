"""Swap records and loaded values from a damaged or hostile manifest: checked before anything is
sized by them, refused with one PrunekitError, and the model passed is left as it was."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import prunekit as pk
from prunekit import quantize as q
from prunekit.artifact.container import read_encoded, write_encoded
from prunekit.artifact.manifest import ENCODED, sha256, write_manifest
from prunekit.errors import PrunekitError
from tests.fuzzing.engine import memory_bound
from tests.zoo import CNNBN, MLP, image_batches


def _saved(tmp_path: Path, compress: Callable[[torch.nn.Module, list], object], cls) -> Path:
    torch.manual_seed(0)
    model, data = cls(), image_batches()
    compress(model, data)
    return pk.save(model, tmp_path / "m")


def _edit_swap(folder: Path, **args: object) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["swaps"][0]["args"].update(args)
    write_manifest(folder, manifest)


RTN = (lambda m, d: q.quantize_(m, q.RTNConfig(bits=4, group_size=16)), MLP)
STATIC = (lambda m, d: q.quantize_(m, q.Int8StaticConfig(num_samples=16), data=d), CNNBN)
QAT = (lambda m, d: q.quantize_(m, q.QATConfig(), data=d), MLP)


@pytest.mark.parametrize(
    ("case", "args", "message"),
    [
        (RTN, {"bits": 65536}, "bits=65536"),  # allocated 2 GB before its shape check
        (RTN, {"bits": 10**400}, "bits="),  # an OverflowError before
        (RTN, {"group_size": 0}, "group_size=0"),  # a ZeroDivisionError before
        (RTN, {"symmetric": "yes"}, "symmetric"),
        (STATIC, {"input_shape": [1, 100_000, 100_000]}, "input_shape"),
        (STATIC, {"input_shape": "big"}, "input_shape"),
        (QAT, {"bits": 99}, "bits=99"),
        (QAT, {"momentum": -1}, "momentum"),
    ],
)
def test_a_hostile_swap_record_is_refused_before_sizing_anything(
    tmp_path: Path, case, args, message
) -> None:
    compress, cls = case
    folder = _saved(tmp_path, compress, cls)
    _edit_swap(folder, **args)
    fresh = cls()
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(PrunekitError, match=message):
        pk.load(folder, model=fresh)
    after = fresh.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_codebook_indices_past_the_codebook_are_refused_on_load(tmp_path: Path) -> None:
    # They loaded, and the first forward raised IndexError.
    def share(model, data):
        pk.prune_(model, pk.MagnitudeConfig(sparsity=0.5))
        pk.share_weights_(model, pk.KMeansConfig(bits=2))

    folder = _saved(tmp_path, share, MLP)
    manifest = json.loads((folder / "manifest.json").read_text())
    state = read_encoded(folder / ENCODED, manifest)
    name = next(n for n in state if n.endswith("indices"))
    state[name] = state[name].clone()
    state[name].view(-1)[0] = 200  # 4 codebook entries
    entries = write_encoded(state, folder / ENCODED)
    for key, entry in entries.items():
        manifest["tensors"][key].update(entry)
    manifest["files"][ENCODED] = {
        "bytes": (folder / ENCODED).stat().st_size,
        "sha256": sha256(folder / ENCODED),
    }
    write_manifest(folder, manifest)
    with pytest.raises(PrunekitError, match="codebook indices"):
        pk.load(folder, model=MLP())


def _edit_manifest(folder: Path, edit: Callable[[dict], object]) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    write_manifest(folder, manifest)


def _pruned(model, data) -> None:
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.5, pattern="channel"), data=data)


@pytest.mark.parametrize(
    ("cls", "entry"),
    [
        # Loaded, then the first forward raised IndexError (dimension out of range).
        (MLP, {"module": "net.0", "attr": "start_dim", "value": 5}),
        # Loaded, then the first forward padded every image to 200,000 x 200,000.
        (CNNBN, {"module": "features.0", "attr": "padding", "value": [100_000, 100_000]}),
        (CNNBN, {"module": "features.0", "attr": "stride", "value": [0, 0]}),
        # Pruning only removes: a recorded size above the dense model's is not from pruning.
        (MLP, {"module": "net.1", "attr": "in_features", "value": 10**6}),
        (MLP, {"module": "net.1", "attr": "out_features", "value": True}),
    ],
)
def test_a_structure_record_sets_only_the_sizes_pruning_records(tmp_path: Path, cls, entry):
    folder = _saved(tmp_path, _pruned, cls)
    _edit_manifest(folder, lambda m: m["structure"]["record"].append(entry))
    x = image_batches()[0][0]
    with memory_bound(512), pytest.raises(PrunekitError, match="not a layer size"):
        pk.load(folder, model=cls())(x)


def test_a_region_converted_to_int8_static_twice_is_refused(tmp_path: Path) -> None:
    # The second conversion traced the first one's graph module: it loaded, then the first
    # forward raised NameError ("module is not installed as a submodule").
    folder = _saved(tmp_path, STATIC[0], CNNBN)
    _edit_manifest(folder, lambda m: m["swaps"].append(m["swaps"][0]))
    with pytest.raises(PrunekitError, match="twice"):
        pk.load(folder, model=CNNBN())(image_batches()[0][0])


def test_a_group_wider_than_the_layer_is_one_group(tmp_path: Path) -> None:
    # A record's group_size may be up to 2**31 (beyond in_features: one group); the forward
    # repeated each group's scale group_size times: 32 x 2**31 floats.
    def rtn(model, data) -> None:
        q.quantize_(model, q.RTNConfig(bits=4, group_size=-1))

    folder = _saved(tmp_path, rtn, MLP)
    x = image_batches()[0][0]
    with torch.no_grad():
        expected = pk.load(folder, model=MLP())(x)
    _edit_manifest(folder, lambda m: [s["args"].update(group_size=2**31) for s in m["swaps"]])
    with memory_bound(512), torch.no_grad():
        assert torch.equal(pk.load(folder, model=MLP())(x), expected)
