"""What the fuzz campaign mutates: small artifacts covering every codec, structure record and
swap kind, a Hugging Face folder, the shipped recipes and the registered method configs.

``build_bases(folder)`` writes them once (a few seconds); cases copy a base and damage the copy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import prunekit as pk
from prunekit import quantize as q
from prunekit.artifact.manifest import MANIFEST
from prunekit.models import build as build_builtin
from tests import zoo

REPO = Path(__file__).resolve().parents[2]
RECIPES = [*sorted((REPO / "recipes").glob("*.yaml")), REPO / "docs" / "suggested-lenet5.yaml"]


@dataclass
class Base:
    """One thing to mutate.

    kind: ``artifact`` (a ``pk.save`` folder, opened with ``pk.load``), ``hf-folder`` (a Hugging
    Face folder, opened with ``load_hf_model``), ``recipe`` (YAML texts) or ``config`` (the method
    registry). ``model``: builds the module ``pk.load`` fills (None: load rebuilds it from the
    artifact's source); ``inputs``: the example input of the forward run after a load (a tensor,
    or a dict of keyword tensors). ``files``: bytes of each file, ``manifest`` and ``config``: the
    parsed manifest.json and config.json, ``modules``: the saved model's module names, for
    planning cases without reading the folder."""

    name: str
    kind: str
    folder: Path | None = None
    model: Callable[[], nn.Module] | None = None
    inputs: Callable[[], Any] | None = None
    files: dict[str, int] = field(default_factory=dict)
    manifest: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    texts: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)


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


def fuzz_net() -> FuzzNet:
    """A FuzzNet whose tensors reach every codec (pack, pack+zstd, huffman)."""
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


def _images() -> torch.Tensor:
    return zoo.image_batches(n=4, batch=4)[0][0]


def _pruned(factory: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    model = factory().eval()
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.5, pattern="channel"), data=_data())
    return model


def _data() -> list:
    return zoo.image_batches(n=32, batch=16)


def _artifact(root: Path, name: str, model: nn.Module, factory: Callable[[], nn.Module] | None,
              inputs: Callable[[], Any], **save: Any) -> Base:  # fmt: skip
    folder = pk.save(model.eval(), root / name, **save)
    files = {f.name: f.stat().st_size for f in sorted(folder.iterdir()) if f.is_file()}
    manifest = json.loads((folder / MANIFEST).read_text())
    config = folder / "config.json"
    parsed = json.loads(config.read_text()) if config.is_file() else None
    modules = [n for n, _ in model.named_modules()]
    return Base(name, "artifact", folder, factory, inputs, files, manifest, parsed, [], modules)


def _user_models(root: Path) -> list[Base]:
    shared = _pruned(zoo.MLP)
    pk.share_weights_(shared, pk.KMeansConfig(bits=4))
    q.quantize_(shared, q.Int8DynamicConfig(min_features=0))
    static = _pruned(zoo.CNNBN)
    q.quantize_(static, q.Int8StaticConfig(num_samples=16), data=_data())
    torch.manual_seed(0)
    rtn = zoo.MLP()
    q.quantize_(rtn, q.RTNConfig(bits=4, group_size=16))
    torch.manual_seed(0)
    qat = zoo.CNNBN()
    q.quantize_(qat, q.QATConfig(), data=_data())
    torch.manual_seed(0)
    builtin = build_builtin("digits-cnn").eval()
    pk.prune_(builtin, pk.MagnitudeConfig(sparsity=0.5, pattern="channel"),
              example_inputs=(_images(),))  # fmt: skip
    q.quantize_(builtin, q.RTNConfig(bits=4, group_size=-1))
    return [
        _artifact(root, "codecs", fuzz_net(), FuzzNet, lambda: torch.randn(2, 48)),
        _artifact(root, "builtin-pruned-rtn", builtin, None, _images),
        _artifact(root, "pruned-shared-int8", shared, zoo.MLP, _images),
        _artifact(root, "pruned-int8-static", static, zoo.CNNBN, _images),
        _artifact(root, "rtn4", rtn, zoo.MLP, _images),
        _artifact(root, "qat", qat, zoo.CNNBN, _images),
    ]


def _hf_models(root: Path) -> list[Base]:
    from tests import hf_zoo

    bert = hf_zoo.bert(num_attention_heads=4)
    text = hf_zoo.text_inputs()
    pk.prune_(bert, pk.MagnitudeConfig(sparsity=0.5, pattern="channel"), example_inputs=text)
    gpt2 = hf_zoo.gpt2(n_head=4)
    folder = root / "hf-config"
    hf_zoo.bert(num_attention_heads=4).save_pretrained(str(folder))
    return [
        _artifact(root, "hf-bert-encoded", bert, None, hf_zoo.text_inputs, compress=True),
        _artifact(root, "hf-gpt2-plain", gpt2, None, lambda: hf_zoo.text_inputs(pad=False)),
        Base(
            "hf-config",
            "hf-folder",
            folder,
            inputs=hf_zoo.text_inputs,
            files={f.name: f.stat().st_size for f in sorted(folder.iterdir())},
            config=json.loads((folder / "config.json").read_text()),
        ),
    ]


def build_bases(root: Path) -> dict[str, Base]:
    """Every base, written under ``root``; by name."""
    root.mkdir(parents=True, exist_ok=True)
    bases = [
        *_user_models(root),
        *_hf_models(root),
        Base("recipe", "recipe", texts=[p.read_text() for p in RECIPES]),
        Base("config", "config", model=zoo.MLP, inputs=_images),
    ]
    return {b.name: b for b in bases}


def calibration() -> list:
    """The batches a method config is applied with (config cases)."""
    return _data()
