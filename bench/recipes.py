"""The recipes shipped in recipes/, run end to end as a user runs them: ``prunekit run``.

Each recipe runs in a fresh process on the model its header names, into a scratch directory;
the table is read from the run's own report.json (the before/after comparison that
``prunekit run`` prints, both models timed interleaved in that run).

    python -m bench.recipes [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import machine, write
from prunekit.measure.render import markdown_table

RECIPES = Path(__file__).parent.parent / "recipes"

# recipe file -> the model (and data) its header says it was written for
RUNS: dict[str, list[str]] = {
    "deep-compression-lenet300": ["--model", "builtin:lenet300"],
    "structured-kd-vgg": ["--model", "builtin:vgg-bn"],
    "minilm-wanda-int8": ["--model", "builtin:minilm"],
}


def run_one(name: str, args: list[str], out: Path) -> dict[str, Any]:
    cli = [
        str(Path(sys.executable).parent / "prunekit"),
        "run",
        str(RECIPES / f"{name}.yaml"),
        *args,
    ]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    start = time.perf_counter()
    done = subprocess.run([*cli, "--out", str(out)], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    print(f"{name}: {seconds:.0f} s", flush=True)
    return {"recipe": name, "args": args, "seconds": seconds, "report": report}


def _quality(m: dict[str, Any]) -> tuple[str, float | None]:
    if m.get("accuracy") is not None:
        return "top-1 %", 100.0 * m["accuracy"]
    for name, value in (m.get("metrics") or {}).items():
        return name, value
    return "–", None


def row(result: dict[str, Any]) -> list[str]:
    c = result["report"]["comparison"]
    before, after, ratios = c["before"], c["after"], c["ratios"]
    metric, q0 = _quality(before)
    _, q1 = _quality(after)
    delta = "–" if q0 is None or q1 is None else f"{q1 - q0:+.3f}"
    latency = sorted(k for k in ratios if k.startswith("latency_"))
    speed = ", ".join(
        f"{1 / ratios[k]:.2f}× (b={k.split('_')[1][1:]})" for k in latency if ratios[k]
    )
    return [
        result["recipe"],
        result["args"][1],
        metric,
        f"{q0:.3f}" if q0 is not None else "–",
        f"{q1:.3f}" if q1 is not None else "–",
        delta,
        f"{before['artifact_bytes']:,} → {after['artifact_bytes']:,}",
        f"{1 / ratios['artifact_bytes']:.1f}×",
        f"{1 / ratios['macs']:.2f}×" if ratios.get("macs") else "–",
        speed or "–",
        f"{result['seconds']:.0f}",
    ]


HEADERS = ["recipe", "model", "quality", "before", "after", "Δ", "bytes on disk",
           "smaller", "MACs ÷", "speed-up", "seconds"]  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(RUNS), default=sorted(RUNS))
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="prunekit-recipes-") as scratch:
        for name in args.only:
            results.append(run_one(name, RUNS[name], Path(scratch) / name))
    info = machine()
    md = (
        "# The shipped recipes, end to end\n\n"
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, {info['date']}. "
        "Each recipe ran as `prunekit run recipes/NAME.yaml --model SPEC --out DIR` in a fresh "
        "process, on the model's own evaluation data (Fashion-MNIST test images; MiniLM: WordNet "
        "definition→words retrieval). Figures come from the run's report.json: 'smaller' is "
        "the original's artifact bytes over the result's (both written by prunekit.save); "
        "speed-up is the original's latency over the result's, both timed interleaved in that "
        "run; seconds is the whole run, measurements included.\n\n"
        + markdown_table(HEADERS, [row(r) for r in results])
    )
    for r in results:
        md += f"\n\n<details><summary>{r['recipe']}: per-step table</summary>\n\n"
        md += _steps_table(r["report"]) + "\n\n</details>"
    payload = {
        "machine": info,
        "runs": [{k: v for k, v in r.items() if k != "report"} | {
            "comparison": {k: r["report"]["comparison"][k] for k in ("ratios", "deltas")},
            "rows": r["report"]["rows"],
        } for r in results],
    }  # fmt: skip
    js, out = write("recipes", payload, md)
    print(md)
    print(f"wrote {js} and {out}")
    return payload


def _steps_table(report: dict[str, Any]) -> str:
    rows = []
    for r in report["rows"]:
        metric, quality = _quality(r)
        rows.append([str(r.get("step", "")), str(r.get("verb", "")), str(r.get("method") or "–"),
                     f"{_fmt(quality)} ({metric})", _fmt(r.get("artifact_bytes")),
                     _fmt(r.get("macs")), _fmt(r.get("seconds"))])  # fmt: skip
    return markdown_table(
        ["step", "verb", "method", "quality", "bytes on disk", "MACs", "seconds"], rows
    )


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


if __name__ == "__main__":
    main()
