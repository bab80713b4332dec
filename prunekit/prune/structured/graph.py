"""Dependency analysis: which slices of which parameters must be removed together.

``analyze(model, example_inputs)`` traces the model (trace.py), runs the coupling rules
(rules.py) over every op, and solves the resulting atom components (atoms.py). The result is a
list of :class:`Group`: a set of parallel, interchangeable units (the 64 filters of a conv with
its BatchNorm and the next conv's input channels; the 12 heads of an attention layer with their
q/k/v rows and output-projection columns), each unit removable on its own.
"""

from __future__ import annotations

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
from prunekit.prune.structured.trace import trace


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
        removing one changes the norm's statistics, so it is not output-equivalent).
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


@dataclass
class DependencyGraph:
    groups: list[Group]
    blocked: list[BlockedDim]
    param_shapes: dict[str, tuple[int, ...]]
    _param_atoms: dict[str, list[np.ndarray]] = field(repr=False)
    _macs: list[list[list[np.ndarray]]] = field(repr=False)
    _solved: Solved = field(repr=False)

    def count(self, removed: dict[int, np.ndarray] | None = None) -> tuple[int, int]:
        """``(parameters, MACs per forward on the example input)`` after removing units.

        removed: group id → bool per unit (True: removed). ``None``: the unpruned model."""
        gone = np.zeros(len(self._solved.reason), dtype=bool)
        for gid, mask in (removed or {}).items():
            gone[self.groups[gid].comps[mask]] = True
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


def analyze(model: nn.Module, example_inputs: Any, *, hidden: bool = False) -> DependencyGraph:
    """Trace ``model`` on ``example_inputs`` and find its groups of coupled units.

    hidden: also the channels under LayerNorm/RMSNorm (the residual stream of a transformer,
    a ConvNeXt stage's width) as ``"hidden"`` groups; a model output on such channels may
    then narrow with them."""
    tr = trace(model, example_inputs)
    buffers = {name for name, _ in model.named_buffers()}
    atoms = Atoms()
    labels: dict[Any, Any] = {}
    ctx = Context(atoms, labels, tr.values, hidden=hidden)
    param_atoms: dict[str, list[np.ndarray]] = {}
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
            for lab in _flat_labels([labels.get(a) for a in node.args[0]]):
                if hidden:
                    for d in lab.dims:
                        atoms.block_unless(d, "a model output", NORM)
                else:
                    ctx.block_label(lab, "a model output")
    solved = atoms.components()
    # Buffers (BatchNorm running statistics) shrink with their channels but are not parameters.
    renamed = {(f"buffer:{n}" if n in buffers else n): d for n, d in param_atoms.items()}
    groups, blocked = _groups(param_atoms, solved)
    return DependencyGraph(
        groups=groups,
        blocked=blocked,
        param_shapes={n: tuple(len(d) for d in dims) for n, dims in param_atoms.items()},
        _param_atoms=renamed,
        _macs=ctx.macs,
        _solved=solved,
    )


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
        counts: dict[tuple[str, int], int] = defaultdict(int)
        for name, d, _ in slices:
            counts[(name, d)] += 1
        by_signature[tuple(sorted(counts.items()))].append(comp)
    order = {name: i for i, name in enumerate(param_atoms)}
    groups: list[Group] = []
    for signature, comps in by_signature.items():
        keys = sorted((k for k, _ in signature), key=lambda k: (order[k[0]], k[1]))
        per_comp: list[dict[tuple[str, int], list[int]]] = []
        for c in comps:
            slot: dict[tuple[str, int], list[int]] = defaultdict(list)
            for n, d, i in units[c]:
                slot[(n, d)].append(i)
            per_comp.append(slot)
        index = {k: np.array([slot[k] for slot in per_comp]) for k in keys}
        first = index[keys[0]][:, 0]
        sort = np.argsort(first, kind="stable")
        comps_arr = np.asarray(comps)[sort]
        members = [Member(n, d, np.sort(index[(n, d)][sort], axis=1)) for n, d in keys]
        kind = HEAD if solved.tagged(HEAD, comps_arr).any() else "channel"
        if kind != HEAD and solved.tagged(NORM, comps_arr).any():
            kind = HIDDEN
        groups.append(Group(0, kind, members, comps_arr))
    groups.sort(key=lambda g: (order[g.members[0].param], g.members[0].dim))
    for i, g in enumerate(groups):
        g.id = i
    return groups, blocked
