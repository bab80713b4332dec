"""Text data from a file with one sample per line (the ``text:FILE`` data SPEC).

Split: the non-empty lines in file order; the last ``eval_fraction`` of them (10%, at least one)
are the held-out ``test`` (evaluation) split, the rest the ``train`` (calibration) split. A
contiguous tail, not a shuffle, so a document spread over neighbouring lines does not leak from
one split into the other, and the split depends on nothing but the file.

Two ways to batch (``mode``):

- ``stream``, for causal LMs (the WikiText-perplexity way): each split's lines are tokenized,
  joined with the tokenizer's EOS (else SEP) token between them and cut into windows of exactly
  ``seq_len`` tokens (the remainder shorter than a window is dropped). Samples are
  ``{"input_ids", "attention_mask", "labels"}`` with ``labels`` equal to ``input_ids``.
- ``lines``, for encoders: each line is one sample, truncated and padded to ``seq_len`` tokens,
  with what the tokenizer returns (``input_ids``, ``attention_mask``, ``token_type_ids``, …).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from prunekit.data.splits import Splits
from prunekit.errors import PrunekitError, quote

MODES = ("stream", "lines")
SPLIT_WORDS = {"train": "calibration", "test": "evaluation"}


class TensorDictDataset(Dataset):
    """Samples ``{key: tensors[key][i]}`` over tensors that share their first dimension."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        lengths = {len(t) for t in tensors.values()}
        assert len(lengths) == 1, "tensors must share their first dimension"
        self.tensors = tensors
        self._len = lengths.pop()

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: t[index] for key, t in self.tensors.items()}


@dataclass
class TextSplits(Splits):
    """A text file's two splits, tokenized: ``train`` (calibration) and ``test`` (evaluation).

    Each is a dataset of dict samples of ``seq_len`` tokens (see the module doc for ``mode``);
    ``lines`` holds each split's raw lines. ``input_shape`` is ``(seq_len,)`` and
    ``num_classes`` None, as ``DataSplits`` has them.
    """

    name: str
    train: TensorDictDataset
    test: TensorDictDataset
    lines: dict[str, list[str]]
    seq_len: int
    mode: str
    tokenizer: Any
    default_batch_size = 8

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.seq_len,)

    @property
    def num_classes(self) -> None:
        return None


def split_lines(lines: list[str], eval_fraction: float = 0.1) -> tuple[list[str], list[str]]:
    """``(train, test)``: the non-empty, stripped lines, the last ``eval_fraction`` held out."""
    if not 0 < eval_fraction < 1:
        raise PrunekitError(f"eval_fraction must be in (0, 1); got {eval_fraction}")
    kept = [line.strip() for line in lines if line.strip()]
    if len(kept) < 2:
        raise PrunekitError(
            f"text: got {len(kept)} non-empty line(s); a calibration and an evaluation split "
            f"need at least 2"
        )
    held_out = max(1, math.ceil(len(kept) * eval_fraction))
    return kept[:-held_out], kept[-held_out:]


def load_text(
    path: str | Path,
    *,
    tokenizer: Any = None,
    seq_len: int = 128,
    mode: str = "stream",
    eval_fraction: float = 0.1,
) -> TextSplits:
    """Read, split and tokenize a text file (one sample per line) for ``mode`` batching.

    ``tokenizer``: the model's own Hugging Face tokenizer (``prunekit.models.hf.load_tokenizer``).
    Raises PrunekitError for a missing file or tokenizer, a bad ``seq_len``/``mode``, or (in
    ``stream`` mode) a split with fewer tokens than one window.
    """
    if tokenizer is None:
        raise PrunekitError(
            "tokenizer: text:FILE data needs the model's tokenizer; pass tokenizer= (e.g. "
            "prunekit.models.hf.load_tokenizer(PATH) for an hf:PATH model)"
        )
    if not isinstance(seq_len, int) or seq_len < 2:
        raise PrunekitError(f"seq_len must be an integer >= 2; got {seq_len!r}")
    if mode not in MODES:
        raise PrunekitError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    file = Path(path).expanduser()
    if not file.is_file():
        raise PrunekitError(f"text: {str(path)!r} is not a file; text:FILE needs a text file")
    try:
        raw = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PrunekitError(f"text: cannot read {file} as UTF-8 text: {err}") from err
    train, test = split_lines(raw.splitlines(), eval_fraction)
    build = _windows if mode == "stream" else _padded_lines
    return TextSplits(
        name=f"text:{file}",
        train=build(tokenizer, train, seq_len, "train"),
        test=build(tokenizer, test, seq_len, "test"),
        lines={"train": train, "test": test},
        seq_len=seq_len,
        mode=mode,
        tokenizer=tokenizer,
    )


def existing_file(path: str | Path, base: Path | None = None) -> Path | None:
    """``path`` (``~`` expanded; relative to ``base`` when given) if it names an existing file,
    else None — also for names the OS refuses (too long, ``~user`` of no user)."""
    try:
        file = Path(path).expanduser()
        file = file if base is None or file.is_absolute() else base / file
        return file if file.is_file() else None
    except (OSError, RuntimeError):
        return None


def with_more_text(
    batches: Iterable[Any],
    splits: Any,
    path: str | Path,
    *,
    batch_size: int | None = None,
    seed: int = 0,
) -> tuple[list[Any], int]:
    """``(batches, num_samples)``: ``batches`` plus every line of the text file ``path``,
    tokenized as ``splits`` is (its tokenizer, ``seq_len`` and ``mode``), all shuffled together.

    For training on more unlabelled text than the data's training split (label-free recovery,
    distillation): the file is split and tokenized as ``text:FILE`` data is, and both of its
    splits train, in batches of ``batch_size`` (default: that of ``batches``, a DataLoader)
    drawn under ``seed``; then the batch list is shuffled under ``seed``, so the result depends
    only on the arguments. ``num_samples``: the samples the file added (its lines in ``lines``
    mode, its ``seq_len`` windows in ``stream`` mode). Raises PrunekitError when ``splits`` is
    not text data, or the file is missing or has fewer than 2 non-empty lines.
    """
    tokenizer = getattr(splits, "tokenizer", None)
    if tokenizer is None:
        raise PrunekitError(
            f"splits: more text is tokenized as the data is, and "
            f"{getattr(splits, 'name', type(splits).__name__)!r} is not text data (no "
            f"tokenizer); use text data such as text:FILE or a builtin text model's"
        )
    batch_size = getattr(batches, "batch_size", None) if batch_size is None else batch_size
    if not isinstance(batch_size, int) or batch_size < 1:
        raise PrunekitError(
            f"batch_size must be an integer >= 1 (or batches a DataLoader that has one); "
            f"got {batch_size!r}"
        )
    file = existing_file(path)
    if file is None:
        raise PrunekitError(
            f"more text: {quote(str(path))} is not a file; pass a text file, one sample per line"
        )
    try:
        count = sum(1 for line in file.read_text(encoding="utf-8").splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as err:
        raise PrunekitError(f"more text: cannot read {file} as UTF-8 text: {err}") from err
    if count < 2:
        raise PrunekitError(
            f"more text: {file} has {count} non-empty line(s); give a file with at least 2 "
            f"(one sample per line)"
        )
    more = load_text(file, tokenizer=tokenizer, seq_len=splits.seq_len, mode=splits.mode)
    out = list(batches)
    for part in ("train", "test"):  # all of it trains: nothing is evaluated on it
        out += list(more.loader(part, batch_size=batch_size, seed=seed))
    random.Random(seed).shuffle(out)
    return out, len(more.train) + len(more.test)


def token_stream(tokenizer: Any, lines: list[str]) -> torch.Tensor:
    """``lines`` tokenized without special tokens, joined by EOS (else SEP): ``[N]`` int64."""
    separator = getattr(tokenizer, "eos_token_id", None)
    if separator is None:
        separator = getattr(tokenizer, "sep_token_id", None)
    if separator is None:
        raise PrunekitError(
            f"tokenizer: {type(tokenizer).__name__} has neither an EOS nor a SEP token to join "
            f"lines with in stream mode; set tokenizer.eos_token or use mode='lines'"
        )
    ids: list[int] = []
    for line_ids in tokenizer(lines, add_special_tokens=False, verbose=False)["input_ids"]:
        ids.extend(line_ids)
        ids.append(separator)
    return torch.tensor(ids[:-1], dtype=torch.long)


def _windows(tokenizer: Any, lines: list[str], seq_len: int, split: str) -> TensorDictDataset:
    stream = token_stream(tokenizer, lines)
    count = len(stream) // seq_len
    if count == 0:
        raise PrunekitError(
            f"text: {SPLIT_WORDS[split]} text has {len(stream)} tokens, fewer than one window of "
            f"seq_len={seq_len} — give more text or lower seq_len"
        )
    input_ids = stream[: count * seq_len].view(count, seq_len)
    return TensorDictDataset(
        {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "labels": input_ids.clone(),
        }
    )


def _padded_lines(tokenizer: Any, lines: list[str], seq_len: int, split: str) -> TensorDictDataset:
    if getattr(tokenizer, "pad_token_id", None) is None:
        raise PrunekitError(
            f"tokenizer: {type(tokenizer).__name__} has no padding token, which lines mode needs "
            f"to pad to seq_len; use mode='stream' for causal LMs or set tokenizer.pad_token"
        )
    encoded = tokenizer(
        lines, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt"
    )
    return TensorDictDataset({key: value for key, value in encoded.items()})
