"""What every benchmark shares: the machine it ran on, how results are written, and the steps
the compress-then-fine-tune benchmarks (structured, reconstruct, lowrank) and the MiniLM ones
take alike."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

import prunekit as pk
from prunekit.data.splits import Splits
from prunekit.measure import count_macs, count_params
from prunekit.measure.accuracy import top1_accuracy
from prunekit.measure.retrieval import RetrievalTask, retrieval_scores
from prunekit.measure.text import embedding_fidelity
from prunekit.models import pretrained

RESULTS = Path(__file__).parent / "results"
QUICK_TRAIN_SAMPLES = 6000  # --quick fine-tunes on the first this many training images
QUICK_MIN_RUN_TIME = 0.3  # --quick times each model this many seconds per block


def machine() -> dict[str, Any]:
    """The facts a reader needs to judge the numbers."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


def machine_line(info: dict[str, Any], cores_note: str = "") -> str:
    """``Machine: CPU, N cores, torch V, T threads, DATE`` from ``machine()``; ``cores_note``
    follows the core count (" (shared with other jobs while it ran)")."""
    return (
        f"Machine: {info['cpu']}, {info['cores']} cores{cores_note}, torch {info['torch']}, "
        f"{info['torch_threads']} threads, {info['date']}"
    )


def write(
    name: str, payload: dict[str, Any], markdown: str, folder: Path = RESULTS
) -> tuple[Path, Path]:
    """``results/NAME.json`` and ``results/NAME.md`` (or in ``folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    js, md = folder / f"{name}.json", folder / f"{name}.md"
    js.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    md.write_text(markdown.rstrip() + "\n")
    return js, md


def echo(message: str) -> None:
    """A progress line, shown at once (the default ``log`` of a benchmark's ``main``)."""
    print(message, flush=True)


def pct(v: float) -> str:
    """An accuracy in [0, 1] as percent with two decimals."""
    return f"{100 * v:.2f}"


def minilm_scores(
    model: nn.Module,
    dense: nn.Module,
    tok: Any,
    task: RetrievalTask,
    test: Iterable[Any],
    embedder: nn.Module | None = None,
) -> dict[str, float]:
    """A MiniLM's quality: recall@1 and MRR of ``model`` on the retrieval ``task``, and fidelity,
    the mean cosine of ``embedder``'s (default ``model``) embeddings to ``dense``'s on ``test``."""
    r = retrieval_scores(model, tok, task)
    return {
        "recall@1": r.recall_at_1,
        "MRR": r.mrr,
        "fidelity": embedding_fidelity(embedder or model, dense, test),
    }


# ------------------------------------------------- compress, then fine-tune (Fashion-MNIST CNNs)
def add_finetune_args(
    parser: argparse.ArgumentParser, quick: str, epochs: int | None = None, timing: bool = True
) -> None:
    """The options these benchmarks share: --reductions, --epochs (default ``epochs``; None: per
    model), --lr, --min-run-time (with ``timing``) and --quick (``quick``: what it runs)."""
    parser.add_argument("--reductions", nargs="+", type=float)
    every = (
        "for every model (default: per model)"
        if epochs is None
        else "fine-tuning epochs, every row"
    )
    parser.add_argument("--epochs", type=int, default=epochs, help=every)
    parser.add_argument("--lr", type=float, default=1e-3)
    if timing:
        parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds per timing")
    parser.add_argument("--quick", action="store_true", help=quick)


def fill_args(args: argparse.Namespace, quick: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Set ``args.train_samples`` (None: every training image), then give each option the command
    line left out (None) its value in ``quick`` with --quick, else in ``defaults``. --quick also
    fine-tunes on QUICK_TRAIN_SAMPLES images and times for QUICK_MIN_RUN_TIME s."""
    args.train_samples = QUICK_TRAIN_SAMPLES if args.quick else None
    if args.quick and "min_run_time" in vars(args):
        args.min_run_time = QUICK_MIN_RUN_TIME
    for values in (quick, defaults) if args.quick else (defaults,):
        for name, value in values.items():
            if getattr(args, name) is None:
                setattr(args, name, value)


def test_and_example(data: Splits) -> tuple[Any, torch.Tensor]:
    """The test loader (batches of 1,000 images) and the first training batch (128 images, seed
    0): what accuracy is read on, and the example inputs MACs are counted on (``[:1]``)."""
    example, _ = next(iter(data.loader("train", batch_size=128, seed=0)))
    return data.loader("test", batch_size=1000), example


def load_dense(
    spec: Any,
    test: Any,
    example: torch.Tensor,
    args: argparse.Namespace,
    log: Callable[[str], None],
    **extra: Any,
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained builtin ``spec.name`` and its row (``extra`` after the model's name): test
    accuracy, parameters, MACs of one image, fine-tuning epochs (``args.epochs`` or
    ``spec.epochs``). Its accuracy is logged under ``spec.label``."""
    dense = pretrained(spec.name, progress=False)
    row = {
        "model": spec.name,
        **extra,
        "accuracy": top1_accuracy(dense, test)[0],
        "params": count_params(dense),
        "macs": count_macs(dense, example[:1]).dense,
        "epochs": args.epochs or spec.epochs,
    }
    log(f"{spec.label}: dense accuracy {row['accuracy']:.4f}")
    return dense, row


def run_step(
    row: dict[str, Any],
    seconds: str,
    step: Callable[[], dict[str, Any]],
    log: Callable[[str], None],
) -> bool:
    """``row.update(step())`` and its wall time in ``row[seconds]``; whether it succeeded. An
    exception is not raised but kept in ``row`` ("error", "traceback") and its traceback logged."""
    start = time.perf_counter()
    try:
        row.update(step())
    except Exception as e:
        row["error"] = f"{type(e).__name__}: {e}"
        row["traceback"] = "".join(traceback.format_exception(e))
        log(row["traceback"].rstrip())
        return False
    row[seconds] = time.perf_counter() - start
    return True


def finetune_scored(
    model: nn.Module, data: Splits, test: Any, epochs: int, args: argparse.Namespace
) -> dict[str, float]:
    """Fine-tune ``model`` in place as every row of these benchmarks is (prunekit's loop, AdamW
    at ``args.lr``, batch 128, seed 0, on ``args.train_samples``); the seconds it took and the
    top-1 accuracy on ``test`` after."""
    # A fresh loader per run: a loader's shuffling generator advances with every pass.
    train = data.loader("train", batch_size=128, seed=0, num_samples=args.train_samples)
    tuned = pk.finetune_(model, train, epochs=epochs, lr=args.lr, progress=False, seed=0)
    return {"finetune_seconds": tuned.seconds, "accuracy": top1_accuracy(model, test)[0]}


def run_payload(
    args: argparse.Namespace,
    began: float,
    dense: list[dict[str, Any]],
    results: list[dict[str, Any]],
    targets: list[dict[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    """What the results JSON holds; ``extra`` goes after the args (a peer's version)."""
    return {
        "machine": machine(),
        "args": vars(args),
        **extra,
        "minutes": (time.perf_counter() - began) / 60,
        "dense": dense,
        "results": results,
        "targets": targets,
    }


def finish(
    name: str,
    payload: dict[str, Any],
    markdown: str,
    args: argparse.Namespace,
    log: Callable[[str], None],
) -> None:
    """Log the table and the run time; write ``results/NAME.{json,md}`` unless --quick."""
    log(markdown)
    log(f"total {payload['minutes']:.1f} min")
    if not args.quick:
        js, md = write(name, payload, markdown)
        log(f"wrote {js} and {md}")


def summary(
    r: dict[str, Any], method: str, width: int, describe: Callable[[dict[str, Any]], str]
) -> str:
    """A row's progress line: its target and ``r[method]`` (padded to ``width``), then
    ``describe(r)``, or why the row was skipped or failed."""
    where = f"  {r['target']:g}× {r[method]:{width}s}"
    if "skipped" in r:
        return f"{where} skipped: {r['skipped']}"
    if "error" in r:
        return f"{where} error: {r['error']}"
    return f"{where} {describe(r)}"


def epochs_budget(dense: list[dict[str, Any]], models: Mapping[str, Any]) -> str:
    """The fine-tuning budget of each model: "LeNet-5 2 epochs, VGG-BN 1 epoch"."""
    return ", ".join(
        f"{models[d['model']].label} {d['epochs']} epoch{'s' * (d['epochs'] > 1)}" for d in dense
    )


def table_rows(
    payload: dict[str, Any],
    models: Mapping[str, Any],
    method: str,
    before: str,
    columns: list[str],
    batch_sizes: Iterable[int],
) -> list[list[str]]:
    """The results table of a compress-then-fine-tune benchmark, in ``columns`` (model, MACs
    target, ``r[method]``, accuracy before fine-tuning (``r[before]``) and after, Δ pts, params,
    MMACs, MACs ÷, speed-up per batch size): each model's dense row, then its compressed rows
    (skipped ones left out)."""
    rows = []
    for dense in payload["dense"]:
        label = models[dense["model"]].label
        rows.append([label, "–", "dense", *_dense_cells(dense, batch_sizes)])
        for r in payload["results"]:
            if r["model"] == dense["model"] and "skipped" not in r:
                cells = _compressed_cells(r, before, columns, batch_sizes)
                rows.append([label, f"{r['target']:g}×", r[method], *cells])
    return rows


def _dense_cells(dense: dict[str, Any], batch_sizes: Iterable[int]) -> list[str]:
    """The dense row's cells after its model, target and method (compressed; fine-tuned; Δ pts;
    params; MMACs; MACs ÷; speed-up per batch size): its absolute latency where the compressed
    rows show their speed-up."""
    ms = dense.get("latency_ms", {})
    return [
        "–",
        pct(dense["accuracy"]),
        "–",
        f"{dense['params']:,}",
        f"{dense['macs'] / 1e6:.2f}",
        "1.00×",
        *(f"{ms[b]:.2f} ms" if b in ms else "–" for b in batch_sizes),
    ]


def _compressed_cells(
    r: dict[str, Any], before: str, columns: list[str], batch_sizes: Iterable[int]
) -> list[str]:
    """A compressed row's cells in the same ``columns``: accuracy before fine-tuning
    (``r[before]``) and after, its change from dense in points, params, MMACs, MACs ÷,
    speed-ups ("–" untimed); or that it failed."""
    if "error" in r:
        return error_cells(columns)
    return [
        pct(r[before]),
        pct(r["accuracy"]),
        f"{100 * (r['accuracy'] - r['dense_accuracy']):+.2f}",
        f"{r['params']:,}",
        f"{r['macs'] / 1e6:.2f}",
        f"{r['macs_reduction']:.2f}×",
        *(f"{r['speedup'][b]:.2f}×" if "speedup" in r else "–" for b in batch_sizes),
    ]


def error_cells(columns: list[str]) -> list[str]:
    """A failed row's cells after its model, target and method columns."""
    return ["error (see below)", *["–"] * (len(columns) - 4)]


def targets_and_errors(
    name: str,
    verdicts: list[str],
    results: list[dict[str, Any]],
    models: Mapping[str, Any],
    method: str,
    heading: str = "Targets",
) -> str:
    """The markdown after the table: the targets' ``verdicts`` under ``heading``, then the failed
    rows (each by its model's ``label`` in ``models``, its ``r[method]`` and target), if any."""
    text = f"\n\n## {heading}\n\n" + "\n".join(verdicts)
    errors = [
        f"- {models[r['model']].label}, {r[method]}, {r['target']:g}×: `{r['error']}`"
        for r in results
        if "error" in r
    ]
    if errors:
        text += f"\n\n## Errors (tracebacks in {name}.json)\n\n" + "\n".join(errors)
    return text
