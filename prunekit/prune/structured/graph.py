"""Dependency analysis: which slices of which parameters must be removed together.

``analyze(model, example_inputs)`` traces the model (trace.py), runs the coupling rules
(rules.py) over every op, and solves the resulting atom components (atoms.py). The result is a
list of :class:`Group`: a set of parallel, interchangeable units (the 64 filters of a conv with
its BatchNorm and the next conv's input channels; the 12 heads of an attention layer with their
q/k/v rows and output-projection columns), each unit removable on its own.
"""

from __future__ import annotations

import gc
import math
import operator
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.prune.structured.atoms import Atoms, Label, Solved
from prunekit.prune.structured.rules import HEAD, HIDDEN, NORM, RULES, Context, op_name, unknown
from prunekit.prune.structured.trace import Trace, trace


@dataclass(frozen=True)
class Member:
    """One parameter's share of a group: ``index[u]`` are unit u's indices along ``dim``."""

    param: str
    dim: int
    index: np.ndarray  # [units, per_unit]

    @property
    def module(self) -> str:
        return self.param.rpartition(".")[0]


@dataclass
class Group:
    """Interchangeable units that must each be removed as a whole.

    kind: ``"head"`` for attention heads, ``"channel"`` for neurons, filters and channels,
        ``"hidden"`` for channels under a LayerNorm/RMSNorm (found by ``analyze(hidden=True)``;
        removing one changes the norm's statistics, so it is not output-equivalent) and for a
        model output's channels that narrow with them (:meth:`DependencyGraph.output_group`).
    comps: the component id of each unit (used to count what a plan leaves).
    """

    id: int
    kind: str
    members: list[Member]
    comps: np.ndarray

    @property
    def size(self) -> int:
        return len(self.comps)

    @property
    def modules(self) -> list[str]:
        return list(dict.fromkeys(m.module for m in self.members))

    @property
    def name(self) -> str:
        """The group's first module, e.g. the layer whose outputs the units are."""
        return self.modules[0]


@dataclass
class BlockedDim:
    """A parameter dimension (or part of one) that cannot shrink, and why."""

    param: str
    dim: int
    count: int
    reason: str


# Why a model output's dimensions are blocked (with hidden analysis: unless normalized).
MODEL_OUTPUT = "a model output"


@dataclass
class DependencyGraph:
    groups: list[Group]
    blocked: list[BlockedDim]
    param_shapes: dict[str, tuple[int, ...]]
    _param_atoms: dict[str, list[np.ndarray]] = field(repr=False)
    _macs: list[list[list[np.ndarray]]] = field(repr=False)
    _solved: Solved = field(repr=False)
    # The atoms along each dimension of each model output, in output order (None: no label).
    _outputs: list[list[np.ndarray] | None] = field(default_factory=list, repr=False)

    def _gone(self, removed: dict[int, np.ndarray] | None) -> np.ndarray:
        gone = np.zeros(len(self._solved.reason), dtype=bool)
        for gid, mask in (removed or {}).items():
            gone[self.groups[gid].comps[mask]] = True
        return gone

    def count(self, removed: dict[int, np.ndarray] | None = None) -> tuple[int, int]:
        """``(parameters, MACs per forward on the example input)`` after removing units.

        removed: group id → bool per unit (True: removed). ``None``: the unpruned model."""
        gone = self._gone(removed)
        comp = self._solved.comp

        def kept(atoms: np.ndarray) -> int:
            return int(len(atoms) - gone[comp[atoms]].sum())

        params = sum(
            math.prod(kept(a) for a in dims) if dims else 1
            for name, dims in self._param_atoms.items()
            if not name.startswith("buffer:")
        )
        macs = sum(sum(math.prod(kept(a) for a in term) for term in terms) for terms in self._macs)
        return params, macs

    def kept_output_indices(self, removed: dict[int, np.ndarray]) -> list[list[np.ndarray] | None]:
        """Per model output (in order), per dimension: the indices ``removed`` keeps (all of
        them but where a narrowed hidden width runs through the output)."""
        gone = self._gone(removed)
        return [
            None if dims is None else [np.flatnonzero(~gone[self._solved.comp[a]]) for a in dims]
            for dims in self._outputs
        ]

    def output_group(self, param: str, dim: int) -> Group | None:
        """Make the units along ``param``'s dimension ``dim`` a new ``"hidden"`` group, appended
        to :attr:`groups`, where being a model output is all that blocks them (BertModel's
        pooler, whose width its config ties to the hidden size): each unit with every parameter
        slice it spans. None where anything else blocks a unit or the units differ in the
        slices they span."""
        dims = self._param_atoms.get(param)
        if dims is None or dim >= len(dims):
            return None
        solved = self._solved
        comps = np.asarray(list(dict.fromkeys(solved.comp[dims[dim]].tolist())))
        reasons = solved.reason[comps]
        if (reasons < 0).any() or any(solved.reasons[r] != MODEL_OUTPUT for r in reasons):
            return None
        wanted = set(comps.tolist())
        units: dict[int, list[tuple[str, int, int]]] = defaultdict(list)
        for name, atoms in self._param_atoms.items():
            for d, arr in enumerate(atoms):
                for i in np.flatnonzero(np.isin(solved.comp[arr], comps)):
                    units[int(solved.comp[arr][i])].append((name.removeprefix("buffer:"), d, i))
        signatures = {_signature(units[c]) for c in wanted}
        if len(signatures) != 1:
            return None
        order = {name.removeprefix("buffer:"): i for i, name in enumerate(self._param_atoms)}
        group = _group(
            len(self.groups), HIDDEN, comps.tolist(), units, next(iter(signatures)), order
        )
        self.groups.append(group)
        spanned = {(m.param, m.dim) for m in group.members}
        self.blocked = [
            b for b in self.blocked if (b.param, b.dim) not in spanned or b.reason != MODEL_OUTPUT
        ]
        return group


def analyze(model: nn.Module, example_inputs: Any, *, hidden: bool = False) -> DependencyGraph:
    """Trace ``model`` on ``example_inputs`` and find its groups of coupled units.

    hidden: also the channels under LayerNorm/RMSNorm (the residual stream of a transformer,
    a ConvNeXt stage's width) as ``"hidden"`` groups; a model output on such channels may
    then narrow with them."""
    atoms = Atoms()
    param_atoms, outputs, macs = _label(trace(model, example_inputs), atoms, hidden)
    # The traced graph's nodes refer to each other, so only the cycle collector frees them (and
    # the fake tensors they hold): collect now, so that the memory the trace took is reused by
    # the pruning that follows instead of adding to its peak.
    gc.collect()
    solved = atoms.components()
    buffers = {name for name, _ in model.named_buffers()}
    # Buffers (BatchNorm running statistics) shrink with their channels but are not parameters.
    renamed = {(f"buffer:{n}" if n in buffers else n): d for n, d in param_atoms.items()}
    groups, blocked = _groups(param_atoms, solved)
    return DependencyGraph(
        groups=groups,
        blocked=blocked,
        param_shapes={n: tuple(len(d) for d in dims) for n, dims in param_atoms.items()},
        _param_atoms=renamed,
        _macs=macs,
        _solved=solved,
        _outputs=outputs,
    )


def _label(
    tr: Trace, atoms: Atoms, hidden: bool
) -> tuple[
    dict[str, list[np.ndarray]], list[list[np.ndarray] | None], list[list[list[np.ndarray]]]
]:
    """Run the coupling rules over every node of ``tr``, uniting and blocking ``atoms``.

    Returns each parameter's (and buffer's) atoms per dimension, each model output's atoms per
    dimension (None: no label) and the MAC terms of every contraction."""
    labels: dict[Any, Any] = {}
    ctx = Context(atoms, labels, tr.values, hidden=hidden)
    param_atoms: dict[str, list[np.ndarray]] = {}
    outputs: list[list[np.ndarray] | None] = []
    for node in tr.graph.nodes:
        value = tr.values.get(node)
        if node.op == "placeholder":
            if not isinstance(value, torch.Tensor):
                continue
            name = tr.state.get(node)
            lab = Label([atoms.new(s) for s in value.shape], [name is not None] * value.dim())
            if name is None:
                ctx.block_label(lab, "a model input")
            else:
                param_atoms[name] = lab.dims
                if not node.users:
                    ctx.block_label(lab, "not used by the forward pass on the example input")
            labels[node] = lab
        elif node.op == "get_attr":
            labels[node] = ctx.fresh_like(value, "a constant in the model's code")
        elif node.op == "call_function":
            if node.target is operator.getitem:
                src = labels.get(node.args[0])
                labels[node] = src[node.args[1]] if isinstance(src, list | tuple) else None
                continue
            ctx.node = node
            labels[node] = RULES.get(op_name(node), unknown)(ctx)
        elif node.op == "output":
            results = [labels.get(a) for a in node.args[0]]
            outputs = [lab.dims if isinstance(lab, Label) else None for lab in results]
            for lab in _flat_labels(results):
                if hidden:
                    for d in lab.dims:
                        atoms.block_unless(d, MODEL_OUTPUT, NORM)
                else:
                    ctx.block_label(lab, MODEL_OUTPUT)
    return param_atoms, outputs, ctx.macs


def _flat_labels(items: Any) -> list[Label]:
    out: list[Label] = []
    for it in items:
        if isinstance(it, Label):
            out.append(it)
        elif isinstance(it, list | tuple):
            out.extend(_flat_labels(it))
    return out


def _groups(
    param_atoms: dict[str, list[np.ndarray]], solved: Solved
) -> tuple[list[Group], list[BlockedDim]]:
    units: dict[int, list[tuple[str, int, int]]] = defaultdict(list)
    blocked: list[BlockedDim] = []
    for name, dims in param_atoms.items():
        for d, arr in enumerate(dims):
            comps = solved.comp[arr]
            free = solved.reason[comps] < 0
            if not free.all():
                why: dict[str, int] = defaultdict(int)
                for i in np.flatnonzero(~free):
                    why[solved.reasons[solved.reason[comps[i]]]] += 1
                for reason, n in why.items():
                    blocked.append(BlockedDim(name, d, n, reason))
            for i in np.flatnonzero(free):
                units[int(comps[i])].append((name, d, int(i)))
    by_signature: dict[tuple, list[int]] = defaultdict(list)
    for comp, slices in units.items():
        by_signature[_signature(slices)].append(comp)
    order = {name: i for i, name in enumerate(param_atoms)}
    groups: list[Group] = []
    for signature, comps in by_signature.items():
        arr = np.asarray(comps)
        kind = HEAD if solved.tagged(HEAD, arr).any() else "channel"
        if kind != HEAD and solved.tagged(NORM, arr).any():
            kind = HIDDEN
        groups.append(_group(0, kind, comps, units, signature, order))
    groups.sort(key=lambda g: (order[g.members[0].param], g.members[0].dim))
    for i, g in enumerate(groups):
        g.id = i
    return groups, blocked


def _signature(slices: list[tuple[str, int, int]]) -> tuple:
    """How many indices of which parameter dimension a unit spans."""
    counts: dict[tuple[str, int], int] = defaultdict(int)
    for name, d, _ in slices:
        counts[(name, d)] += 1
    return tuple(sorted(counts.items()))


def _group(
    gid: int,
    kind: str,
    comps: list[int],
    units: dict[int, list[tuple[str, int, int]]],
    signature: tuple,
    order: dict[str, int],
) -> Group:
    """The group of the units ``comps`` (each spanning ``signature``), in the order of their
    first member's indices."""
    keys = sorted((k for k, _ in signature), key=lambda k: (order[k[0]], k[1]))
    per_comp: list[dict[tuple[str, int], list[int]]] = []
    for c in comps:
        slot: dict[tuple[str, int], list[int]] = defaultdict(list)
        for n, d, i in units[c]:
            slot[(n, d)].append(i)
        per_comp.append(slot)
    index = {k: np.array([slot[k] for slot in per_comp]) for k in keys}
    sort = np.argsort(index[keys[0]][:, 0], kind="stable")
    members = [Member(n, d, np.sort(index[(n, d)][sort], axis=1)) for n, d in keys]
    return Group(gid, kind, members, np.asarray(comps)[sort])
