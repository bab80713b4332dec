"""The fuzz campaign: mutated artifacts and hostile configs, each bounded in memory and time.

Every case is one damaged copy of a small saved model (bit flips, truncation, manifest or
config.json edits at any JSON path, raw byte edits; with the checksums recomputed by the
"attacker" and without), a hostile Hugging Face config.json, a hostile recipe or a method
config of random field values. A case passes when it loads and runs one forward, or is refused
with a PrunekitError; a crash, a hang, an allocation past the bound, an unsealed edit that loads
or a folder's own code imported is a failure. Cases follow from ``(seed, index)`` alone.

    python -m bench.fuzz [--cases 20000] [--seed 0] [--memory-mb 1024] [--timeout 30]
    python -m bench.fuzz --seed 0 --replay INDEX     # one case, in this process, with traceback
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from bench.common import RESULTS, machine, write
from prunekit.measure.render import markdown_table
from tests.fuzzing import engine
from tests.fuzzing.bases import build_bases
from tests.fuzzing.cases import OUTCOMES, plan, run_case

TARGETS = {
    "codecs": "encoded sparse MLP with int and bool buffers: every codec (pack, pack+zstd, "
    "huffman)",
    "builtin-pruned-rtn": "built-in digits-cnn, channel-pruned, RTN 4-bit; loaded without a "
    "model (rebuilt from its source)",
    "pruned-shared-int8": "MLP channel-pruned, k-means shared, int8-dynamic (structure + swap "
    "records)",
    "pruned-int8-static": "CNN with BatchNorm, channel-pruned, int8-static regions",
    "rtn4": "MLP with RTN 4-bit weight-only layers (group size 16)",
    "qat": "CNN with BatchNorm prepared for QAT (fake-quant layers)",
    "hf-bert-encoded": "tiny BERT, channel-pruned, saved encoded (rebuilt from config.json)",
    "hf-gpt2-plain": "tiny GPT-2 saved plain (a folder from_pretrained opens)",
    "hf-config": "tiny BERT Hugging Face folder (load_hf_model), config.json and weights edited",
    "recipe": "the shipped recipes' YAML, edited, and texts made to hurt a YAML reader",
    "config": "every registered method's config from random field values, applied to an MLP",
}
PROGRESS_SECONDS = 30
VERBOSE = 1000  # characters: an error message longer than this quotes too much of its input


def main(argv: list[str] | None = None) -> engine.Tally | None:
    args = _parser().parse_args(argv)
    bounds = engine.Bounds(memory_mb=args.memory_mb, timeout=args.timeout)
    with tempfile.TemporaryDirectory(prefix="prunekit-fuzz-") as tmp:
        bases = build_bases(Path(tmp) / "bases")
        if args.replay is not None:
            return _replay(bases, args.seed, args.replay, Path(tmp))
        start = time.perf_counter()
        tally = engine.run(bases, args.cases, args.seed, Path(tmp) / "cases", bounds,
                           workers=args.workers, on_result=_progress(args.cases))  # fmt: skip
        seconds = time.perf_counter() - start
    payload = _payload(args, bounds, tally, seconds)
    js, md = write("fuzz", payload, _markdown(payload), folder=args.out)
    print(f"{tally.total():,} cases, {tally.failed()} failures in {seconds:.0f} s: {md}, {js}")
    return tally


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--cases", type=int, default=20_000, help="how many cases (20000)")
    parser.add_argument("--seed", type=int, default=0, help="the campaign: same seed, same cases")
    parser.add_argument(
        "--memory-mb",
        type=int,
        default=1024,
        help="address space a case may add to its worker's, MiB (1024)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per case (30)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for fuzz.md/.json")
    parser.add_argument(
        "--replay",
        type=int,
        default=None,
        metavar="INDEX",
        help="run case INDEX of --seed in this process and show its traceback",
    )
    return parser  # fmt: skip


def _progress(total: int) -> Any:
    # tqdm draws on a terminal; into a file a line every PROGRESS_SECONDS and one per new failure.
    bar = tqdm(total=total, desc="fuzz", unit="case", disable=None, smoothing=0.05)
    state = {"done": 0, "failed": 0, "said": time.perf_counter(), "start": time.perf_counter()}
    seen: set[tuple[str, str, str | None]] = set()

    def on_result(result: dict[str, Any]) -> None:
        state["done"] += 1
        bar.update()
        failed = result["outcome"] not in ("loaded", "refused")
        state["failed"] += failed
        signature = (result["target"], result["outcome"], result["error"])
        if failed and signature not in seen:
            seen.add(signature)
            line = (
                f"fuzz: case {result['index']}: {result['outcome']} on {result['target']} "
                f"({result['error']}): {result['detail'][:160]}"
            )
            tqdm.write(line, file=sys.stderr)
        now = time.perf_counter()
        if bar.disable and (now - state["said"] > PROGRESS_SECONDS or state["done"] == total):
            state["said"] = now
            print(f"fuzz: {state['done']:,}/{total:,} cases, {state['failed']} failures, "
                  f"{now - state['start']:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
        if state["done"] == total:
            bar.close()

    return on_result


def _replay(bases: dict[str, Any], seed: int, index: int, tmp: Path) -> None:
    case = plan(bases, seed, index)
    print(f"case {index} of seed {seed}: {case.target}, {case.label}\n  {case.detail}")
    result = run_case(bases, case, tmp)
    print(f"outcome: {result['outcome']}")
    if result["error"]:
        print(f"{result['error']}: {result['message']}")
        # Once more, unclassified, for the traceback.
        from tests.fuzzing import artifacts, cases

        folder = tmp / "replay"
        base = bases[case.target]
        if base.kind in ("artifact", "hf-folder"):
            artifacts.apply(base, case.payload, case.sealed, folder)
        try:
            cases._run(base, case, folder)
        except Exception:
            traceback.print_exc()


def _payload(args: argparse.Namespace, bounds: engine.Bounds, tally: engine.Tally,
             seconds: float) -> dict[str, Any]:  # fmt: skip
    return {
        "command": f"python -m bench.fuzz --cases {args.cases} --seed {args.seed} --memory-mb "
        f"{args.memory_mb} --timeout {args.timeout:g} --workers {args.workers}",
        "machine": {**machine(), "workers": args.workers, "worker_threads": 1},
        "bounds": {"memory_mb": bounds.memory_mb, "timeout_s": bounds.timeout},
        "seed": args.seed,
        "cases": tally.total(),
        "seconds": seconds,
        "outcomes": {o: tally.total(o) for o in OUTCOMES},
        "failures": tally.failed(),
        "counts": {t: {k: dict(c) for k, c in kinds.items()} for t, kinds in tally.counts.items()},
        "errors": dict(tally.errors.most_common()),
        "failure_groups": tally.failures,
        "slowest": {t: {"seconds": s, "case": i} for t, (s, i) in tally.slowest.items()},
        "seconds_per_target": dict(tally.seconds),
        "peak_mb": tally.peak_mb,
        "longest_message": {
            t: {"chars": c, "case": i} for t, (c, i) in tally.longest_message.items()
        },
    }


def _markdown(p: dict[str, Any]) -> str:
    m, b = p["machine"], p["bounds"]
    shown = [o for o in OUTCOMES if o != "fuzzer-error" or p["outcomes"][o]]
    lines = [
        "# Fuzz campaign: hostile artifacts, Hugging Face configs, recipes and method configs",
        "",
        f"`{p['command']}` — {m['date']}, {m['cpu']} ({m['cores']} cores; {m['workers']} worker "
        f"processes, 1 torch thread each), torch {m['torch']}. Total {p['seconds']:.0f} s "
        f"({p['cases'] / p['seconds']:.1f} cases/s).",
        "",
        f"Bounds per case: **memory** — a case may map at most {b['memory_mb']:,} MiB beyond its "
        f"worker's own address space (RLIMIT_AS; an allocation past it fails there and counts as "
        f"over-memory); **time** — {b['timeout_s']:g} s, then the worker is killed and replaced "
        f"(hang). A case loads the mutated folder (`pk.load`, or `load_hf_model`; a recipe: "
        f"`Recipe.from_yaml` and its round trip; a method config: built, then applied to an MLP) "
        f"and runs one forward on the base's example input.",
        "",
        f"**{p['cases']:,} cases, {p['failures']} failures**: "
        + ", ".join(f"{o} {p['outcomes'][o]:,}" for o in shown)
        + ".",
        "",
        "## Per target",
        "",
    ]
    rows = []
    for target, kinds in p["counts"].items():
        total = {o: sum(c.get(o, 0) for c in kinds.values()) for o in shown}
        rows.append([f"`{target}`", TARGETS.get(target, ""), f"{sum(total.values()):,}",
                     *(f"{total[o]:,}" for o in shown), f"{p['slowest'][target]['seconds']:.2f}",
                     f"{p['peak_mb'].get(target, 0):.0f}",
                     f"{p['longest_message'].get(target, {}).get('chars', 0):,}"])  # fmt: skip
    columns = ["target", "base", "cases", *shown, "slowest case (s)", "peak RSS added (MiB)",
               "longest message (chars)"]  # fmt: skip
    lines += [markdown_table(columns, rows), "", "## Per target × mutation × outcome", ""]
    rows = []
    for target, kinds in p["counts"].items():
        for kind, c in sorted(kinds.items()):
            rows.append([f"`{target}`", kind, f"{sum(c.values()):,}",
                         *(f"{c.get(o, 0):,}" for o in shown)])  # fmt: skip
    lines += [markdown_table(["target", "mutation", "cases", *shown], rows), "", "## Failures", ""]
    if not p["failure_groups"]:
        lines.append("None.")
    for key, group in p["failure_groups"].items():
        example = group["examples"][0]
        lines.append(f"- **{key}** ({group['count']}×): case {example['index']}: "
                     f"{example['detail'][:300]} — `python -m bench.fuzz --seed {p['seed']} "
                     f"--replay {example['index']}`")  # fmt: skip
    verbose = {t: m for t, m in p["longest_message"].items() if m["chars"] > VERBOSE}
    lines += ["", f"## Refusals quoting more than {VERBOSE:,} characters", ""]
    lines += [
        f"- `{t}`: case {m['case']}, {m['chars']:,} characters — `python -m bench.fuzz "
        f"--seed {p['seed']} --replay {m['case']}`"
        for t, m in verbose.items()
    ] or ["None."]
    lines += ["", "Resealed: the edit's checksums (the files' entries and `manifest_sha256`) were "
              "recomputed, as an attacker can; unsealed: they were not, as after an accident — "
              "such an edit must always be refused, and one that loads counts as "
              "loaded-silently — unless it left the parsed contents as they were (a value set "
              "to what it was, a byte of white space), which counts as loaded."]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
