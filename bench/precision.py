"""Training precision side by side: seconds per optimizer step in fp32 and in bf16 autocast.

``FinetuneConfig.precision="bf16"`` runs the forward passes and the loss under
``torch.autocast`` in bfloat16 (weights, gradients and optimizer state stay fp32); ``"auto"``
picks it where the hardware multiplies bfloat16 natively (AMX CPUs, most GPUs). Rows:

  minilm  the real all-MiniLM-L6-v2, its block layers pruned to 50 % (magnitude), distilled from
          the dense model as ``recover_`` does (``recovery_config``: embeddings' cosine plus every
          block's hidden states, no labels) on the training gloss lines, batches of 32.
  lenet5  builtin LeNet-5 pruned to 50 % (magnitude), fine-tuned on Fashion-MNIST (cross-entropy,
          batches of 128): a small CNN, where fixed per-step costs weigh more.

The two precisions train two copies of the same pruned model, interleaved: after a warm-up run
each, ``--rounds`` rounds, each one ``N``-step run per precision (the order alternates by round)
on the same batches. A step's time is the gap between the loop taking two batches; the table
gives the median over all timed steps, each round's mean training loss, and the quality after
the rounds (MiniLM: embedding fidelity to the dense model on held-out gloss lines; LeNet-5: test
accuracy), so a reader can see that bf16 trains alike.

    python -m bench.precision [--rounds 3] [--steps 5] [--cnn-steps 30] [--models minilm lenet5]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

import prunekit as pk
from bench.common import echo, machine, machine_line, pct, write
from bench.oneshot import SEQ_LEN
from bench.oneshot import config as oneshot_config
from prunekit.data import load_data
from prunekit.data.batches import take_samples, trim_padding
from prunekit.distill.recover import recovery_config
from prunekit.measure.accuracy import top1_accuracy
from prunekit.measure.render import markdown_table
from prunekit.measure.text import embedding_fidelity
from prunekit.models import pretrained
from prunekit.models.hf import load_tokenizer
from prunekit.specs import load_model
from prunekit.train.loop import fast_bf16

PRECISIONS = ("fp32", "bf16")
WARMUP_STEPS = 2
FIDELITY_LINES = 128  # held-out gloss lines the MiniLM fidelity is read on


class Clocked:
    """Batches that note the time each is taken, and the time the loop asks past the last: the
    gaps are the loop's steps (forward, loss, backward, optimizer step, masks)."""

    def __init__(self, batches: list[Any]) -> None:
        self.batches = batches
        self.times: list[float] = []

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Any]:
        # Only the last pass counts: the loop's set-up may read a first batch before training.
        self.times = []
        for batch in self.batches:
            self.times.append(time.perf_counter())
            yield batch
        self.times.append(time.perf_counter())

    def steps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]


# A model's setup: the student to copy per precision, one training run train(model, batches,
# precision) -> its report, the batches to draw from, quality(model) -> float, and a line saying
# what was run.
Setup = tuple[nn.Module, Callable[..., Any], list[Any], Callable[[nn.Module], float], str]


def minilm_setup(batches_needed: int) -> Setup:
    dense, source = load_model("builtin:minilm")
    dense.eval()
    tok = load_tokenizer(source["path"])
    splits = load_data(source["dataset"], tokenizer=tok, seq_len=SEQ_LEN, mode="lines")
    batches = [trim_padding(b) for b in take_samples(
        splits.loader("train", batch_size=32, seed=0), 32 * batches_needed)]  # fmt: skip
    test = [trim_padding(b) for b in take_samples(splits.loader("test", batch_size=32),
                                                  FIDELITY_LINES)]  # fmt: skip
    student = copy.deepcopy(dense)
    pk.prune_(student, oneshot_config("magnitude", "0.5", student))
    base = recovery_config(student, batches[0])

    def train(model: nn.Module, data: Any, precision: str) -> Any:
        cfg = pk.DistillConfig(**{**base.model_dump(), "precision": precision, "epochs": 1})
        return pk.distill_(model, dense, data, cfg, progress=False)

    def quality(model: nn.Module) -> float:
        return embedding_fidelity(model, dense, test)

    what = (
        f"all-MiniLM-L6-v2, block layers 50 % magnitude-pruned, distilled from the dense model "
        f"with `recovery_config` (cosine on embeddings + hidden states, lr {base.lr:g}, "
        f"{base.lr_schedule} with {base.warmup:g} warm-up per run); batches of 32 training gloss "
        f"lines (padding trimmed); quality: embedding fidelity on {FIDELITY_LINES} held-out lines"
    )
    return student, train, batches, quality, what


def lenet5_setup(batches_needed: int) -> Setup:
    splits = load_data("fashion-mnist")
    batches = list(take_samples(splits.loader("train", batch_size=128, seed=0),
                                128 * batches_needed))  # fmt: skip
    test = splits.loader("test", batch_size=1000)
    student = pretrained("lenet5", progress=False)
    pk.prune_(student, pk.MagnitudeConfig(sparsity=0.5))

    def train(model: nn.Module, data: Any, precision: str) -> Any:
        return pk.finetune_(model, data, epochs=1, lr=1e-3, precision=precision, progress=False)

    def quality(model: nn.Module) -> float:
        return top1_accuracy(model, test)[0]

    what = (
        "LeNet-5 (builtin, Fashion-MNIST), 50 % magnitude-pruned, `finetune_` at lr 1e-3 "
        "(cosine per run), batches of 128; quality: test accuracy in %"
    )
    return student, train, batches, quality, what


SETUPS = {"minilm": minilm_setup, "lenet5": lenet5_setup}


def run_model(name: str, rounds: int, steps: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Warm-up, then ``rounds`` interleaved rounds of ``steps`` steps per precision."""
    student, train, batches, quality, what = SETUPS[name](WARMUP_STEPS + rounds * steps)
    models = {p: copy.deepcopy(student) for p in PRECISIONS}
    row: dict[str, Any] = {"model": name, "setting": what, "before": quality(student)}
    for p in PRECISIONS:  # kernels chosen and caches filled; not timed
        start = time.perf_counter()
        train(models[p], batches[:WARMUP_STEPS], p)
        log(f"{name} warm-up {p}: {time.perf_counter() - start:.1f} s")
    times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    losses: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for r in range(rounds):
        start = WARMUP_STEPS + r * steps
        order = PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]
        for p in order:
            data = Clocked(batches[start : start + steps])
            report = train(models[p], data, p)
            times[p] += data.steps()
            losses[p].append(report.history[-1]["train_loss"])
            log(f"{name} round {r + 1} {p}: {statistics.median(data.steps()):.3f} s/step, "
                f"loss {losses[p][-1]:.4f}")  # fmt: skip
    for p in PRECISIONS:
        row[p] = {"step_s": times[p], "median_s": statistics.median(times[p]),
                  "round_loss": losses[p], "after": quality(models[p])}  # fmt: skip
    row["speedup"] = row["fp32"]["median_s"] / row["bf16"]["median_s"]
    return row


def _quality(name: str, v: float) -> str:
    return pct(v) if name == "lenet5" else f"{v:.4f}"


def main(argv: list[str] | None = None, log: Callable[[str], None] = echo) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="MiniLM steps per round")
    parser.add_argument("--cnn-steps", type=int, default=30, help="LeNet-5 steps per round")
    parser.add_argument("--models", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    args = parser.parse_args(argv)
    began = time.perf_counter()
    results = [
        run_model(name, args.rounds, args.steps if name == "minilm" else args.cnn_steps, log)
        for name in args.models
    ]
    info = machine()
    amx = fast_bf16("cpu")
    rows = [
        [r["model"], *(f"{r[p]['median_s'] * 1e3:.1f}" for p in PRECISIONS),
         f"**{r['speedup']:.2f}×**", *(" / ".join(f"{x:.5f}" for x in r[p]["round_loss"])
                                       for p in PRECISIONS),
         _quality(r["model"], r["before"]),
         *(_quality(r["model"], r[p]["after"]) for p in PRECISIONS)]
        for r in results
    ]  # fmt: skip
    shared = " (shared with other jobs while this ran: compare the two columns, not the times)"
    header = (
        "# Training precision: fp32 vs bf16 autocast, seconds per optimizer step\n\n"
        f"{machine_line(info, shared)}. "
        f"AMX (native bfloat16 matrix multiply, `fast_bf16('cpu')`): **{'yes' if amx else 'no'}**"
        f', so `precision="auto"` trains in {"bf16" if amx else "fp32"} here. On a CPU '
        "without AMX, bf16 autocast is expected to be slower than fp32 (oneDNN emulates the "
        'bfloat16 products) and `"auto"` picks fp32 there.\n\n'
        f"Interleaved: after a {WARMUP_STEPS}-step warm-up run per precision, {args.rounds} "
        f"rounds, each one run per precision (order alternating) on the same batches; MiniLM "
        f"{args.steps} steps per run, LeNet-5 {args.cnn_steps}. ms/step: the median over all "
        "timed steps (a step: both forward passes, loss, backward, optimizer step, masks). "
        "loss per round: the run's mean training loss; the two copies start from the same "
        "pruned weights and see the same batches.\n\n"
    )
    table = markdown_table(
        ["model", "fp32 ms/step", "bf16 ms/step", "speed-up", "fp32 loss per round",
         "bf16 loss per round", "quality before", "after fp32", "after bf16"],
        rows,
    )  # fmt: skip
    notes = "\n\n" + "\n".join(f"- {r['model']}: {r['setting']}." for r in results)
    payload = {"machine": info, "amx": amx, "args": vars(args),
               "minutes": (time.perf_counter() - began) / 60, "results": results}  # fmt: skip
    js, md = write("precision", payload, header + table + notes)
    log(header + table + notes)
    log(f"total {payload['minutes']:.1f} min; wrote {js} and {md}")
    return payload


if __name__ == "__main__":
    main()
