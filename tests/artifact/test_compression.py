"""The artifact is small where the model is: a 90%-pruned LeNet-300-100 and its size breakdown."""

from __future__ import annotations

import json

import torch

import prunekit as pk
from prunekit.cli import main
from prunekit.measure import artifact_breakdown
from prunekit.models import LeNet300


def _pruned_lenet() -> LeNet300:
    torch.manual_seed(0)
    model = LeNet300().eval()
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.9, scope="global"))
    return model


def test_a_90_percent_pruned_lenet_300_100_is_over_5x_smaller_and_exact(tmp_path) -> None:
    model = _pruned_lenet()
    out = pk.save(model, tmp_path / "m")
    dense = 4 * sum(p.numel() for p in model.parameters())
    size = pk.artifact.io.artifact_bytes(out)
    assert dense / size >= 5, f"{dense:,} dense fp32 bytes vs {size:,} on disk"

    loaded = pk.load(out)  # builtin:lenet300, rebuilt by name
    assert isinstance(loaded, LeNet300)
    state, back = model.state_dict(), loaded.state_dict()
    assert all(state[k].dtype == back[k].dtype and torch.equal(state[k], back[k]) for k in state)
    x = torch.randn(16, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))


def test_the_breakdown_adds_up_per_kind_and_per_tensor(tmp_path) -> None:
    model = _pruned_lenet()
    size = artifact_breakdown(pk.save(model, tmp_path / "m"))
    assert sum(size.kinds.values()) == size.bytes == pk.artifact.io.artifact_bytes(tmp_path / "m")
    assert size.kinds["overhead"] > 0 and size.kinds["sparse"] + size.kinds["entropy-coded"] > 0
    assert size.tensors.keys() == model.state_dict().keys()
    fc1 = size.tensors["fc1.weight"]
    assert fc1["encoding"].startswith(("bitmask", "relative")) and "+ planes(" in fc1["encoding"]
    nonzeros = sum(int(torch.count_nonzero(t)) for t in model.state_dict().values())
    stored = size.bytes - size.kinds["overhead"]
    assert size.bits_per_nonzero == 8 * stored / nonzeros
    assert size.bits_per_nonzero < 32  # fewer bits than one fp32 value per non-zero

    plain = artifact_breakdown(pk.save(model, tmp_path / "plain", compress=False))
    assert plain.kinds["dense"] == 4 * sum(t.numel() for t in model.state_dict().values())


def test_measure_reports_bytes_on_disk_by_kind_and_tensor(tmp_path, capsys) -> None:
    model = _pruned_lenet()
    m = pk.measure(model, latency=False)
    assert m.artifact_bytes == sum(m.artifact_kinds.values())
    assert m.artifact_tensors["fc1.weight"]["bytes"] > 0 and m.bits_per_nonzero > 0
    text = str(m)
    for row in ("artifact bytes", "artifact bits per non-zero", "entropy-coded", "fc1.weight"):
        assert row in text and row in m.to_markdown(), row
    assert json.loads(json.dumps(m.to_dict()))["artifact_kinds"] == m.artifact_kinds

    # No dataset in the source: the command measures the artifact alone.
    pk.save(model, tmp_path / "m", source={"kind": "builtin", "name": "lenet300", "kwargs": {}})
    assert main(["measure", str(tmp_path / "m"), "--no-latency"]) == 0
    shown = capsys.readouterr().out
    assert "Artifact bytes on disk by kind" in shown and "Largest tensors on disk" in shown
    assert main(["measure", str(tmp_path / "m"), "--no-latency", "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert measured["artifact_bytes"] == m.artifact_bytes
    assert measured["artifact_tensors"]["fc1.weight"] == m.artifact_tensors["fc1.weight"]
