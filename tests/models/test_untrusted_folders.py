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
