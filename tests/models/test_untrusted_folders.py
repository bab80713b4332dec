"""A model folder is data, never code: nothing in it is imported or run, and what its
config.json asks to build is sized before anything is built."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch

import prunekit as pk
from prunekit.artifact.manifest import sha256, write_manifest
from prunekit.cli import main
from prunekit.errors import PrunekitError
from prunekit.models import build
from prunekit.models.hf import build_hf_model, load_hf_model, load_tokenizer
from tests import hf_zoo
from tests.fuzzing.engine import memory_bound

# Python that leaves a marker file when imported: proof that a folder's code ran.
EVIL = """
import pathlib
pathlib.Path(__file__).with_name("RAN").write_text("code from the folder ran")
def make():
    pathlib.Path(__file__).with_name("RAN").write_text("code from the folder ran")
    return [(__import__("torch").zeros(1, 1, 8, 8), __import__("torch").zeros(1).long())]
"""


def _saved_digits_cnn(folder: Path) -> Path:
    torch.manual_seed(0)
    return pk.save(build("digits-cnn"), folder)


def test_a_saved_folder_cannot_name_python_to_import_as_its_dataset(tmp_path: Path) -> None:
    # The dataset a folder records is information; the CLI's default data comes from the
    # built-in model's own registration, so a py: spec planted in the manifest never runs.
    out = _saved_digits_cnn(tmp_path / "m")
    (out / "evil.py").write_text(EVIL)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["source"]["dataset"] = f"py:{out / 'evil.py'}:make"
    write_manifest(out, manifest)  # anyone can reseal a manifest: the checksum is no defence
    assert main(["measure", str(out), "--no-latency", "--json"]) == 0
    assert not (out / "RAN").exists()


def test_a_user_model_folder_records_no_data_to_run(tmp_path: Path) -> None:
    out = pk.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), tmp_path / "m")
    (out / "evil.py").write_text(EVIL)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["source"]["dataset"] = f"py:{out / 'evil.py'}:make"
    write_manifest(out, manifest)
    main(["measure", str(out), "--no-latency"])
    assert not (out / "RAN").exists()


def _remote_code_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "hf"
    hf_zoo.bert().save_pretrained(str(folder))
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "evil"  # no class in transformers: only the folder's code builds it
    config["auto_map"] = {
        "AutoConfig": "evil.EvilConfig",
        "AutoModel": "evil.EvilModel",
        "AutoTokenizer": ["evil.EvilTokenizer", None],
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(EVIL)
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "EvilTokenizer",
                    "auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]}})
    )  # fmt: skip
    return folder


@pytest.mark.parametrize("load", [load_hf_model, build_hf_model, load_tokenizer])
def test_a_folder_asking_to_run_its_own_code_never_does(tmp_path: Path, load, monkeypatch) -> None:
    # transformers asks "run the custom code? [y/N]" for auto_map unless told not to trust it;
    # a user answering y (simulated) must not be able to run it either.
    monkeypatch.setattr("builtins.input", lambda *a: "y")
    folder = _remote_code_folder(tmp_path)
    with contextlib.suppress(PrunekitError):  # refusing is fine; running the code is not
        load(folder)
    assert not (folder / "RAN").exists()


def _bert_folder(tmp_path: Path, **config_edits: object) -> Path:
    folder = tmp_path / "hf"
    hf_zoo.bert().save_pretrained(str(folder))
    _edit_config(folder, config_edits)
    return folder


def _bert_artifact(tmp_path: Path, **config_edits: object) -> Path:
    # An encoded artifact rebuilds from config.json alone; its files' checksums and the manifest
    # are resealed, as anyone can.
    folder = pk.save(hf_zoo.bert(), tmp_path / "art", compress=True)
    _edit_config(folder, config_edits)
    manifest = json.loads((folder / "manifest.json").read_text())
    config = folder / "config.json"
    manifest["files"]["config.json"] = {"bytes": config.stat().st_size, "sha256": sha256(config)}
    write_manifest(folder, manifest)
    return folder


def _edit_config(folder: Path, edits: dict) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(edits)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        ({"num_hidden_layers": 100_000}, "num_hidden_layers"),
        ({"intermediate_size": 10_000_000}, "bytes"),
        ({"num_attention_heads": 0}, "config.json"),
        ({"hidden_size": -5}, "config.json"),
    ],
)
@pytest.mark.parametrize("kind", ["hf-folder", "artifact"])
def test_an_oversized_or_broken_config_is_refused_before_building(
    tmp_path: Path, kind, edits, message
) -> None:
    if kind == "hf-folder":
        with pytest.raises(PrunekitError, match=message):
            load_hf_model(_bert_folder(tmp_path, **edits))
    else:
        with pytest.raises(PrunekitError, match=message):
            pk.load(_bert_artifact(tmp_path, **edits))


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        # Loaded, then the first forward failed: a view to -8-wide heads, a NaN dropout, a
        # comparison of a string with an int.
        ({"num_attention_heads": -4}, "num_attention_heads=-4"),
        ({"hidden_dropout_prob": float("nan")}, "hidden_dropout_prob"),
        ({"attention_probs_dropout_prob": 1.5}, "attention_probs_dropout_prob"),
        ({"chunk_size_feed_forward": "x"}, "chunk_size_feed_forward"),
        # Raised out of transformers' config code as they were: a validation error of
        # huggingface_hub's, AttributeError, IndexError.
        ({"add_cross_attention": [0]}, "config.json cannot be read"),
        ({"rope_scaling": "x"}, "config.json cannot be read"),
        ({"dtype": [1048576]}, "config.json cannot be read"),
        ({"dtype": "floaW32"}, "config.json cannot be read"),
        # transformers names each of num_labels labels while reading the config.
        ({"num_labels": 10**30}, "num_labels"),
    ],
)
@pytest.mark.parametrize("kind", ["hf-folder", "artifact"])
def test_a_config_value_transformers_trips_over_is_refused(
    tmp_path: Path, kind, edits, message
) -> None:
    if kind == "hf-folder":
        folder, load = _bert_folder(tmp_path, **edits), load_hf_model
    else:
        folder, load = _bert_artifact(tmp_path, **edits), pk.load
    with memory_bound(1024), pytest.raises(PrunekitError, match=message):
        load(folder)


def test_architectures_that_are_not_names_are_ignored(tmp_path: Path) -> None:
    # An AttributeError (float.endswith) before.
    model = load_hf_model(_bert_folder(tmp_path, architectures=[0.5, {"a": 1}]))
    assert type(model).__name__ == "BertModel"


@pytest.mark.parametrize("size", [0, 1, 8, 1000])
def test_a_truncated_weights_file_is_refused(tmp_path: Path, size: int) -> None:
    # safetensors' own error came through as it was.
    folder = _bert_folder(tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:size])
    with pytest.raises(PrunekitError, match="cannot load"):
        load_hf_model(folder)
    # The same in a saved folder whose checksums were recomputed to match.
    saved = pk.save(hf_zoo.gpt2(), tmp_path / "gpt2")
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:size])
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest["files"]["model.safetensors"] = {"bytes": size, "sha256": sha256(weights)}
    write_manifest(saved, manifest)
    with pytest.raises(PrunekitError, match="cannot load"):
        pk.load(saved)
