"""What several subcommands share: loading specs, picking data, writing reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from torch.utils.data import DataLoader

from prunekit.data import load_data
from prunekit.data.splits import DataSplits
from prunekit.errors import PrunekitError

console = Console()


def show(text: str) -> None:
    """Print pre-rendered table text as it is: no re-wrapping to the terminal, no highlighting."""
    console.print(text, soft_wrap=True, highlight=False, markup=False)


def resolve_data(
    spec: str | None,
    source: dict[str, Any],
    needed: bool,
    model: Any = None,
    seq_len: int = 128,
) -> Any:
    """``--data`` if given, else the dataset a builtin model was trained on.

    ``text:FILE`` is tokenized with the model's own tokenizer: fixed windows for a causal LM,
    one sample per line for an encoder.
    """
    spec = spec or source.get("dataset")
    if spec is None:
        if needed:
            raise PrunekitError(
                "--data: this command needs data for this model; pass --data SPEC "
                "(e.g. --data digits, --data fashion-mnist, --data text:FILE, "
                "--data py:FILE.py:FUNCTION)"
            )
        return None
    if not spec.startswith("text:"):
        return load_data(spec)
    if source.get("kind") != "hf":
        raise PrunekitError(
            f"--data {spec}: text needs a Hugging Face model with a tokenizer (hf:PATH, "
            f"builtin:gpt-tiny, builtin:minilm); got a {source.get('kind')} model"
        )
    from prunekit.models.hf import is_decoder, load_tokenizer

    decoder = is_decoder(getattr(model, "config", None))
    return load_data(
        spec,
        tokenizer=load_tokenizer(source["path"]),
        seq_len=seq_len,
        mode="stream" if decoder else "lines",
    )


def is_text(splits: Any) -> bool:
    return hasattr(splits, "tokenizer")


def loaders(splits: DataSplits, batch_size: int, seed: int) -> tuple[DataLoader, DataLoader]:
    """(train, test) loaders; train shuffled under ``seed``."""
    return (
        splits.loader("train", batch_size=batch_size, seed=seed),
        splits.loader("test", batch_size=16 if is_text(splits) else 256),
    )


def write_reports(out: Path, report: dict[str, Any], markdown: str) -> None:
    """``out/report.json`` and ``out/report.md``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.md").write_text(markdown.rstrip() + "\n")


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))
