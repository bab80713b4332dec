"""What ``measure`` and ``compare`` return: JSON-ready records and before/after tables."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from prunekit.measure.render import markdown_table, render_table

# Fields whose change is reported as after/before; the others (fractions) as a difference.
RATIO_FIELDS = ("params", "nonzeros", "dense_bytes", "artifact_bytes", "bits_per_nonzero", "macs",
                "effective_macs")  # fmt: skip
DELTA_FIELDS = ("accuracy", "sparsity", "prunable_sparsity")
COLUMNS = ["metric", "before", "after", "after/before"]
# The size breakdown lists this many of the largest tensors.
TOP_TENSORS = 10


@dataclass
class Measurement:
    """One model measured. Counts are exact; ``None`` means "not measured".

    ``accuracy``: top-1 fraction in [0, 1] over ``accuracy_samples`` labelled positions.
    ``sparsity``: fraction of all parameters that are zero; ``prunable_sparsity`` the same over
    Linear/Conv weights only, ``per_layer_sparsity`` per such module. ``dense_bytes``: 4 bytes
    per parameter. ``artifact_bytes``: size of the ``pk.save`` directory; ``artifact_kinds`` the
    same split by kind of storage (dense, sparse, packed, entropy-coded, overhead),
    ``artifact_tensors`` per tensor (bytes and encoding chain), ``bits_per_nonzero`` the
    tensors' bits over the non-zero values they hold (see ``prunekit.measure.disk``). ``macs`` and
    ``effective_macs``: per sample (one forward pass at batch 1); effective scales each
    Linear/Conv by its weight density. ``latency_ms``: batch size -> median ms per forward pass.
    ``metrics``: task metrics (perplexity, retrieval recall…), each name stating its settings.
    """

    params: int
    nonzeros: int
    sparsity: float
    prunable_sparsity: float
    dense_bytes: int
    per_layer_sparsity: dict[str, float] = field(default_factory=dict)
    accuracy: float | None = None
    accuracy_samples: int | None = None
    artifact_bytes: int | None = None
    bits_per_nonzero: float | None = None
    artifact_kinds: dict[str, int] | None = None
    artifact_tensors: dict[str, dict[str, Any]] | None = None
    macs: int | None = None
    effective_macs: int | None = None
    latency_ms: dict[int, float] | None = None
    threads: int | None = None
    latency_method: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (latency batch sizes become string keys)."""
        out = asdict(self)
        if self.latency_ms is not None:
            out["latency_ms"] = {str(b): ms for b, ms in self.latency_ms.items()}
        return out

    def to_markdown(self) -> str:
        """The rows ``__str__`` shows as a two-column markdown table, the method below it, then
        the artifact's size breakdown when measured."""
        out = markdown_table(["metric", "value"], self._cells()) + f"\n\n{_footer(self)}\n"
        for title, columns, rows in _size_tables(self):
            out += f"\n{title}\n\n{markdown_table(columns, rows)}\n"
        return out

    def __str__(self) -> str:
        out = render_table("Measurement", ["metric", "value"], self._cells()) + f"\n{_footer(self)}"
        for title, columns, rows in _size_tables(self):
            out += "\n\n" + render_table(title, columns, rows)
        return out

    def _cells(self) -> list[list[str]]:
        return [[label, fmt(get(self))] for label, get, fmt, _ in _rows(self)]


@dataclass
class Comparison:
    """A model measured before and after a change, latencies timed in one interleaved run."""

    before: Measurement
    after: Measurement

    @property
    def ratios(self) -> dict[str, float | None]:
        """after / before for counts, bytes, MACs and ``latency_b{N}_ms``; None if undefined."""
        out = {f: _ratio(getattr(self.before, f), getattr(self.after, f)) for f in RATIO_FIELDS}
        for name, value in self.after.metrics.items():
            out[name] = _ratio(self.before.metrics.get(name), value)
        for size in _batch_sizes(self.before, self.after):
            out[f"latency_b{size}_ms"] = _ratio(
                (self.before.latency_ms or {}).get(size), (self.after.latency_ms or {}).get(size)
            )
        return out

    @property
    def deltas(self) -> dict[str, float | None]:
        """after - before for the fractions: accuracy and sparsities; None if either is None."""
        return {f: _delta(getattr(self.before, f), getattr(self.after, f)) for f in DELTA_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        """``{"before", "after", "ratios", "deltas"}``, JSON-ready."""
        return {
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "ratios": self.ratios,
            "deltas": self.deltas,
        }

    def to_markdown(self) -> str:
        """The before/after table in markdown, with the latency method below it."""
        table = markdown_table(COLUMNS, self._cells())
        return f"{table}\n\n{_footer(self.after)}\n"

    def __str__(self) -> str:
        return render_table("Before / after", COLUMNS, self._cells()) + f"\n{_footer(self.after)}"

    def _cells(self) -> list[list[str]]:
        cells = []
        for label, get, fmt, change in _rows(self.before, self.after):
            b, a = get(self.before), get(self.after)
            cells.append([label, fmt(b), fmt(a), change(b, a)])
        return cells


Getter = Callable[[Measurement], Any]
Row = tuple[str, Getter, Callable[[Any], str], Callable[[Any, Any], str]]


def _rows(*ms: Measurement) -> list[Row]:
    names = list(dict.fromkeys(n for m in ms for n in m.metrics))
    rows: list[Row] = [(n, _metric_getter(n), _num, _ratio_str) for n in names]
    rows += [
        ("accuracy (%)", lambda m: m.accuracy, _pct, _delta_pp),
        ("parameters", lambda m: m.params, _int, _ratio_str),
        ("non-zeros", lambda m: m.nonzeros, _int, _ratio_str),
        ("sparsity (%)", lambda m: m.sparsity, _pct, _delta_pp),
        ("sparsity of Linear/Conv weights (%)", lambda m: m.prunable_sparsity, _pct, _delta_pp),
        ("dense fp32 bytes", lambda m: m.dense_bytes, _int, _ratio_str),
        ("artifact bytes", lambda m: m.artifact_bytes, _int, _ratio_str),
        ("artifact bits per non-zero", lambda m: m.bits_per_nonzero, _bits, _ratio_str),
        ("MACs dense", lambda m: m.macs, _int, _ratio_str),
        ("MACs effective", lambda m: m.effective_macs, _int, _ratio_str),
    ]
    for size in _batch_sizes(*ms):
        rows.append((f"latency b={size} (ms)", _latency_getter(size), _ms, _ratio_str))
    return rows


def _size_tables(m: Measurement) -> list[tuple[str, list[str], list[list[str]]]]:
    """The artifact's bytes by kind and its largest tensors, when the artifact was measured."""
    if not m.artifact_kinds or not m.artifact_bytes:
        return []
    total = m.artifact_bytes
    kinds = [[k, f"{v:,}", f"{100 * v / total:.1f}"] for k, v in m.artifact_kinds.items() if v]
    largest = sorted((m.artifact_tensors or {}).items(), key=lambda kv: -kv[1]["bytes"])
    tensors = [[n, f"{t['bytes']:,}", t["encoding"]] for n, t in largest[:TOP_TENSORS]]
    tables = [("Artifact bytes on disk by kind", ["kind", "bytes", "share (%)"], kinds)]
    if tensors:
        title = f"Largest tensors on disk ({min(TOP_TENSORS, len(largest))} of {len(largest)})"
        tables.append((title, ["tensor", "bytes", "encoding"], tensors))
    return tables


def _bits(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def _metric_getter(name: str) -> Getter:
    return lambda m: m.metrics.get(name)


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


def _latency_getter(size: int) -> Getter:
    return lambda m: (m.latency_ms or {}).get(size)


def _batch_sizes(*ms: Measurement) -> list[int]:
    return sorted({b for m in ms for b in (m.latency_ms or {})})


def _footer(m: Measurement) -> str:
    parts = []
    if m.latency_method:
        parts.append(f"Latency: {m.latency_method}.")
    elif m.threads is not None:
        parts.append(f"Latency not measured; torch threads: {m.threads}.")
    if m.accuracy_samples is not None:
        parts.append(f"Accuracy over {m.accuracy_samples:,} labelled samples.")
    parts.append("MACs per sample (batch 1); effective = Linear/Conv MACs x weight density.")
    return "\n".join(parts)


def _ratio(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or before == 0:
        return None
    return after / before


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _int(v: int | None) -> str:
    return "—" if v is None else f"{v:,}"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def _ratio_str(before: float | None, after: float | None) -> str:
    r = _ratio(before, after)
    return "—" if r is None else f"{r:.3f}×"


def _delta_pp(before: float | None, after: float | None) -> str:
    d = _delta(before, after)
    return "—" if d is None else f"Δ {100 * d:+.2f} pp"
