"""Index atoms: the bookkeeping behind dependency analysis.

Every index of every dimension of every tensor in the traced graph gets an integer *atom*.
Coupling rules record that two atoms must be removed together (``unite``) or never
(``block``). Connected components, computed once at the end, are the pruning units: removing a
unit deletes all the parameter slices whose atoms it contains. A unit is prunable only if none of
its atoms is blocked, so anything a rule does not understand stays as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Label:
    """The atoms along each dimension of one tensor.

    dims[k]: int array, one atom per index of dimension k.
    linked[k]: whether dimension k derives from a parameter (decides which dimension carries
        the units when dimensions are merged by a reshape).
    """

    dims: list[np.ndarray]
    linked: list[bool]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(d) for d in self.dims)


@dataclass
class Atoms:
    """Allocates atoms and records the rules' edges and blocks; :meth:`components` solves them."""

    count: int = 0
    _edges: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    _blocked: list[tuple[np.ndarray, str]] = field(default_factory=list)
    _tags: list[tuple[np.ndarray, str]] = field(default_factory=list)
    _blocked_unless: list[tuple[np.ndarray, str, str]] = field(default_factory=list)

    def new(self, size: int) -> np.ndarray:
        out = np.arange(self.count, self.count + size, dtype=np.int64)
        self.count += size
        return out

    def fresh(self, shape: tuple[int, ...], reason: str) -> Label:
        """A label for a tensor the rules cannot relate to anything: every atom blocked."""
        dims = [self.new(s) for s in shape]
        for d in dims:
            self.block(d, reason)
        return Label(dims, [False] * len(dims))

    def unite(self, a: np.ndarray, b: np.ndarray) -> None:
        a, b = np.broadcast_arrays(np.asarray(a), np.asarray(b))
        if a.size:
            self._edges.append((a.ravel(), b.ravel()))

    def block(self, a: np.ndarray, reason: str) -> None:
        a = np.asarray(a).ravel()
        if a.size:
            self._blocked.append((a, reason))

    def block_unless(self, a: np.ndarray, reason: str, tag: str) -> None:
        """Block ``a`` unless its component ends up tagged ``tag`` (a model output is blocked
        unless it is the normalized residual stream, which ``prune_hidden`` may narrow)."""
        a = np.asarray(a).ravel()
        if a.size:
            self._blocked_unless.append((a, reason, tag))

    def tag(self, a: np.ndarray, tag: str) -> None:
        """Mark atoms (e.g. attention heads) so their units can be told apart."""
        a = np.asarray(a).ravel()
        if a.size:
            self._tags.append((a, tag))

    def components(self) -> Solved:
        # scipy is imported here, not at module level: it costs ~0.3 s of `import prunekit`.
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        n = self.count
        if self._edges:
            rows = np.concatenate([a for a, _ in self._edges])
            cols = np.concatenate([b for _, b in self._edges])
        else:
            rows = cols = np.zeros(0, dtype=np.int64)
        adj = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
        ncomp, comp = connected_components(adj, directed=False)
        reason = np.full(ncomp, -1, dtype=np.int64)
        reasons: list[str] = []
        # Reversed so that the first recorded reason of a component wins.
        for atoms, why in reversed(self._blocked):
            reasons.append(why)
            reason[comp[atoms]] = len(reasons) - 1
        tags: dict[str, np.ndarray] = {}
        for atoms, tag in self._tags:
            mask = tags.setdefault(tag, np.zeros(ncomp, dtype=bool))
            mask[comp[atoms]] = True
        for atoms, why, tag in self._blocked_unless:
            comps = comp[atoms]
            exempt = tags.get(tag)
            hit = comps[reason[comps] < 0]
            if exempt is not None:
                hit = hit[~exempt[hit]]
            if hit.size:
                reasons.append(why)
                reason[hit] = len(reasons) - 1
        return Solved(comp, reason, reasons, tags)


@dataclass
class Solved:
    """Component of every atom; why a component is blocked (index into ``reasons``, -1: free)."""

    comp: np.ndarray
    reason: np.ndarray
    reasons: list[str]
    tags: dict[str, np.ndarray]

    def tagged(self, tag: str, comps: np.ndarray) -> np.ndarray:
        mask = self.tags.get(tag)
        return np.zeros(len(comps), dtype=bool) if mask is None else mask[comps]
