"""A corrupted or hostile artifact fails with a PrunekitError: never a crash, hang or huge
allocation. Hand-made attacks on each check here; the fuzz campaign (bit flips, truncation and
manifest edits, with and without the checksums patched to match, as a hostile artifact would)
is tests/artifact/test_fuzz_campaign.py."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import zstandard
from torch import nn

import prunekit as pk
from prunekit.artifact import zstd
from prunekit.artifact.manifest import ENCODED, sha256, write_manifest
from prunekit.errors import PrunekitError
from tests import zoo
from tests.fuzzing.bases import FuzzNet, fuzz_net
from tests.fuzzing.engine import memory_bound


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    out = pk.save(fuzz_net(), tmp_path_factory.mktemp("fuzz") / "base")
    codecs = {
        s["codec"]
        for e in pk.artifact.io.read_manifest(out)["tensors"].values()
        for s in e["streams"]
    }
    assert {"pack", "pack+zstd", "huffman"} <= codecs  # the fuzz reaches every decoder
    return out


def _load(folder: Path, factory: Callable[[], nn.Module] = FuzzNet) -> None:
    """Load into a fresh model; a success must give finite-sized tensors of the saved dtypes."""
    loaded = pk.load(folder, model=factory())
    saved = _manifest(folder)["tensors"]
    for name, t in loaded.state_dict().items():
        assert str(t.dtype).removeprefix("torch.") == saved[name]["dtype"], name
        assert list(t.shape) == saved[name]["shape"], name


def _manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_text())


def _write(folder: Path, manifest: Any, fix_checksums: bool = False) -> None:
    # Resealed: the manifest's own checksum is recomputed (anyone can), so the checks behind it
    # are what these tests reach.
    if fix_checksums:
        weights = folder / ENCODED
        manifest["files"][ENCODED] = {"bytes": weights.stat().st_size, "sha256": sha256(weights)}
    if isinstance(manifest, dict):
        write_manifest(folder, manifest)
    else:
        (folder / "manifest.json").write_text(json.dumps(manifest))


# --------------------------------------------------------------------------- hand-made attacks


def test_a_forged_zstd_header_cannot_claim_terabytes() -> None:
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(bytes(range(10)))
    forged = frame[:4] + bytes([0xE0]) + (1 << 40).to_bytes(8, "little") + frame[6:]
    with pytest.raises(PrunekitError, match="declares 1099511627776 bytes"):
        zstd.decompress(forged, 10)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["tensors"]["q"].update(shape=[1 << 40, 1 << 40]), "more than"),
        (lambda m: m["tensors"]["q"].update(dtype="object"), "dtype"),
        (lambda m: m["tensors"]["q"].update(shape=[-4]), "shape"),
        (lambda m: m["tensors"]["q"].update(numel=65), "numel"),
        (lambda m: m["tensors"]["q"].update(tied_to="q"), "tied_to"),
        (lambda m: m["tensors"]["q"].update(streams="pack"), "streams"),
        (lambda m: m["files"].update({"../../etc/passwd": {}}), "malformed"),
        (lambda m: m.update(storage="pickle"), "storage"),
        (lambda m: m.update(format_version=99), "format_version"),
        (
            lambda m: m.update(
                structure={"record": [{"module": "", "attr": "forward", "value": 1}]}
            ),
            "not a layer size",
        ),
        (
            lambda m: m.update(
                structure={"record": [{"module": "", "attr": "__class__", "value": 1}]}
            ),
            "not a layer size",
        ),
    ],
)
def test_hostile_manifest_fields_are_refused(artifact: Path, tmp_path: Path, edit, message) -> None:
    folder = Path(shutil.copytree(artifact, tmp_path / "m"))
    manifest = _manifest(folder)
    edit(manifest)
    _write(folder, manifest)
    with pytest.raises(PrunekitError, match=message):
        _load(folder)


def test_a_tiny_artifact_cannot_claim_a_huge_model(artifact: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(artifact, tmp_path / "m"))
    manifest = _manifest(folder)
    manifest["tensors"]["q"].update(shape=[1 << 20, 1 << 12], numel=1 << 32)
    _write(folder, manifest)
    with pytest.raises(PrunekitError, match="would take"):
        _load(folder)
    # A builtin source's kwargs are sized on the meta device before anything is allocated.
    manifest = _manifest(artifact)
    manifest["source"] = {"kind": "builtin", "name": "lenet300", "kwargs": {"in_features": 10**9}}
    _write(folder, manifest)
    with memory_bound(256), pytest.raises(PrunekitError, match="would take"):
        pk.load(folder)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.update(storage="x" * 100_000),
        lambda m: m.update(format_version=[0] * 100_000),
        lambda m: m["tensors"]["q"].update(dtype="x" * 100_000),
        lambda m: m["tensors"]["q"].update(shape=[-1] * 100_000),
        lambda m: m["tensors"].update({"x" * 100_000: m["tensors"].pop("q")}),
        lambda m: m["files"].update({"x" * 100_000: {}}),
        lambda m: m.update(swaps=[{"module": "x" * 100_000, "kind": "shared", "args": {}}]),
        lambda m: m.update(
            structure={
                "record": [{"module": "sparse", "attr": "in_features", "value": [0] * 10**5}]
            }
        ),
    ],
)
def test_a_refusal_quotes_a_short_excerpt_of_a_huge_value(
    artifact: Path, tmp_path: Path, edit
) -> None:
    # The messages echoed whole values: 100,000-character lines (300,000 for a list).
    folder = Path(shutil.copytree(artifact, tmp_path / "m"))
    manifest = _manifest(folder)
    edit(manifest)
    _write(folder, manifest)
    with pytest.raises(PrunekitError) as refused:
        _load(folder)
    assert len(str(refused.value)) < 600


@pytest.mark.parametrize(
    "source",
    [
        {"kind": "x" * 100_000},
        {"kind": "builtin", "name": "x" * 100_000},
        {"kind": "builtin", "name": "lenet300", "kwargs": [0] * 100_000},
        {"kind": "builtin", "name": "lenet300", "kwargs": {"x" * 100_000: 1}},
    ],
)
def test_a_refused_source_quotes_a_short_excerpt(artifact: Path, tmp_path: Path, source) -> None:
    folder = Path(shutil.copytree(artifact, tmp_path / "m"))
    manifest = _manifest(folder)
    manifest["source"] = source
    _write(folder, manifest)
    with pytest.raises(PrunekitError) as refused:
        pk.load(folder)
    assert len(str(refused.value)) < 800


def test_deeply_nested_or_huge_json_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(PrunekitError, match="not valid JSON"):
        pk.load(folder, model=FuzzNet())
    (folder / "manifest.json").write_text(
        '{"format": "prunekit-artifact", "x": 1' + "0" * 5000 + "}"
    )
    with pytest.raises(PrunekitError, match="not valid JSON"):
        pk.load(folder, model=FuzzNet())


def test_a_failed_load_leaves_the_model_untouched(artifact: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(artifact, tmp_path / "m"))
    manifest = _manifest(folder)
    manifest["tensors"]["dense.weight"]["streams"][0]["codec"] = "lzma"
    _write(folder, manifest)
    model = FuzzNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PrunekitError, match=r"'dense\.weight'"):
        pk.load(folder, model=model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --------------------------------------------------------------------------- the fuzz base


def test_the_fuzz_base_loads_exactly(artifact: Path) -> None:
    model = fuzz_net()
    loaded = pk.load(artifact, model=FuzzNet())
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "edit",
    [
        # One integer changed, each of which loaded different weights without a word before the
        # manifest carried its own checksum.
        lambda m: next(e for e in m["tensors"].values() if "offset" in e).update(
            offset=next(e for e in m["tensors"].values() if "offset" in e)["offset"] + 1
        ),
        lambda m: m["tensors"][next(iter(m["tensors"]))].update(nonzeros=0),
        lambda m: m.update(format_version=2),
        lambda m: m.pop("manifest_sha256"),
    ],
)
def test_an_edited_manifest_is_refused(artifact: Path, tmp_path: Path, edit) -> None:
    folder = Path(shutil.copytree(artifact, tmp_path / "m"))
    manifest = _manifest(folder)
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PrunekitError, match="checksum"):
        pk.load(folder, model=FuzzNet())


def test_a_killed_save_leaves_nothing_behind_for_long(tmp_path: Path) -> None:
    # A save killed half-way leaves its hidden partial folder; the next save to the same place
    # removes those of processes that are gone (not those of a live one).
    import subprocess

    pid = subprocess.Popen(["true"])
    pid.wait()
    stale = tmp_path / f".m.partial-{pid.pid}-abc"
    live = tmp_path / ".m.partial-1-abc"  # pid 1 always runs
    for folder in (stale, live):
        folder.mkdir()
        (folder / "model.encoded.safetensors").write_bytes(b"half")
    pk.save(zoo.MLP(), tmp_path / "m")
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "m"]


def test_a_saved_folder_gets_the_permissions_mkdir_would_give(tmp_path: Path) -> None:
    # It was 0700 (mkdtemp's): a model saved to share was readable by its owner only.
    import os

    mask = os.umask(0o022)
    try:
        out = pk.save(zoo.MLP(), tmp_path / "m")
    finally:
        os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o755
