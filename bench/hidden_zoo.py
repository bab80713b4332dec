"""prune_hidden=True over the Hugging Face test zoo: what narrowing the residual stream adds to
heads + FFN pruning, model by model.

Every model of ``tests.hf_zoo`` (tiny random-weight transformers and CNNs, perturbed as the
tests perturb them) is pruned at ratio 0.5 (``MagnitudeConfig(sparsity=0.5, pattern="channel")``:
heads, FFN neurons and, with ``prune_hidden``, the hidden width each halved), once without and
once with ``prune_hidden=True``. Per model: the fraction of parameters kept, the hidden width
before → after, the output difference the hidden-width step caused (the report's
``hidden_width.rel_error`` and ``cosine``), the seconds of each ``prune_`` call, and whether the
rewritten config reopens the model with ``from_pretrained`` to identical outputs
(``save_pretrained`` to a temporary folder, ``torch.equal`` on every output). Where the config
cannot express the pruned widths (``config_complete`` False) the model is checked through
``prunekit.save``/``prunekit.load`` instead. The zoo lives with the tests; like ``bench.fuzz``,
this benchmark imports it from there (run it from the repository root).

    python -m bench.hidden_zoo [--models NAME ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import prunekit as pk
from bench.common import machine, write
from prunekit.errors import PrunekitError
from prunekit.measure import count_params
from prunekit.measure.render import markdown_table
from prunekit.prune.structured.trace import run_model
from tests import hf_zoo

RATIO = 0.5
# Why from_pretrained cannot reopen these (as tests/prune/structured/test_hidden.py explains);
# shown only for a model whose row says so.
CONFIG_REASONS = {
    "falcon_mqa": "the multi-query key/value head stays and Falcon derives the head size from "
    "hidden_size",
    "bloom": "the ALiBi heads stay and Bloom derives the head size from hidden_size",
    "segformer_single_head": "the stages lose different fractions of their heads (1 of 1 kept, "
    "1 of 2)",
}
MESSAGE = 300  # characters of an error message kept in a note


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(hf_zoo.ZOO), default=None,
                        help="a subset of the zoo (default: every model)")  # fmt: skip
    args = parser.parse_args(argv)
    names = args.models or list(hf_zoo.ZOO)
    _run(names[0], False)  # untimed: the first call pays for imports and the allocator
    results = []
    for name in names:
        row = {"model": name, "without": _run(name, False), "with": _run(name, True)}
        print(f"{name}: {_line(row)}", flush=True)
        results.append(row)
    payload = {"machine": machine(), "args": vars(args), "ratio": RATIO, "results": results,
               "summary": summary(results)}  # fmt: skip
    js, md = write("hidden_zoo", payload, markdown(payload))
    print(f"wrote {js} and {md}")
    return payload


def _run(name: str, prune_hidden: bool) -> dict[str, Any]:
    """One ``prune_`` of a fresh, perturbed zoo model; the figures of the table row."""
    model, inputs = hf_zoo.ZOO[name]()
    hf_zoo.perturb_(model)
    before = count_params(model)
    config = pk.MagnitudeConfig(sparsity=RATIO, pattern="channel", prune_hidden=prune_hidden)
    start = time.perf_counter()
    try:
        report = pk.prune_(model, config, example_inputs=inputs)
    except PrunekitError as e:
        return {"refused": str(e), "params": (before, before)}
    seconds = time.perf_counter() - start
    out: dict[str, Any] = {
        "params": (before, count_params(model)),
        "kept": count_params(model) / before,
        "seconds": seconds,
        "max_diff": report.max_diff,
        "hidden": [(g.before, g.after) for g in report.groups if g.kind == "hidden"],
    }
    h = report.hidden_width
    if h is not None:
        out.update(rel_error=h.rel_error, cosine=h.cosine, resized=h.resized,
                   config_updates=h.config_updates, config_complete=h.config_complete)  # fmt: skip
        out["reopens"] = _reopens(model, inputs, bool(h.config_complete))
    return out


def _outputs(model: nn.Module, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [o.clone() for o in run_model(model, inputs)]


def _reopens(model: Any, inputs: dict[str, torch.Tensor], config_complete: bool) -> str:
    """Whether save_pretrained → from_pretrained gives identical outputs ("yes"); where the
    config cannot express the widths, whether prunekit.save → prunekit.load does instead."""
    reference = _outputs(model, inputs)
    with tempfile.TemporaryDirectory(prefix="prunekit-hidden-zoo-") as tmp:
        try:
            if config_complete:
                model.save_pretrained(tmp)
                reopened = type(model).from_pretrained(tmp).eval()
            else:
                pk.save(model, Path(tmp) / "m")
                reopened = pk.load(Path(tmp) / "m")
            got = _outputs(reopened, inputs)
        except Exception as e:  # a benchmark row, not a crash: the table says what failed
            verb = "from_pretrained" if config_complete else "prunekit.save/load"
            return f"no ({verb} fails): {type(e).__name__}: {_short(str(e))}"
    same = len(got) == len(reference) and all(map(torch.equal, got, reference))
    if config_complete:
        return "yes" if same else "no (from_pretrained, outputs differ)"
    return "no (prunekit.save/load)" if same else "no (prunekit.save/load, outputs differ)"


def _short(message: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else ""
    return first if len(first) <= MESSAGE else first[: MESSAGE - 1] + "…"


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Over the models prune_hidden narrowed: min and max kept fraction with prune_hidden, and
    without it (over those of them that plain channel pruning could cut), and how many reopen
    with from_pretrained."""
    narrowed = [r for r in results if "kept" in r["with"]]
    plain = [r["without"]["kept"] for r in narrowed if "kept" in r["without"]]
    with_ = [r["with"]["kept"] for r in narrowed]
    return {
        "models": len(narrowed),
        "of": len(results),
        "with": (min(with_), max(with_)) if with_ else None,
        "without": (min(plain), max(plain)) if plain else None,
        "without_models": len(plain),
        "from_pretrained": sum(r["with"]["reopens"] == "yes" for r in narrowed),
    }


def _line(row: dict[str, Any]) -> str:
    w, wo = row["with"], row["without"]
    without = f"kept {_num(wo.get('kept'), '.3f')} without"
    if "refused" in w:
        return f"{without}; prune_hidden refused"
    return (f"{without}, {w['kept']:.3f} with (hidden {_widths(w)}, rel_error "
            f"{_num(w['rel_error'], '.3f')}), {w['reopens']}")  # fmt: skip


def _widths(r: dict[str, Any]) -> str:
    return ", ".join(f"{b}→{a}" for b, a in r["hidden"]) or "–"


def _num(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


COLUMNS = ["model", "params", "kept without", "kept with", "hidden", "rel_error", "cosine",
           "s without", "s with", "reopens"]  # fmt: skip


def markdown(payload: dict[str, Any]) -> str:
    info, s = payload["machine"], payload["summary"]
    rows, notes = [], []

    def note(text: str) -> str:
        notes.append(text)
        return f" [{len(notes)}]"

    for r in payload["results"]:
        w, wo = r["with"], r["without"]
        plain = _num(wo.get("kept"), ".3f")
        if "refused" in wo:
            plain = "refused" + note(f"{r['model']}, without prune_hidden: {_short(wo['refused'])}")
        head = [r["model"], f"{wo['params'][0]:,}", plain]
        if "refused" in w:
            refused = "refused" + note(f"{r['model']}: {_short(w['refused'])}")
            rows.append([*head, refused, "–", "–", "–", _num(wo.get("seconds"), ".2f"), "–",
                         "–"])  # fmt: skip
            continue
        # "no (…): the error" when reopening failed: the cell keeps the verdict, the note the
        # error.
        reopens, _, error = w["reopens"].partition(": ")
        if reopens != "yes" and not w["config_complete"]:
            why = CONFIG_REASONS.get(r["model"], "the config cannot express the pruned widths")
            failed = f" The error: {error}" if error else ""
            reopens += note(f"{r['model']}: {why}.{failed}")
        elif error:
            reopens += note(f"{r['model']}: {error}")
        rows.append([*head, f"{w['kept']:.3f}", _widths(w), _num(w["rel_error"], ".3f"),
                     _num(w["cosine"], ".3f"), _num(wo.get("seconds"), ".2f"),
                     f"{w['seconds']:.2f}", reopens])  # fmt: skip
    line = "No model was narrowed."
    if s["models"]:
        plain = f"{s['without'][0]:.2f}–{s['without'][1]:.2f}" if s["without"] else "none"
        plain_only = (
            f" ({s['without_models']} of them; plain channel pruning refuses the rest)"
            if s["without_models"] < s["models"]
            else ""
        )
        line = (
            f"**At ratio {payload['ratio']:g}, the {s['models']} models prune_hidden narrows keep "
            f"{s['with'][0]:.2f}–{s['with'][1]:.2f} of their parameters with prune_hidden=True, "
            f"{plain} without{plain_only}; {s['from_pretrained']} of {s['models']} "
            f"reopen with from_pretrained. {s['of'] - s['models']} of the {s['of']} zoo models "
            "refuse prune_hidden.**"
        )
    return (
        "# prune_hidden over the Hugging Face test zoo\n\n"
        f"Machine: {info['cpu']}, {info['cores']} cores shared with other jobs, torch "
        f"{info['torch']} ({info['torch_threads']} threads), {info['date']}. "
        f"`python -m bench.hidden_zoo`: every model of tests/hf_zoo.py (tiny random weights, "
        f"perturbed by hf_zoo.perturb_ as the tests do) pruned by "
        f'`MagnitudeConfig(sparsity={payload["ratio"]:g}, pattern="channel")`, once as is '
        "(heads, FFN neurons, conv channels: output-equivalent to the masked model, hidden width "
        "kept) and "
        "once with `prune_hidden=True` (the hidden width halved too). kept: parameters after / "
        "before. hidden: the stream width(s) before → after, one per hidden group (per stage "
        "for the staged models). rel_error and cosine: the report's hidden_width, the "
        "difference the narrower stream made on the example input against the model already "
        "pruned in heads and FFN (a narrowed output compared on its kept channels); not a "
        "verified match. s: seconds of each prune_ call (wall time on the shared machine, "
        "after one untimed warm-up call). reopens: save_pretrained of the rewritten config, "
        "from_pretrained, identical outputs (torch.equal); where the config cannot express the "
        "widths (hidden_width.config_complete False), prunekit.save → prunekit.load is checked "
        "instead.\n\n"
        f"{line}\n\n"
        + markdown_table(COLUMNS, rows)
        + ("\n\n" + "\n".join(f"[{i}] {t}" for i, t in enumerate(notes, 1)) if notes else "")
    )


if __name__ == "__main__":
    main()
