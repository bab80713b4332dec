"""Damaged copies of a saved folder: bit flips and truncation of the weights, edits of
manifest.json at any JSON path, raw byte edits, edits of a Hugging Face config.json.

An edit is *resealed* when the attacker also recomputed the checksums (the files' entries and
the manifest's own): the checks behind the checksum are what it reaches. An *unsealed* edit is
an accident (or an attacker who did not bother): the checksums must refuse it, always.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import reprlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunekit.artifact.manifest import MANIFEST, STORAGES, sha256, write_manifest
from tests.fuzzing.bases import Base
from tests.fuzzing.values import STRINGS, Raw, hostile, raw_values, tweak

CONFIG = "config.json"
# A module a config.json's auto_map names: importing it leaves this file behind.
CODE_MODULE, CODE_SENTINEL = "fuzz_code", "CODE_RAN"
CODE = f"import pathlib\npathlib.Path(__file__).with_name({CODE_SENTINEL!r}).write_text('ran')\n"
AUTO_MAP = {
    key: f"{CODE_MODULE}.FuzzThing"
    for key in ("AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForMaskedLM")
}
MANIFEST_KEYS = ["tied_to", "offset", "streams", "encoding", "values", "numel", "nonzeros",
                 "bytes", "shape", "dtype", "shapes", "args", "record", "config",
                 "from_pretrained", "kwargs", "class", "name", "kind", "path", "model_type",
                 "dataset", "structure", "swaps", "storage", "module", "attr", "value", "bits",
                 "group_size", "symmetric", "layer", "input_shape", "ignore", "activation_bits",
                 "momentum", "codec", "count", "sha256", "format_version", "x"]  # fmt: skip
# Module attributes a structure record could name: sizes it may set, and others it must not.
ATTRS = ["in_features", "out_features", "in_channels", "out_channels", "groups", "num_features",
         "normalized_shape", "num_heads", "num_attention_heads", "split_size", "all_head_size",
         "start_dim", "end_dim", "padding", "stride", "kernel_size", "dilation", "eps",
         "momentum", "training", "p", "inplace", "padding_mode", "affine", "bits",
         "group_size"]  # fmt: skip
CONFIG_KEYS = ["num_hidden_layers", "n_layer", "hidden_size", "n_embd", "intermediate_size",
               "n_inner", "num_attention_heads", "n_head", "head_dim", "num_key_value_heads",
               "vocab_size", "max_position_embeddings", "n_positions", "type_vocab_size",
               "hidden_act", "activation_function", "layer_norm_eps", "layer_norm_epsilon",
               "torch_dtype", "dtype", "model_type", "architectures", "auto_map",
               "tie_word_embeddings", "is_decoder", "add_cross_attention", "pad_token_id",
               "_attn_implementation", "attn_implementation", "position_embedding_type",
               "quantization_config", "rope_scaling", "num_labels",
               "id2label", "pruned_heads", "torchscript", "use_cache", "problem_type"]  # fmt: skip
CONFIG_VALUES = [10_000_000, 100_000, 1 << 20, 3, 5, "gelu", "gelu_fake", "relu", "float16",
                 "bfloat16", "float64", "int8", "bert", "gpt2", "llama", "t5", "nope",
                 ["BertModel"], ["GPT2LMHeadModel"], ["LlamaForCausalLM"], ["Nope"], AUTO_MAP,
                 {"quant_method": "bitsandbytes", "load_in_8bit": True},
                 {"quant_method": "gptq", "bits": 4}, {"quant_method": "nope"},
                 {"rope_type": "dynamic", "factor": -1.0}, {"0": [0, 1]}, {"x": "y"}]  # fmt: skip
# Settings that constrain the input rather than the model: a forward refusing an input that
# breaks them (a sequence not a multiple of the chunk size) keeps the model's contract.
INPUT_CONTRACTS = {"chunk_size_feed_forward"}
# What a listed file can be replaced by: things that are not regular files (reading a FIFO
# blocks, /dev/zero never ends), nothing, or a link out of the folder.
SWAPS = ["fifo", "dev-zero", "directory", "empty", "missing", "outside"]
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
SHORT = reprlib.Repr()
SHORT.maxstring = SHORT.maxother = SHORT.maxlong = 48
SHORT.maxlist = SHORT.maxdict = 6
SHORT.maxlevel = 3


@dataclass(frozen=True)
class Edit:
    """One change to a JSON file: ``set`` path to value, ``delete`` path, ``rename`` the key
    at path to value, ``insert`` key value[0] = value[1] into the object at path."""

    file: str
    op: str
    path: tuple
    value: Any = None

    def __str__(self) -> str:
        where = "".join(f"[{p!r}]" for p in self.path) or "(root)"
        shown = self.value if isinstance(self.value, Raw) else short(self.value)
        return f"{self.file}{where} {self.op} {shown}"


def short(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 160:
        return f"<int of {len(str(value))} digits>"
    return SHORT.repr(value)


# --------------------------------------------------------------------------- planning


def plan(base: Base, rng: random.Random) -> tuple[str, bool | None, list, str]:
    """``(kind, sealed, ops, detail)`` of one damaged copy of ``base``. ``sealed`` is None for a
    folder without checksums (a Hugging Face folder)."""
    weights = STORAGES[base.manifest["storage"]] if base.manifest else "model.safetensors"
    kinds = {"weights-flip": 16, "weights-truncate": 6, "file-swap": 4}
    if base.manifest:
        kinds.update({"manifest-field": 44, "manifest-bytes": 10, "manifest-raw": 6})
    if base.config is not None:
        kinds.update({"config-field": 30 if base.manifest else 70, "config-bytes": 6})
    kind = rng.choices(list(kinds), list(kinds.values()))[0]
    sealed = rng.random() < 0.5 if base.manifest else None
    if kind == "manifest-bytes":
        sealed = False  # raw bytes: an accident
    if kind == "weights-flip":
        size = base.files[weights]
        flips = [(rng.randrange(size), rng.randrange(8)) for _ in range(rng.randint(1, 8))]
        ops = [("flip", weights, flips)]
        detail = f"{weights}: flip bits {flips[:4]}{'…' if len(flips) > 4 else ''}"
    elif kind == "file-swap":
        name, how = rng.choice(sorted(base.files)), rng.choice(SWAPS)
        if name == MANIFEST:
            sealed = False if base.manifest else None  # nothing left to seal
        ops, detail = [("swap", name, how)], f"{name}: replaced by {how}"
    elif kind == "weights-truncate":
        size = rng.choice([0, 1, 8, rng.randrange(base.files[weights]), base.files[weights] - 1])
        ops, detail = [("truncate", weights, size)], f"{weights}: cut to {size} bytes"
    elif kind.endswith("-bytes"):
        file = MANIFEST if kind == "manifest-bytes" else CONFIG
        edits = [_byte_edit(rng, base.files[file]) for _ in range(rng.randint(1, 4))]
        ops, detail = [("bytes", file, edits)], f"{file}: bytes {edits}"
    else:
        # An accident changes one thing; an attacker (or a folder without checksums) any number.
        count = 1 if sealed is False else rng.choices([1, 2, 3], [70, 20, 10])[0]
        file = CONFIG if kind == "config-field" else MANIFEST
        ops = [("json", _json_edit(rng, base, file, kind == "manifest-raw")) for _ in range(count)]
        if any(isinstance(_new_value(op[1]), Raw) for op in ops):
            sealed = False if base.manifest else None  # raw text has no checksum to compute
        detail = "; ".join(str(op[1]) for op in ops)
    if sealed is not None:
        detail += " (resealed)" if sealed else " (unsealed)"
    return kind, sealed, ops, detail


def _new_value(edit: Edit) -> Any:
    return edit.value[1] if edit.op == "insert" else edit.value


def _byte_edit(rng: random.Random, size: int) -> tuple[str, int, int]:
    action = rng.choice(["set", "set", "insert", "delete"])
    return action, rng.randrange(max(size, 1)), rng.randrange(256)


def _json_edit(rng: random.Random, base: Base, file: str, raw: bool) -> Edit:
    root = base.manifest if file == MANIFEST else base.config
    if file == MANIFEST:
        sections = [k for k in root if k != "prunekit_version"]
        section = rng.choice([*sections, "tensors", "structure", "swaps", "swaps"])
        section = section if section in root else "tensors"
        path = _walk(rng, root[section], (section,))
    else:
        path = _walk(rng, {k: v for k, v in root.items() if k not in INPUT_CONTRACTS}, ())
    node = _at(root, path)
    keys = MANIFEST_KEYS if file == MANIFEST else CONFIG_KEYS
    extra = [*_splices(root), *(CONFIG_VALUES if file == CONFIG else [*ATTRS, *base.modules])]
    value = raw_values(rng) if raw else _value(rng, node, extra)
    ops = ["set", "insert"] if raw else ["set", "delete", "rename", "insert"]
    op = rng.choices(ops, [70, 12, 6, 12][: len(ops)])[0]
    if not path or op == "insert":
        parent = path if isinstance(node, dict) else path[:-1]
        if not isinstance(_at(root, parent), dict):
            return Edit(file, "set", path, value)
        key = rng.choice([*keys, *(_at(root, parent) or {"x": 0})])
        if key == "auto_map":
            value = AUTO_MAP
        return Edit(file, "insert", parent, (key, value))
    if op == "delete":
        return Edit(file, "delete", path)
    if op == "rename" and isinstance(path[-1], str):
        names = [k for k in _at(root, path[:-1]) if k != path[-1]]
        new = rng.choice([*names, *keys, *STRINGS, path[-1] + "x"])
        return Edit(file, "rename", path, new)
    return Edit(file, "set", path, value)


def _walk(rng: random.Random, node: Any, path: tuple) -> tuple:
    """A random path below ``node``: descends into a random child until it stops by chance
    (one time in four) or reaches a leaf."""
    while isinstance(node, dict | list) and node and not (path and rng.random() < 0.25):
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        node, path = node[key], (*path, key)
    return path


def _at(root: Any, path: tuple) -> Any:
    for key in path:
        root = root[key]
    return root


def _value(rng: random.Random, old: Any, extra: list[Any]) -> Any:
    roll = rng.random()
    if roll < 0.3:
        return tweak(rng, old)
    if roll < 0.45 and extra:
        return rng.choice(extra)
    return hostile(rng, extra)


_SPLICES: dict[int, list[Any]] = {}  # by id() of a base's parsed file, which lives all run


def _splices(root: Any) -> list[Any]:
    # Values found elsewhere in the same file: other tensors' names, shapes and entries.
    if id(root) not in _SPLICES:
        found: list[Any] = []
        stack = [root]
        while stack:
            node = stack.pop()
            found.append(node)
            if isinstance(node, dict):
                found += list(node)
                stack += list(node.values())
            elif isinstance(node, list):
                stack += node
        _SPLICES[id(root)] = found
    return _SPLICES[id(root)]


# --------------------------------------------------------------------------- applying


def apply(base: Base, ops: list, sealed: bool | None, folder: Path) -> bool:
    """Write the damaged copy of ``base`` into ``folder`` (which must not exist); returns
    whether anything a checksum covers changed."""
    shutil.copytree(base.folder, folder)
    touched: set[str] = set()
    swapped: dict[str, str] = {}
    changed = False
    edits: dict[str, list[Edit]] = {}
    for op in ops:
        if op[0] == "json":
            edits.setdefault(op[1].file, []).append(op[1])
            continue
        file = folder / op[1]
        if op[0] == "swap":
            _swap_file(file, op[2])
            swapped[op[1]] = op[2]
            changed = True
            continue
        data = bytearray(file.read_bytes())
        if op[0] == "flip":
            for offset, bit in op[2]:
                if offset < len(data):
                    data[offset] ^= 1 << bit
        elif op[0] == "truncate":
            del data[op[2] :]
        else:
            data = _edit_bytes(data, op[2])
        # manifest.json's bytes count as changed when they read as different JSON (below).
        changed |= _write_bytes(file, bytes(data)) and op[1] != MANIFEST
        touched.add(op[1])
    if CONFIG in edits:
        changed |= _edit_config(folder, edits[CONFIG])
        touched.add(CONFIG)
        if any(e.op == "insert" and e.value[0] == "auto_map" for e in edits[CONFIG]):
            (folder / f"{CODE_MODULE}.py").write_text(CODE)
            touched.add(f"{CODE_MODULE}.py")
    if base.manifest is None or not (sealed or MANIFEST in edits):
        return changed | _manifest_changed(base, ops, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    if sealed:
        for name in touched:
            file = folder / name
            manifest["files"][name] = {"bytes": file.stat().st_size, "sha256": sha256(file)}
        for name, how in swapped.items():
            file = folder / name
            if how == "missing":
                manifest["files"].pop(name, None)
            elif file.is_file():
                manifest["files"][name] = {"bytes": file.stat().st_size, "sha256": sha256(file)}
            else:  # what stat says of a FIFO or a device, and the checksum of nothing
                manifest["files"][name] = {"bytes": 0, "sha256": EMPTY_SHA256}
    if MANIFEST in edits:
        before = _canonical(manifest)
        raws = [_edit(manifest, e) for e in edits[MANIFEST]]
        changed |= any(raws) or _canonical(manifest) != before
        if sealed:
            write_manifest(folder, manifest)
        else:
            _write_json(folder / MANIFEST, manifest, [r for r in raws if r is not None])
    else:
        write_manifest(folder, manifest)
    return changed


def _swap_file(file: Path, how: str) -> None:
    file.unlink()
    if how == "fifo":
        os.mkfifo(file)
    elif how == "dev-zero":
        os.symlink("/dev/zero", file)
    elif how == "directory":
        file.mkdir()
    elif how == "empty":
        file.write_bytes(b"")
    elif how == "outside":
        os.symlink("/etc/passwd", file)


def _manifest_changed(base: Base, ops: list, folder: Path) -> bool:
    # Raw bytes of manifest.json edited: changed unless it still reads as the same JSON.
    if base.manifest is None or not any(op[0] == "bytes" and op[1] == MANIFEST for op in ops):
        return False
    try:
        after = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return True
    return _canonical(after) != _canonical(base.manifest)


def _edit_bytes(data: bytearray, edits: list[tuple[str, int, int]]) -> bytearray:
    for action, offset, byte in edits:
        offset = min(offset, len(data))
        if action == "set" and offset < len(data):
            data[offset] = byte
        elif action == "insert":
            data[offset:offset] = bytes([byte])
        elif offset < len(data):
            del data[offset]
    return data


def _write_bytes(file: Path, data: bytes) -> bool:
    old = file.read_bytes()
    file.write_bytes(data)
    return old != data


def _edit_config(folder: Path, edits: list[Edit]) -> bool:
    config = json.loads((folder / CONFIG).read_text())
    raws = [_edit(config, e) for e in edits]
    old = (folder / CONFIG).read_bytes()
    _write_json(folder / CONFIG, config, [r for r in raws if r is not None], indent=2)
    return (folder / CONFIG).read_bytes() != old


def _edit(root: dict[str, Any], edit: Edit) -> Raw | None:
    """Apply ``edit`` to ``root``; a raw value is left as a placeholder string, returned. An
    edit whose path an earlier edit of the same case removed does nothing."""
    try:
        return _edit_at(root, edit)
    except (KeyError, IndexError, TypeError, AttributeError):
        return None


def _edit_at(root: dict[str, Any], edit: Edit) -> Raw | None:
    # Copies: a value is a shared pool object or a subtree of the base's own manifest, and a
    # later edit of the same case may change it in place.
    if edit.op == "insert":
        (key, value), parent = copy.deepcopy(edit.value), _at(root, edit.path)
    else:
        parent, key = _at(root, edit.path[:-1]), edit.path[-1]
        value = copy.deepcopy(edit.value)
    if edit.op == "delete":
        del parent[key]
    elif edit.op == "rename":
        parent[value] = parent.pop(key)
    else:
        parent[key] = _placeholder(value) if isinstance(value, Raw) else value
        return value if isinstance(value, Raw) else None
    return None


def _placeholder(raw: Raw) -> str:
    return f"@@RAW{id(raw)}@@"


def _write_json(file: Path, obj: Any, raws: list[Raw], indent: int | None = None) -> None:
    text = json.dumps(obj, indent=indent, separators=None if indent else (",", ":"))
    for raw in raws:
        text = text.replace(json.dumps(_placeholder(raw)), raw.text)
    file.write_text(text + "\n")


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
