"""One-shot quality of SparseGPT, one improvement at a time, and label-free recovery after it.

  minilm    the real pretrained all-MiniLM-L6-v2; WordNet definition→words retrieval on 5,000
            held-out synsets (recall@1, MRR; the standard error of one recall@1 near 0.45 is
            0.7 points, and of a difference between two models on the same queries less) and
            embedding fidelity (mean cosine to the dense model) on the 400 held-out gloss lines.
  gpt-tiny  builtin:gpt-tiny; perplexity on every 128-token window of the held-out eval split.

Rows, at 50 % unstructured and 2:4: the old defaults (128 calibration samples, no refinement);
each change alone (512 samples; dampening 0.1; mask refinement); the new ``SparseGPTConfig``
defaults (512 samples + refinement); Wanda before/after refinement; and the new defaults
followed by ``recover_`` (label-free distillation from the dense model on the model's own
training text, for MiniLM with 20,000 further WordNet glosses, each also split into its words
and its definition; masks kept, time-boxed). At 50 % also the per-layer sparsity allocations
(``allocation="sensitivity"`` and ``"owl"``) for SparseGPT's new defaults and for Wanda (128
samples); N:M fixes every layer's sparsity, so they have no 2:4 rows. Calibration batches come
from the training split, disjoint from every evaluation set.

    python -m bench.oneshot_recover [--models minilm gpt-tiny] [--minutes 10] [--gpt-minutes 2]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

import prunekit as pk
from bench.common import machine, write
from bench.oneshot import gpt_tiny_task, minilm_task
from prunekit.calibrate import find_blocks
from prunekit.data import with_more_text, write_gloss_text
from prunekit.distill.recover import recover_
from prunekit.measure.render import markdown_table
from prunekit.train.loop import fast_bf16

QUERIES = 5000
CALIBRATION = 512  # the most any variant reads; the others read the first num_samples
NEW_DEFAULTS = "SparseGPT, new defaults (512 + refine)"  # the variant recovery follows


def variants(setting: str) -> dict[str, pk.PruneConfig]:
    nm = ":" in setting
    amount: dict[str, Any] = {"pattern": setting} if nm else {"sparsity": 0.5}
    old = {"num_samples": 128, "refine": False}
    rows: dict[str, pk.PruneConfig] = {
        "SparseGPT, old defaults (128 samples)": pk.SparseGPTConfig(**amount, **old),
        "+ 512 samples": pk.SparseGPTConfig(**amount, **{**old, "num_samples": 512}),
        "+ dampening 0.1": pk.SparseGPTConfig(**amount, **old, dampening=0.1),
        "+ refine": pk.SparseGPTConfig(**amount, **{**old, "refine": True}),
        NEW_DEFAULTS: pk.SparseGPTConfig(**amount),
        "Wanda (128 samples)": pk.WandaConfig(**amount),
        "Wanda + refine": pk.WandaConfig(**amount, refine=True),
    }
    # An N:M pattern fixes every layer's sparsity: the allocations are ignored there, and their
    # rows would repeat the uniform ones.
    if not nm:
        for allocation in ("sensitivity", "owl"):
            rows[f"SparseGPT, new defaults + {allocation} allocation"] = pk.SparseGPTConfig(
                **amount, allocation=allocation
            )
            rows[f"Wanda + {allocation} allocation"] = pk.WandaConfig(
                **amount, allocation=allocation
            )
    return rows


# The models as bench.oneshot builds them, with more calibration samples (and MiniLM with more
# queries, its fidelity batches trimmed of padding).
TASKS = {
    "minilm": partial(minilm_task, CALIBRATION, queries=QUERIES, trim=True),
    "gpt-tiny": partial(gpt_tiny_task, CALIBRATION),
}
# What recovery trains on: the training split's samples, in batches of this many.
RECOVERY = {"minilm": ("gloss lines", 32), "gpt-tiny": ("windows", 8)}
# MiniLM's recovery also reads this many further WordNet glosses: unlabelled text of the same
# kind, from synsets outside both the retrieval queries and builtin:minilm's gloss file (its
# first 4,000 lines, whose last 400 are the fidelity lines), each also split into its words
# alone and its definition alone (write_gloss_text's parts): the two kinds of input the
# retrieval embeds, which whole "words: gloss" lines never show the model. On the same 50 %
# model, 864 steps each (one-off runs on the AMX Xeon): whole glosses alone 0.3388 recall@1,
# with the parts 0.3430 (MRR 0.4258 -> 0.4271). In random batches the short parts saved no time
# (a batch is as long as its longest line); recover_'s group_by_length makes them cheap.
MORE_GLOSSES = 20_000
GLOSS_FILE_LINES = 4000


def recovery_task(name: str) -> tuple[nn.Module, list[Any], Any, Any, str]:
    """``TASKS[name]`` plus the batches recovery trains on (the training split, shuffled with
    seed 0; for MiniLM with ``MORE_GLOSSES`` further glosses, the batches shuffled together);
    the setting says so."""
    dense, calib, score, setting, splits = TASKS[name]()
    what, batch_size = RECOVERY[name]
    loader = splits.loader("train", batch_size=batch_size, seed=0)
    recovery = f"recovery text: the {len(splits.train):,} training {what}"
    if name != "minilm":
        train = list(loader)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            file = write_gloss_text(
                Path(tmp) / "more.txt", num_lines=MORE_GLOSSES, start=GLOSS_FILE_LINES,
                parts=True,
            )  # fmt: skip
            train, _ = with_more_text(loader, splits, file, seed=0)
        recovery += (
            f" and {MORE_GLOSSES:,} further WordNet glosses (other synsets), each also as its "
            "words alone and its definition alone"
        )
    recovery += f", batches of {batch_size}"
    return dense, calib, train, score, f"{setting}; {recovery}"


def run_model(name: str, minutes: float, settings: list[str]) -> tuple[list[dict[str, Any]], str]:
    dense, calib, train, score, setting = recovery_task(name)
    base = score(dense, dense)
    print(f"{name}: dense {base}", flush=True)
    results = [{"model": name, "setting": "-", "variant": "dense", **base}]
    rows = [["dense", "–", *(f"{v:.4g}" for v in base.values()), "–", "–"]]
    for amount in settings:
        label = "50%" if amount == "0.5" else amount
        for variant, cfg in variants(amount).items():
            model = copy.deepcopy(dense)
            start = time.perf_counter()
            report = pk.prune_(model, cfg, data=calib)
            seconds = time.perf_counter() - start
            got = score(model, dense)
            print(f"  {label} {variant}: {got} ({seconds:.0f} s)", flush=True)
            results.append({"model": name, "setting": amount, "variant": variant,
                            "config": cfg.to_dict(), "sparsity": report.sparsity,
                            "seconds": seconds, **got})  # fmt: skip
            rows.append([variant, label, *(f"{v:.4g}" for v in got.values()), f"{seconds:.0f}",
                         f"{report.sparsity:.4f}"])  # fmt: skip
            if variant == NEW_DEFAULTS:
                rec = recover_(model, dense, train, minutes=minutes, progress=False)
                got = score(model, dense)
                after = sum(int((m.weight == 0).sum()) for m in _pruned_layers(model))
                sparsity = after / sum(m.weight.numel() for m in _pruned_layers(model))
                print(f"  {label} + recovery: {got} ({rec.seconds:.0f} s, {rec.steps} steps, "
                      f"sparsity {sparsity:.4f})", flush=True)  # fmt: skip
                results.append({"model": name, "setting": amount, "variant": "+ recovery",
                                "recovery": rec.to_dict(), "sparsity_after": sparsity,
                                "seconds": rec.seconds, **got})  # fmt: skip
                rows.append([f"new defaults + recovery ({rec.steps} steps)", label,
                             *(f"{v:.4g}" for v in got.values()),
                             f"{rec.seconds:.0f} (+ prune)", f"{sparsity:.4f}"])  # fmt: skip
    columns = ["variant", "setting", *base.keys(), "seconds", "sparsity"]
    section = f"### {name}\n\n{setting}.\n\n{markdown_table(columns, rows)}"
    return results, section


def _pruned_layers(model: nn.Module) -> list[nn.Module]:
    blocks = find_blocks(model)
    assert blocks is not None
    return [m for _, b in blocks for m in b.modules() if isinstance(m, nn.Linear)
            or type(m).__name__ == "Conv1D"]  # fmt: skip


# What precision="auto" picks on this machine (bf16 autocast where the CPU has AMX).
PRECISION = "bf16 autocast" if fast_bf16("cpu") else "fp32"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--settings", nargs="+", default=["0.5", "2:4"])
    parser.add_argument("--minutes", type=float, default=10.0, help="MiniLM recovery budget")
    parser.add_argument("--gpt-minutes", type=float, default=2.0, help="gpt-tiny recovery budget")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    results, sections = [], []
    for name in args.models:
        minutes = args.minutes if name == "minilm" else args.gpt_minutes
        got, section = run_model(name, minutes, args.settings)
        results += got
        sections.append(section + f"\n\nRecovery budget: {minutes:g} min of wall-clock time, "
                        f"{PRECISION} (recover_'s precision='auto'), lines batched by length (its "
                        "group_by_length).")  # fmt: skip
    info = machine()
    header = (
        "# One-shot SparseGPT: each improvement alone, the new defaults, and recovery\n\n"
        f"Machine: {info['cpu']}, {info['cores']} cores (shared with other jobs while this ran: "
        f"seconds are indicative only), torch {info['torch']} ({info['torch_threads']} threads), "
        f"{info['date']}. Only the layers inside the transformer blocks are pruned. seconds: "
        "pruning (calibration included), or the recovery run. sparsity: of the pruned layers "
        "(the recovery row: counted after recovery, exactly the one-shot count). Padding is "
        "trimmed from calibration batches now, so the old-default rows are faster than in "
        "bench/results/oneshot.md for the same result.\n\n"
    )
    payload = {"machine": info, "args": vars(args), "results": results}
    js, md = write("oneshot_recover", payload, header + "\n\n".join(sections))
    print(f"wrote {js} and {md}")
    return payload


if __name__ == "__main__":
    main()
