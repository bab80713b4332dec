"""A corrupted or hostile artifact fails with a PrunekitError: never a crash, hang or huge
allocation. Hand-made attacks on each check, then fuzzing: bit flips, truncation and manifest
edits, with and without the checksums patched to match (as a hostile artifact would)."""

from __future__ import annotations

import copy
import json
import random
import shutil
import time
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


class FuzzNet(nn.Module):
    """Every kind of stream: sparse and dense floats, skewed and uniform integers, bools."""

    def __init__(self) -> None:
        super().__init__()
        self.sparse = nn.Linear(48, 32)
        self.dense = nn.Linear(32, 8)
        self.register_buffer("codes", torch.zeros(32, 48, dtype=torch.int64))
        self.register_buffer("q", torch.zeros(64, dtype=torch.int8))
        self.register_buffer("flags", torch.zeros(40, dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(torch.relu(self.sparse(x)))


def _fuzz_net() -> FuzzNet:
    torch.manual_seed(0)
    net = FuzzNet().eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        net.sparse.weight.mul_(torch.rand(32, 48, generator=g) < 0.15)
        shared = 1 + torch.randint(0, 31, (32, 48), generator=g)
        net.codes.copy_(torch.where(torch.rand(32, 48, generator=g) < 0.8, 0, shared))
        net.q.copy_(torch.randint(-128, 128, (64,), generator=g, dtype=torch.int8))
        net.flags.copy_(torch.rand(40, generator=g) < 0.3)
    return net


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    out = pk.save(_fuzz_net(), tmp_path_factory.mktemp("fuzz") / "base")
    codecs = {
        s["codec"] for e in pk.io.read_manifest(out)["tensors"].values() for s in e["streams"]
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
    start = time.perf_counter()
    with pytest.raises(PrunekitError, match="would take"):
        pk.load(folder)
    assert time.perf_counter() - start < 5


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


# --------------------------------------------------------------------------- fuzzing

VALUES = [0, 1, -1, 2, 7, 8, 15, 16, 17, 64, 65, 2**31, 2**63, 2**64, 10**30, -(10**30), 0.5,
          "", "x", "pack", "huffman", "pack+zstd", "relative", "bitmask", "int", "planes", None,
          True, [], {}, [0], [1 << 20], {"a": 1}]  # fmt: skip


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(base: Path, folder: Path, rng: random.Random) -> str:
    """Damage a copy of the artifact in one random way; returns what was done."""
    shutil.copytree(base, folder)
    manifest = _manifest(folder)
    weights = folder / ENCODED
    kind = rng.choice(["flip", "flip", "truncate", "field", "field", "field", "text"])
    fix = rng.random() < 0.8
    if kind in ("flip", "truncate"):
        data = bytearray(weights.read_bytes())
        if kind == "flip":
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        else:
            del data[rng.randrange(len(data)) :]
        weights.write_bytes(bytes(data))
        _write(folder, manifest, fix_checksums=fix)
        return f"{kind} (checksums fixed: {fix})"
    if kind == "field":
        tensors = manifest["tensors"]
        path = rng.choice(_paths(tensors) if rng.random() < 0.8 else _paths(manifest))
        root = tensors if path and path[0] in tensors else manifest
        parent = root
        for key in path[:-1]:
            parent = parent[key]
        old = parent[path[-1]]
        if isinstance(parent, dict) and rng.random() < 0.15:
            del parent[path[-1]]
            change = "deleted"
        else:
            choices = [*VALUES, old + 1, old - 1, old * 2] if type(old) is int else VALUES
            parent[path[-1]] = copy.deepcopy(rng.choice(choices))
            change = f"= {parent[path[-1]]!r}"
        _write(folder, manifest)  # the weights are intact: their checksum still matches
        return f"field {path} {change}"
    text = bytearray((folder / "manifest.json").read_bytes())
    for _ in range(rng.randint(1, 4)):
        text[rng.randrange(len(text))] = rng.randrange(256)
    (folder / "manifest.json").write_bytes(bytes(text))
    return "manifest bytes"


def _fuzz(
    base: Path, tmp: Path, cases: int, seed: int, factory: Callable[[], nn.Module] = FuzzNet
) -> None:
    rng = random.Random(seed)
    outcomes = {"loaded": 0, "refused": 0}
    for case in range(cases):
        folder = tmp / f"case{case}"
        what = _mutate(base, folder, rng)
        start = time.perf_counter()
        try:
            _load(folder, factory)
            outcomes["loaded"] += 1
        except PrunekitError:
            outcomes["refused"] += 1
        except Exception as e:  # anything else is a bug: report the mutation that caused it
            raise AssertionError(f"case {case} ({what}): {type(e).__name__}: {e}") from e
        elapsed = time.perf_counter() - start
        assert elapsed < 5, f"case {case} ({what}) took {elapsed:.1f} s"
        shutil.rmtree(folder)
    assert outcomes["refused"] > cases // 2 and outcomes["loaded"] > 0, outcomes


def test_fuzzed_artifacts_load_or_fail_clearly(artifact: Path, tmp_path: Path) -> None:
    _fuzz(artifact, tmp_path, cases=300, seed=0)


def test_fuzzed_pruned_and_swapped_artifacts_load_or_fail_clearly(tmp_path: Path) -> None:
    # Structure records and swap records are fuzzed too: replays must fail clearly as well.
    from tests.artifact.test_swaps import quantize_, share_

    torch.manual_seed(0)
    model = zoo.MLP().eval()
    x = torch.randn(4, 1, 8, 8)
    pk.prune_(model, pk.MagnitudeConfig(pattern="channel", sparsity=0.5), example_inputs=x)
    share_(model, "net.1", bits=4)
    quantize_(model, "net.3")
    base = pk.save(model, tmp_path / "base")
    _fuzz(base, tmp_path, cases=200, seed=2, factory=zoo.MLP)


@pytest.mark.slow
def test_fuzzed_artifacts_load_or_fail_clearly_thousands(artifact: Path, tmp_path: Path) -> None:
    _fuzz(artifact, tmp_path, cases=5000, seed=1)


def test_the_fuzz_base_loads_exactly(artifact: Path) -> None:
    model = _fuzz_net()
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
