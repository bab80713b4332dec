"""One-shot pruning of real transformers from calibration data: magnitude vs Wanda vs SparseGPT.

  gpt-tiny  builtin:gpt-tiny (4.3M-parameter GPT-2 trained by prunekit on Debian's fortunes);
            perplexity on every 128-token window of the held-out eval split; calibration on
            128 windows of the separate calibration split.
  minilm    the real pretrained all-MiniLM-L6-v2; WordNet definition→words retrieval on 1,000
            held-out synsets (recall@1, MRR) and embedding fidelity (mean cosine to the dense
            model) on the 400 held-out gloss lines; calibration on 128 gloss lines.
Settings: 50 % unstructured, 2:4, 4:8, 60 % and 70 % unstructured. Only the layers inside the
transformer blocks are pruned (embeddings, LM head and pooler kept), for every method alike.

    python -m bench.oneshot [--models gpt-tiny minilm] [--settings 0.5 2:4]
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

import prunekit as pk
from bench.common import machine, minilm_scores, write
from prunekit.calibrate import find_blocks
from prunekit.data import load_data
from prunekit.data.batches import split_batch, take_samples, trim_padding
from prunekit.data.splits import Splits
from prunekit.data.text import token_stream
from prunekit.measure.render import markdown_table
from prunekit.measure.retrieval import wordnet_retrieval
from prunekit.measure.text import perplexity
from prunekit.models.gpt_tiny import gpt_tiny_corpus, windows
from prunekit.models.hf import load_tokenizer
from prunekit.specs import load_model

SETTINGS = ["0.5", "2:4", "4:8", "0.6", "0.7"]
METHODS = ["magnitude", "wanda", "sparsegpt"]
SEQ_LEN = 128
CALIBRATION = 128


def config(method: str, setting: str, model: nn.Module) -> pk.PruneConfig:
    fields: dict[str, Any] = (
        {"pattern": setting} if ":" in setting else {"sparsity": float(setting)}
    )
    if method == "magnitude":
        blocks = find_blocks(model)
        assert blocks is not None
        prefix = blocks[0][0].rsplit(".", 1)[0]
        return pk.MagnitudeConfig(targets=[f"re:^{prefix}\\."], **fields)
    # The methods side by side at one calibration size, without SparseGPT's mask refinement
    # (its default since bench.oneshot_recover measured it): the published algorithms as such.
    if method == "wanda":
        return pk.WandaConfig(num_samples=CALIBRATION, **fields)
    return pk.SparseGPTConfig(num_samples=CALIBRATION, refine=False, **fields)


class Task(NamedTuple):
    """A model to prune and how it is measured: its calibration samples (the first of its
    training split), ``score(model, dense)`` (named figures), a sentence saying what they are
    measured on, and the model's data splits."""

    model: nn.Module
    calib: list[Any]
    score: Callable[[nn.Module, nn.Module], dict[str, float]]
    setting: str
    splits: Splits


def gpt_tiny_task(calibration: int = CALIBRATION) -> Task:
    model, source = load_model("builtin:gpt-tiny")
    tok = load_tokenizer(source["path"])
    splits = load_data(source["dataset"], tokenizer=tok, seq_len=SEQ_LEN, mode="stream")
    lines = [x for x in gpt_tiny_corpus()["eval"].read_text().splitlines() if x.strip()]
    wins = windows(token_stream(tok, lines), SEQ_LEN)
    evaluation = [
        {"input_ids": wins[i : i + 32], "labels": wins[i : i + 32]} for i in range(0, len(wins), 32)
    ]

    def score(m: nn.Module, _dense: nn.Module) -> dict[str, float]:
        return {"perplexity": perplexity(m, evaluation)}

    setting = f"perplexity on {len(wins)} held-out windows × {SEQ_LEN} tokens"
    samples = list(take_samples(splits.loader("train", batch_size=8), calibration))
    return Task(model, samples, score, setting, splits)


def minilm_task(calibration: int = CALIBRATION, queries: int = 1000, trim: bool = False) -> Task:
    """``queries``: held-out WordNet definitions retrieval is scored on; ``trim``: padding trimmed
    from the fidelity batches."""
    model, source = load_model("builtin:minilm")
    tok = load_tokenizer(source["path"])
    splits = load_data(source["dataset"], tokenizer=tok, seq_len=SEQ_LEN, mode="lines")
    task = wordnet_retrieval(queries)
    test: Any = splits.loader("test", batch_size=32)
    if trim:
        test = [trim_padding(b) for b in test]

    def score(m: nn.Module, dense: nn.Module) -> dict[str, float]:
        return minilm_scores(m, dense, tok, task, test)

    setting = (
        f"retrieval on {task.name} ({queries:,} held-out definitions → words); fidelity on "
        f"{len(splits.test)} held-out gloss lines"
    )
    samples = list(take_samples(splits.loader("train", batch_size=32), calibration))
    return Task(model, samples, score, setting, splits)


TASKS = {"gpt-tiny": gpt_tiny_task, "minilm": minilm_task}


@torch.no_grad()
def forward_seconds(model: nn.Module, calib: Any) -> float:
    """One forward pass over the calibration samples: the unit Wanda's cost is stated in."""
    start = time.perf_counter()
    for batch in take_samples(calib, CALIBRATION):
        inputs, _ = split_batch(batch)
        model(**inputs)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--settings", nargs="+", default=SETTINGS)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    results, sections = [], []
    for name in args.models:
        dense, calib, score, setting, _ = TASKS[name]()
        forward_s = forward_seconds(dense, calib)
        base = score(dense, dense)
        print(f"{name}: dense {base}; one calibration forward pass {forward_s:.1f} s", flush=True)
        results.append(
            {"model": name, "method": "dense", "setting": "-", "forward_s": forward_s, **base}
        )
        rows = [["dense", "–", *(f"{v:.4g}" for v in base.values()), "–"]]
        for setting_name in args.settings:
            for method in args.methods:
                model = copy.deepcopy(dense)
                cfg = config(method, setting_name, model)
                start = time.perf_counter()
                report = pk.prune_(model, cfg, data=calib)
                seconds = time.perf_counter() - start
                got = score(model, dense)
                print(f"  {setting_name:>4} {method:9s} {got} ({seconds:.1f} s)", flush=True)
                results.append(
                    {
                        "model": name,
                        "method": method,
                        "setting": setting_name,
                        "sparsity": report.sparsity,
                        "seconds": seconds,
                        **got,
                    }
                )
                label = f"{float(setting_name):.0%}" if ":" not in setting_name else setting_name
                rows.append([method, label, *(f"{v:.4g}" for v in got.values()), f"{seconds:.1f}"])
        columns = ["method", "setting", *base.keys(), "pruning s"]
        sections.append(
            f"### {name}\n\n{setting}. One forward pass of the dense model over the "
            f"{CALIBRATION} calibration samples: {forward_s:.1f} s.\n\n"
            f"{markdown_table(columns, rows)}"
        )
    info = machine()
    header = (
        "# One-shot pruning of transformers: magnitude vs Wanda vs SparseGPT\n\n"
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
        f"({info['torch_threads']} threads), {info['date']}. Calibration: {CALIBRATION} samples "
        f"of {SEQ_LEN} tokens (windows for gpt-tiny, lines for MiniLM) from a split disjoint from "
        f"the evaluation. Only the layers inside the transformer blocks are pruned. Pruning time "
        f"includes the calibration forward passes. SparseGPT without mask refinement; its "
        f"defaults (512 samples, refinement) are measured in oneshot_recover.md.\n\n"
    )
    payload = {"machine": info, "args": vars(args), "results": results}
    js, md = write("oneshot", payload, header + "\n\n".join(sections))
    print(f"wrote {js} and {md}")
    return payload


if __name__ == "__main__":
    main()
