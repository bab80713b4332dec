"""What several subcommands share: loading specs, picking data, checking options before any
work, writing output folders whole."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch.utils.data import DataLoader

from prunekit.artifact.io import save
from prunekit.atomic import staged_dir
from prunekit.data import load_data
from prunekit.data.batches import first_batch, split_batch
from prunekit.data.pyfile import parse_py_spec
from prunekit.data.registry import accepted_forms
from prunekit.data.splits import DataSplits
from prunekit.errors import PrunekitError, quote
from prunekit.measure import compare
from prunekit.measure.tasks import text_metrics

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

    That default comes from the built-in model's own registration, never from the ``dataset`` a
    saved folder records: the folder may have been edited, and a ``py:`` spec is code to run.
    ``text:FILE`` is tokenized with the model's own tokenizer: fixed windows for a causal LM,
    one sample per line for an encoder.
    """
    spec = spec or builtin_dataset(source)
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


def builtin_dataset(source: dict[str, Any]) -> str | None:
    """The data SPEC a built-in model (also one saved and reloaded) was registered with."""
    from prunekit.models.registry import available, model_info

    name = source.get("name")
    if source.get("kind") in ("builtin", "hf") and isinstance(name, str) and name in available():
        return model_info(name).data_spec()
    return None


def is_text(splits: Any) -> bool:
    return hasattr(splits, "tokenizer")


def loaders(splits: DataSplits, batch_size: int, seed: int) -> tuple[DataLoader, DataLoader]:
    """(train, test) loaders; train shuffled under ``seed``."""
    return (
        splits.loader("train", batch_size=batch_size, seed=seed),
        splits.loader("test", batch_size=16 if is_text(splits) else 256),
    )


def write_reports(out: Path, report: dict[str, Any], markdown: str) -> None:
    """``out/report.json`` and ``out/report.md`` (``out``: the folder :func:`output_dir`
    yields, so that they appear together with the rest of the outputs)."""
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.md").write_text(markdown.rstrip() + "\n")


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


# Checks run before the model loads, so a typo costs nothing and writes nothing.


def require(ok: bool, option: str, value: Any, expected: str) -> None:
    """PrunekitError ``"{option} must be {expected}; got {value}"`` unless ``ok``."""
    if not ok:
        raise PrunekitError(f"{option} must be {expected}; got {quote(value)}")


# What prunekit prune, analyze and auto write into their --out folder.
OUTPUT_NAMES = frozenset({
    "model", "report.json", "report.md", "recipe.yaml", "frontier.csv", "pareto.png",
    "sensitivity.csv", "sensitivity.png", "suggested.yaml",
})  # fmt: skip
# A save killed half-way inside an output folder (before outputs were staged whole).
_LEFTOVER = re.compile(r"\.model\.(partial|old)-\d+-")


def is_output_dir(path: Path) -> bool:
    """Whether ``path`` is an earlier output folder of prunekit prune, analyze or auto: it holds
    report.json or model/manifest.json, and nothing prunekit does not write there."""
    names = [p.name for p in path.iterdir()]
    ours = all(n in OUTPUT_NAMES or _LEFTOVER.match(n) for n in names)
    marked = (path / "report.json").is_file() or (path / "model" / "manifest.json").is_file()
    return ours and marked


def check_out_dir(out: Path, option: str = "--out") -> None:
    """Refuse an output folder that cannot be replaced whole: a file, a folder holding
    anything but an earlier prunekit output (a typo must never delete a user's files), or a
    place that cannot be written."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise PrunekitError(
                f"{option} {quote(str(out), 200)}: is a file; name a new or empty directory"
            )
        if any(out.iterdir()) and not is_output_dir(out):
            foreign = [p.name for p in out.iterdir() if p.name not in OUTPUT_NAMES]
            what = (
                f"holds {quote(min(foreign))}, which" if foreign else "holds no report.json, so it"
            )
            raise PrunekitError(
                f"{option} {quote(str(out), 200)}: {what} is no output of prunekit prune, "
                f"analyze or auto, and the folder would be replaced whole; name a new or empty "
                f"directory"
            )
    check_writable(out, option)


def check_out_file(path: Path, option: str) -> None:
    """Refuse an output file path that is a directory or cannot be written."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise PrunekitError(
            f"{option} {quote(str(path), 200)}: is a directory; name the file to write"
        )
    check_writable(path, option)


def check_writable(target: Path, option: str, *, inside: bool = False) -> None:
    """Refuse ``target`` if no entry can be made beside it (outputs are written there, then
    renamed into place) or, with ``inside``, in it when it exists; a missing folder counts as
    its nearest existing parent, where it will be made."""
    target = Path(target).absolute()
    place = next(p for p in (target, *target.parents) if p.exists())
    if place == target and not inside:
        place = target.parent
    if not place.is_dir():
        raise PrunekitError(
            f"{option} {quote(str(target), 200)}: {quote(str(place), 200)} is a file, so "
            f"nothing can be written under it; choose another path"
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".prunekit-write-check-", dir=place))
    except OSError as err:
        raise PrunekitError(
            f"{option} {quote(str(target), 200)}: cannot write in {quote(str(place), 200)} "
            f"({err.strerror}); choose a writable location"
        ) from None


@contextlib.contextmanager
def output_dir(out: Path) -> Iterator[Path]:
    """An empty folder for a command's outputs (model and reports); when the block ends it
    replaces ``out`` whole, and if the block raises it is removed and ``out`` stays as it was.
    Check ``out`` with :func:`check_out_dir` before the work."""
    with staged_dir(Path(out), replaceable=is_output_dir) as tmp:
        yield tmp


def compare_and_write(
    dense: torch.nn.Module,
    model: torch.nn.Module,
    splits: DataSplits,
    test: Any,
    report: dict[str, Any],
    out: Path,
    *,
    source: dict[str, Any],
    title: str,
    summary: str | None,
    json_out: bool,
) -> None:
    """The end of ``prune`` and ``factorize``: measure ``dense`` against the changed ``model``
    on ``test`` (text data: perplexity or embedding fidelity, and WordNet retrieval for
    builtin:minilm, in place of accuracy) into ``report["comparison"]``; write ``out`` whole:
    ``model`` saved with ``source`` (and the data's tokenizer), report.json, and report.md
    (``title``, ``summary`` in a code block, the comparison); print ``report`` (``json_out``),
    or ``summary``, the comparison and what was written."""
    text = is_text(splits)
    with console.status("measuring before/after (accuracy, bytes, MACs, latency)…"):
        # The WordNet retrieval task is the encoder benchmark of builtin:minilm.
        queries = 1000 if source.get("name") == "minilm" else 0
        metrics = text_metrics(splits, dense, retrieval_queries=queries) if text else None
        # A text batch of 64 × seq_len tokens takes seconds per forward on a CPU; 8 shows the trend.
        comparison = compare(
            dense, model, test, accuracy=not text, metrics=metrics,
            batch_sizes=(1, 8) if text else (1, 64),
        )  # fmt: skip
    report["comparison"] = comparison.to_dict()
    summary_md = f"```\n{summary}\n```\n\n" if summary else ""
    with output_dir(out) as staged:
        save(model, staged / "model", source=source, tokenizer=splits.tokenizer if text else None)
        write_reports(staged, report, title + summary_md + comparison.to_markdown())
    if json_out:
        print_json(report)
    else:
        if summary:
            show(summary)
        show(str(comparison))
        console.print(f"wrote {out / 'model'}, {out / 'report.json'}, {out / 'report.md'}")


def check_data_spec(spec: str | None, option: str = "--data") -> None:
    """The form of a data SPEC and the file or folder it names, checked without loading."""
    if spec is None:
        return
    forms = accepted_forms()
    if spec.startswith("py:"):
        path, _ = parse_py_spec(spec, option)
        if not path.is_file():
            raise PrunekitError(f"{option} {quote(spec)}: no such file {quote(str(path), 200)}")
        return
    name, sep, arg = spec.partition(":")
    form = next((f for f in forms if f.startswith(f"{name}:")), None)  # NAME:FILE, NAME:DIR
    known = form is not None and bool(arg) if sep else spec in forms
    if not known:
        raise PrunekitError(
            f"{option}: data spec {quote(spec)} is not recognised; use one of: {', '.join(forms)}"
        )
    if sep:
        is_file = form.endswith(":FILE")
        path = Path(arg).expanduser()
        if not (path.is_file() if is_file else path.is_dir()):
            what = "file" if is_file else "directory"
            raise PrunekitError(f"{option} {quote(spec)}: no such {what} {quote(arg, 200)}")


# Checks run once the model is loaded, before any work on it.


def check_data_fits(model: Any, splits: Any) -> None:
    """One forward pass on two test samples: data of the wrong shape for the model (windows
    longer than its positions, more classes than it outputs) is refused here, naming both, not
    minutes into the work."""
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    seq_len = getattr(splits, "seq_len", None) if is_text(splits) else None
    if isinstance(positions, int) and isinstance(seq_len, int) and seq_len > positions:
        raise PrunekitError(
            f"--seq-len {seq_len}: the model has {positions} positions "
            f"(max_position_embeddings); pass --seq-len {positions} or less"
        )
    inputs, _ = split_batch(first_batch(splits.loader("test", batch_size=2)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            # Called as is: an encoder's output (hidden states, no logits) is fine here.
            out = model(**inputs) if isinstance(inputs, Mapping) else model(inputs)
    except Exception as err:
        detail = " ".join(f"{type(err).__name__}: {err}".split())
        raise PrunekitError(
            f"--data {splits.name}: the model fails on its samples (inputs "
            f"{_shapes(inputs)}): {detail[:200]}; pass data of the shape the model takes"
        ) from None
    finally:
        model.train(was_training)
    logits = out if isinstance(out, torch.Tensor) else getattr(out, "logits", None)
    classes = getattr(splits, "num_classes", None)
    if is_text(splits) or not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        return
    if isinstance(classes, int) and classes > logits.shape[-1]:
        raise PrunekitError(
            f"--data {splits.name}: {classes} classes, but the model outputs "
            f"{logits.shape[-1]} per sample; pass data whose labels the model predicts"
        )


def _shapes(inputs: Any) -> str:
    if isinstance(inputs, torch.Tensor):
        return f"of shape {list(inputs.shape)}"
    return ", ".join(
        f"{k} {list(v.shape)}" for k, v in inputs.items() if isinstance(v, torch.Tensor)
    )
