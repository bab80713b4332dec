"""Coupling rules, one per family of ATen ops.

A rule reads the labels (atoms per dimension) of an op's tensor inputs, records which atoms must
go together (``unite``) or can never go (``block``), and returns the labels of the op's outputs.
An op without a rule blocks every dimension of its inputs and outputs: what is not understood
is never treated as safe. Every rule must, for each input dimension, either pass its atoms on,
unite them, or block them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import fx

from prunekit.prune.structured.atoms import Atoms, Label

HEAD = "head"
# Tag of the atoms a LayerNorm/RMSNorm (or a per-channel statistic, as hand-written norms
# compute one) normalizes; with ``hidden`` analysis their units form the "hidden" groups.
NORM = "norm"
HIDDEN = "hidden"
# Reductions that hand-written norms use for their per-position statistic over channels.
STATISTICS = ("mean", "var", "var_mean", "std", "std_mean", "linalg_vector_norm", "norm")


class Context:
    """hidden: normalized dimensions are tagged :data:`NORM` instead of blocked, so that the
    residual stream under the norms becomes one (not output-equivalent) group."""

    def __init__(
        self,
        atoms: Atoms,
        labels: dict[fx.Node, Any],
        values: dict[fx.Node, Any],
        hidden: bool = False,
    ):
        self.atoms = atoms
        self.hidden = hidden
        self.labels = labels
        self.values = values
        self.node: fx.Node
        # Multiply-accumulates of each contraction, as sums of products of dimensions' atoms,
        # so the MACs of any plan can be counted without rebuilding the model.
        self.macs: list[list[list[np.ndarray]]] = []

    def count_macs(self, *terms: list[np.ndarray]) -> None:
        self.macs.append(list(terms))

    def lab(self, arg: Any) -> Label | None:
        return self.labels.get(arg) if isinstance(arg, fx.Node) else None

    def val(self, arg: Any) -> Any:
        return self.values.get(arg) if isinstance(arg, fx.Node) else arg

    def arg(self, i: int, name: str, default: Any = None) -> Any:
        if len(self.node.args) > i:
            return self.node.args[i]
        return self.node.kwargs.get(name, default)

    @property
    def out(self) -> Any:
        return self.values[self.node]

    def fresh_like(self, value: Any, reason: str) -> Any:
        """Blocked labels for every tensor in an op's output."""
        if isinstance(value, torch.Tensor):
            return self.atoms.fresh(tuple(value.shape), reason)
        if isinstance(value, list | tuple):
            return [self.fresh_like(v, reason) for v in value]
        return None

    def block_label(self, lab: Label | None, reason: str) -> None:
        if lab is not None:
            for d in lab.dims:
                self.atoms.block(d, reason)

    @property
    def opname(self) -> str:
        return op_name(self.node)


def op_name(node: fx.Node) -> str:
    target = node.target
    packet = getattr(target, "overloadpacket", None)
    name = getattr(packet, "__name__", None) or getattr(target, "__name__", str(target))
    # In-place variants (add_, mul_) couple exactly like their functional forms.
    if name.endswith("_") and not name.endswith("__"):
        name = name[:-1]
    return name


Rule = Callable[[Context], Any]
RULES: dict[str, Rule] = {}


def rule(*names: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for n in names:
            RULES[n] = fn
        return fn

    return deco


def tensor_inputs(ctx: Context) -> list[Label]:
    labs = []
    for a in [*ctx.node.args, *ctx.node.kwargs.values()]:
        items = a if isinstance(a, list | tuple) else [a]
        for item in items:
            lab = ctx.lab(item)
            if isinstance(lab, Label):
                labs.append(lab)
    return labs


def unknown(ctx: Context) -> Any:
    reason = f"passes through {ctx.opname}, an op prunekit has no coupling rule for"
    for lab in tensor_inputs(ctx):
        ctx.block_label(lab, reason)
    return ctx.fresh_like(ctx.out, reason)


# ---------------------------------------------------------------- elementwise
def broadcast(ctx: Context, labs: list[Label], shape: tuple[int, ...]) -> Label:
    """Right-aligned broadcasting: equal-size dimensions are united, broadcast ones blocked."""
    nd = len(shape)
    dims: list[np.ndarray] = []
    linked: list[bool] = []
    for k in range(nd):
        size = shape[k]
        members = []
        for lab in labs:
            j = k - (nd - len(lab.dims))
            if j < 0:
                continue
            if len(lab.dims[j]) == size:
                members.append((lab.dims[j], lab.linked[j]))
            else:
                ctx.atoms.block(lab.dims[j], "broadcast")
        if not members:
            lab = ctx.atoms.fresh((size,), "broadcast")
            dims.append(lab.dims[0])
            linked.append(False)
            continue
        first = members[0][0]
        for other, _ in members[1:]:
            ctx.atoms.unite(first, other)
        dims.append(first)
        linked.append(any(lk for _, lk in members))
    return Label(dims, linked)


ELEMENTWISE = [
    "add",
    "sub",
    "rsub",
    "mul",
    "div",
    "true_divide",
    "floor_divide",
    "remainder",
    "fmod",
    "where",
    "maximum",
    "minimum",
    "pow",
    "masked_fill",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "logical_and",
    "logical_or",
    "logical_xor",
    "logical_not",
    "bitwise_and",
    "bitwise_or",
    "bitwise_xor",
    "bitwise_not",
    "clamp",
    "clamp_min",
    "clamp_max",
    "hardtanh",
    "relu",
    "relu6",
    "gelu",
    "silu",
    "sigmoid",
    "tanh",
    "neg",
    "exp",
    "expm1",
    "log",
    "log1p",
    "log2",
    "rsqrt",
    "sqrt",
    "abs",
    "erf",
    "sin",
    "cos",
    "leaky_relu",
    "elu",
    "celu",
    "selu",
    "hardswish",
    "hardsigmoid",
    "softplus",
    "mish",
    "threshold",
    "clone",
    "detach",
    "alias",
    "_to_copy",
    "to",
    "contiguous",
    "lift_fresh_copy",
    "lift_fresh",
    "dropout",
    "reciprocal",
    "square",
    "sign",
    "floor",
    "ceil",
    "round",
    "trunc",
    "zeros_like",
    "ones_like",
    "full_like",
    "empty_like",
    "copy",
    "type_as",
    "addcmul",
    "addcdiv",
    "lerp",
    "nan_to_num",
    "isnan",
    "isinf",
    "isfinite",
    "fill",
    "masked_scatter",
    "prelu",
    "_prelu_kernel",
    "xlogy",
    "sgn",
]


@rule(*ELEMENTWISE)
def elementwise(ctx: Context) -> Any:
    labs = tensor_inputs(ctx)
    out = ctx.out
    if not isinstance(out, torch.Tensor):
        return unknown(ctx)
    return broadcast(ctx, labs, tuple(out.shape))


@rule("native_dropout")
def native_dropout(ctx: Context) -> Any:
    lab = ctx.lab(ctx.node.args[0])
    return [lab, lab]


# ---------------------------------------------------------------- shapes
@rule("view", "_unsafe_view", "reshape", "view_copy", "_reshape_alias")
def view(ctx: Context) -> Any:
    lab = ctx.lab(ctx.node.args[0])
    return reshape_label(ctx.atoms, lab, tuple(ctx.out.shape))


def reshape_label(atoms: Atoms, lab: Label, out_shape: tuple[int, ...]) -> Label:
    """Split and merged dimensions keep their units on one *carrier* dimension.

    Splitting ``n = a·b`` into ``(a, b)``: each of the ``a`` blocks becomes one unit (heads from
    a projection's rows). Merging ``(a, b)`` into ``a·b``: the dimension derived from parameters
    carries the units and each of its indices covers a block of ``b`` (a conv's channels
    flattened with the spatial positions into a linear layer's inputs). Dimensions that cannot
    be carried are blocked: they stay whole.
    """
    in_shape = lab.shape
    out_dims: list[np.ndarray | None] = [None] * len(out_shape)
    out_linked = [False] * len(out_shape)
    i = j = 0
    ni, no = len(in_shape), len(out_shape)
    while i < ni or j < no:
        if i < ni and in_shape[i] == 1:
            atoms.block(lab.dims[i], "size-1 dimension reshaped")
            i += 1
            continue
        if _one_head(in_shape, out_shape, i, j):
            # [B, T, C] -> [B, T, 1, C]: attention split into a single head of C. A head's
            # inner dimension stays whole (modules keep the head size as an attribute:
            # view(B, T, heads, head_size)), and there is no other head to remove.
            atoms.block(lab.dims[i], "the size of a single attention head")
            out_dims[j] = atoms.fresh((1,), "size-1 dimension").dims[0]
            out_dims[j + 1], out_linked[j + 1] = lab.dims[i], lab.linked[i]
            i, j = i + 1, j + 2
            continue
        if j < no and out_shape[j] == 1:
            out_dims[j] = atoms.fresh((1,), "size-1 dimension").dims[0]
            j += 1
            continue
        if i >= ni or j >= no:
            raise AssertionError(f"reshape {in_shape} -> {out_shape} did not pair up")
        gi, go = [i], [j]
        pi, po = in_shape[i], out_shape[j]
        i, j = i + 1, j + 1
        while pi != po:
            if pi < po:
                gi.append(i)
                pi *= in_shape[i]
                i += 1
            else:
                go.append(j)
                po *= out_shape[j]
                j += 1
        # Trailing size-1 dims inside a group are handled by the loop above on the next turn.
        if len(gi) == 1 and len(go) == 1:
            out_dims[go[0]] = lab.dims[gi[0]]
            out_linked[go[0]] = lab.linked[gi[0]]
        elif len(gi) == 1:
            flat = lab.dims[gi[0]]
            outer = out_shape[go[0]]
            blocks = flat.reshape(outer, -1)
            atoms.unite(blocks[:, :1], blocks[:, 1:])
            out_dims[go[0]] = blocks[:, 0].copy()
            out_linked[go[0]] = lab.linked[gi[0]]
            for k in go[1:]:
                out_dims[k] = atoms.fresh((out_shape[k],), "inner part of a split dimension").dims[
                    0
                ]
        elif len(go) == 1:
            linked = [k for k in gi if lab.linked[k]]
            if len(linked) > 1:
                for k in gi:
                    atoms.block(lab.dims[k], "two parameter dimensions merged by a reshape")
                out_dims[go[0]] = atoms.fresh((out_shape[go[0]],), "merged dimensions").dims[0]
                continue
            carrier = linked[0] if linked else gi[0]
            sizes = [in_shape[k] for k in gi]
            grid = np.broadcast_to(
                lab.dims[carrier].reshape([-1 if k == carrier else 1 for k in gi]), sizes
            )
            out_dims[go[0]] = np.ascontiguousarray(grid).ravel()
            out_linked[go[0]] = lab.linked[carrier]
            for k in gi:
                if k != carrier:
                    atoms.block(lab.dims[k], "merged into another dimension by a reshape")
        else:
            for k in gi:
                atoms.block(lab.dims[k], "reshaped across dimensions")
            for k in go:
                out_dims[k] = atoms.fresh((out_shape[k],), "reshaped across dimensions").dims[0]
    assert all(d is not None for d in out_dims)
    return Label(out_dims, out_linked)  # type: ignore[arg-type]


def _one_head(in_shape: tuple[int, ...], out_shape: tuple[int, ...], i: int, j: int) -> bool:
    """The reshape's last input dimension goes to a new size-1 dimension and then itself, as
    the last of at least four: how attention code splits C channels into 1 head of C."""
    return (
        len(out_shape) >= 4
        and i == len(in_shape) - 1
        and j == len(out_shape) - 2
        and out_shape[j] == 1
        and out_shape[j + 1] == in_shape[i] > 1
    )


def _dim(d: int, nd: int) -> int:
    return d + nd if d < 0 else d


@rule("permute")
def permute(ctx: Context) -> Any:
    lab = ctx.lab(ctx.node.args[0])
    order = [_dim(d, len(lab.dims)) for d in ctx.node.args[1]]
    return Label([lab.dims[d] for d in order], [lab.linked[d] for d in order])


@rule("transpose", "swapaxes")
def transpose(ctx: Context) -> Any:
    lab = ctx.lab(ctx.node.args[0])
    nd = len(lab.dims)
    a, b = _dim(ctx.node.args[1], nd), _dim(ctx.node.args[2], nd)
    dims, linked = list(lab.dims), list(lab.linked)
    dims[a], dims[b] = dims[b], dims[a]
    linked[a], linked[b] = linked[b], linked[a]
    return Label(dims, linked)


@rule("t")
def t(ctx: Context) -> Any:
    lab = ctx.lab(ctx.node.args[0])
    return Label(lab.dims[::-1], lab.linked[::-1])


@rule("unsqueeze")
def unsqueeze(ctx: Context) -> Any:
    lab = ctx.lab(ctx.node.args[0])
    d = _dim(ctx.node.args[1], len(lab.dims) + 1)
    new = ctx.atoms.fresh((1,), "unsqueezed").dims[0]
    return Label([*lab.dims[:d], new, *lab.dims[d:]], [*lab.linked[:d], False, *lab.linked[d:]])


@rule("squeeze")
def squeeze(ctx: Context) -> Any:
    lab = ctx.lab(ctx.node.args[0])
    nd = len(lab.dims)
    if len(ctx.node.args) > 1:
        arg = ctx.node.args[1]
        cand = {_dim(d, nd) for d in (arg if isinstance(arg, list | tuple) else [arg])}
    else:
        cand = set(range(nd))
    keep = [k for k in range(nd) if not (k in cand and len(lab.dims[k]) == 1)]
    for k in range(nd):
        if k not in keep:
            ctx.atoms.block(lab.dims[k], "squeezed")
    return Label([lab.dims[k] for k in keep], [lab.linked[k] for k in keep])


def _tiled(ctx: Context, lab: Label, kept: list[bool], reason: str) -> Label:
    """Labels of an expand/repeat output: new leading dims and the input dims not ``kept``
    (tiled to a new size) get blocked atoms; kept dims pass through."""
    shape = tuple(ctx.out.shape)
    lead = len(shape) - len(lab.dims)
    dims: list[np.ndarray] = [ctx.atoms.fresh((s,), reason).dims[0] for s in shape[:lead]]
    linked = [False] * lead
    for k, d in enumerate(lab.dims):
        if kept[k]:
            dims.append(d)
            linked.append(lab.linked[k])
        else:
            ctx.atoms.block(d, reason)
            dims.append(ctx.atoms.fresh((shape[lead + k],), reason).dims[0])
            linked.append(False)
    return Label(dims, linked)


@rule("expand", "expand_copy")
def expand(ctx: Context) -> Any:
    lab = ctx.lab(ctx.node.args[0])
    lead = ctx.out.dim() - len(lab.dims)
    kept = [len(d) == ctx.out.shape[lead + k] for k, d in enumerate(lab.dims)]
    return _tiled(ctx, lab, kept, "expanded")


@rule("slice")
def slice_(ctx: Context) -> Any:
    lab = ctx.lab(ctx.node.args[0])
    nd = len(lab.dims)
    d = _dim(ctx.arg(1, "dim", 0), nd)
    size = len(lab.dims[d])
    start, end, step = ctx.arg(2, "start", None), ctx.arg(3, "end", None), ctx.arg(4, "step", 1)
    idx = np.arange(size)[slice(start, end, step)]
    keep = np.zeros(size, dtype=bool)
    keep[idx] = True
    ctx.atoms.block(lab.dims[d][~keep], "sliced away")
    dims = list(lab.dims)
    dims[d] = lab.dims[d][idx]
    return Label(dims, list(lab.linked))


@rule("select")
def select(ctx: Context) -> Any:
    lab = ctx.lab(ctx.node.args[0])
    d = _dim(ctx.node.args[1], len(lab.dims))
    ctx.atoms.block(lab.dims[d], "indexed by select")
    return Label(lab.dims[:d] + lab.dims[d + 1 :], lab.linked[:d] + lab.linked[d + 1 :])


@rule("cat", "concat", "concatenate")
def cat(ctx: Context) -> Any:
    tensors = ctx.node.args[0]
    out = ctx.out
    nd = out.dim()
    d = _dim(ctx.arg(1, "dim", 0), nd)
    labs = [ctx.lab(t) for t in tensors]
    # Legacy cat skips empty 1-D tensors.
    labs = [lab for lab in labs if not (len(lab.dims) == 1 and len(lab.dims[0]) == 0 and nd > 1)]
    dims: list[np.ndarray] = []
    linked: list[bool] = []
    for k in range(nd):
        if k == d:
            dims.append(np.concatenate([lab.dims[k] for lab in labs]))
            linked.append(any(lab.linked[k] for lab in labs))
        else:
            for lab in labs[1:]:
                ctx.atoms.unite(labs[0].dims[k], lab.dims[k])
            dims.append(labs[0].dims[k])
            linked.append(any(lab.linked[k] for lab in labs))
    return Label(dims, linked)


@rule("stack")
def stack(ctx: Context) -> Any:
    labs = [ctx.lab(t) for t in ctx.node.args[0]]
    nd = ctx.out.dim()
    d = _dim(ctx.arg(1, "dim", 0), nd)
    for lab in labs[1:]:
        for a, b in zip(labs[0].dims, lab.dims, strict=True):
            ctx.atoms.unite(a, b)
    new = ctx.atoms.fresh((len(labs),), "stacked").dims[0]
    base = labs[0]
    return Label([*base.dims[:d], new, *base.dims[d:]], [*base.linked[:d], False, *base.linked[d:]])


@rule("split", "split_with_sizes", "chunk", "tensor_split")
def split(ctx: Context) -> Any:
    """Parts of equal size (``chunk(n)``, ``split(k)``) are cut at the new boundaries after
    pruning, so part i's position j is united with part 0's: they are removed together and the
    parts stay equal (the gate and up halves of a fused projection). Unequal parts cannot follow
    a pruned width, so their dimension is blocked; ``split_with_sizes`` is exempt where the parts
    are attention heads, whose sizes come from the head counts the rebuild scales (Falcon's
    fused query/key/value)."""
    lab = ctx.lab(ctx.node.args[0])
    nd = len(lab.dims)
    d = _dim(ctx.arg(2, "dim", 0), nd)
    sizes = [o.shape[d] for o in ctx.out]
    parts = np.split(lab.dims[d], np.cumsum(sizes)[:-1])
    if len(set(sizes)) == 1:
        for part in parts[1:]:
            ctx.atoms.unite(parts[0], part)
    else:
        reason = f"split into parts of unequal sizes {sizes}, which cannot follow a pruned width"
        if ctx.opname == "split_with_sizes":
            ctx.atoms.block_unless(lab.dims[d], reason, HEAD)
        else:
            ctx.atoms.block(lab.dims[d], reason)
    result = []
    for part in parts:
        dims = list(lab.dims)
        dims[d] = part
        result.append(Label(dims, list(lab.linked)))
    return result


@rule("unbind")
def unbind(ctx: Context) -> Any:
    lab = ctx.lab(ctx.node.args[0])
    d = _dim(ctx.arg(1, "dim", 0), len(lab.dims))
    ctx.atoms.block(lab.dims[d], "unbound")
    rest = Label(lab.dims[:d] + lab.dims[d + 1 :], lab.linked[:d] + lab.linked[d + 1 :])
    return [rest for _ in ctx.out]


@rule("as_strided")
def as_strided(ctx: Context) -> Any:
    """Only the no-op case: the same shape with contiguous strides (PyTorch's adaptive pooling
    re-strides its output this way); anything else reinterprets memory and blocks."""
    lab = ctx.lab(ctx.node.args[0])
    size, stride = list(ctx.node.args[1]), list(ctx.node.args[2])
    offset = ctx.arg(3, "storage_offset", None)
    contiguous, step = [], 1
    for n in reversed(size):
        contiguous.insert(0, step)
        step *= n
    same = lab is not None and tuple(size) == lab.shape and not offset
    if not same or any(n > 1 and a != b for n, a, b in zip(size, stride, contiguous, strict=True)):
        return unknown(ctx)
    return Label(list(lab.dims), list(lab.linked))


@rule("roll")
def roll(ctx: Context) -> Any:
    lab = ctx.lab(ctx.node.args[0])
    shifts, dims_arg = ctx.node.args[1], ctx.arg(2, "dims", [])
    shifts = list(shifts) if isinstance(shifts, list | tuple) else [shifts]
    dims_arg = list(dims_arg) if isinstance(dims_arg, list | tuple) else [dims_arg]
    if not dims_arg:
        return unknown(ctx)
    dims = list(lab.dims)
    for s, d in zip(shifts, dims_arg, strict=True):
        d = _dim(d, len(dims))
        dims[d] = np.roll(dims[d], s)
    return Label(dims, list(lab.linked))


@rule("flip")
def flip(ctx: Context) -> Any:
    lab = ctx.lab(ctx.node.args[0])
    dims = list(lab.dims)
    for d in ctx.node.args[1]:
        d = _dim(d, len(dims))
        dims[d] = dims[d][::-1].copy()
    return Label(dims, list(lab.linked))


@rule("constant_pad_nd", "pad")
def pad(ctx: Context) -> Any:
    lab = ctx.lab(ctx.node.args[0])
    pads = list(ctx.node.args[1])
    dims, linked = list(lab.dims), list(lab.linked)
    for k in range(len(pads) // 2):
        d = len(dims) - 1 - k
        if pads[2 * k] or pads[2 * k + 1]:
            ctx.atoms.block(dims[d], "padded")
            dims[d] = ctx.atoms.fresh((ctx.out.shape[d],), "padded").dims[0]
            linked[d] = False
    return Label(dims, linked)


@rule("repeat")
def repeat(ctx: Context) -> Any:
    lab = ctx.lab(ctx.node.args[0])
    reps = list(ctx.node.args[1])
    lead = len(reps) - len(lab.dims)
    return _tiled(ctx, lab, [r == 1 for r in reps[lead:]], "repeated")


# ---------------------------------------------------------------- indexing
@rule("embedding")
def embedding(ctx: Context) -> Any:
    weight, indices = ctx.lab(ctx.node.args[0]), ctx.lab(ctx.node.args[1])
    ctx.atoms.block(weight.dims[0], "rows looked up by index (vocabulary)")
    return Label([*indices.dims, weight.dims[1]], [*indices.linked, weight.linked[1]])


@rule("index")
def index(ctx: Context) -> Any:
    lab = ctx.lab(ctx.node.args[0])
    indices = list(ctx.node.args[1])
    out = ctx.out
    indexed = [k for k, ix in enumerate(indices) if ix is not None]
    for k in indexed:
        ctx.atoms.block(lab.dims[k], "indexed by a tensor")
    for ix in indices:
        ctx.block_label(ctx.lab(ix), "used as an index")
    rest = [k for k in range(len(lab.dims)) if k not in indexed]
    n_index = out.dim() - len(rest)
    adjacent = indexed == list(range(indexed[0], indexed[-1] + 1)) if indexed else True
    at = indexed[0] if adjacent and indexed else 0
    before = [k for k in rest if k < at] if adjacent else []
    after = [k for k in rest if k not in before]
    new = ctx.atoms.fresh(tuple(out.shape[len(before) : len(before) + n_index]), "index result")
    dims = [lab.dims[k] for k in before] + new.dims + [lab.dims[k] for k in after]
    linked = [lab.linked[k] for k in before] + new.linked + [lab.linked[k] for k in after]
    return Label(dims, linked)


# ---------------------------------------------------------------- contractions
@rule("mm")
def mm(ctx: Context) -> Any:
    a, b = ctx.lab(ctx.node.args[0]), ctx.lab(ctx.node.args[1])
    ctx.atoms.unite(a.dims[1], b.dims[0])
    ctx.count_macs([a.dims[0], a.dims[1], b.dims[1]])
    return Label([a.dims[0], b.dims[1]], [a.linked[0], b.linked[1]])


@rule("addmm")
def addmm(ctx: Context) -> Any:
    bias, a, b = (ctx.lab(x) for x in ctx.node.args[:3])
    ctx.atoms.unite(a.dims[1], b.dims[0])
    ctx.count_macs([a.dims[0], a.dims[1], b.dims[1]])
    prod = Label([a.dims[0], b.dims[1]], [a.linked[0], b.linked[1]])
    return broadcast(ctx, [prod, bias], tuple(ctx.out.shape))


@rule("bmm")
def bmm(ctx: Context) -> Any:
    a, b = ctx.lab(ctx.node.args[0]), ctx.lab(ctx.node.args[1])
    ctx.atoms.unite(a.dims[0], b.dims[0])
    ctx.atoms.unite(a.dims[2], b.dims[1])
    ctx.count_macs([a.dims[0], a.dims[1], a.dims[2], b.dims[2]])
    return Label(
        [a.dims[0], a.dims[1], b.dims[2]], [a.linked[0] or b.linked[0], a.linked[1], b.linked[2]]
    )


@rule("baddbmm")
def baddbmm(ctx: Context) -> Any:
    bias, a, b = (ctx.lab(x) for x in ctx.node.args[:3])
    ctx.atoms.unite(a.dims[0], b.dims[0])
    ctx.atoms.unite(a.dims[2], b.dims[1])
    ctx.count_macs([a.dims[0], a.dims[1], a.dims[2], b.dims[2]])
    prod = Label([a.dims[0], a.dims[1], b.dims[2]], [a.linked[0], a.linked[1], b.linked[2]])
    return broadcast(ctx, [prod, bias], tuple(ctx.out.shape))


@rule("convolution", "_convolution")
def convolution(ctx: Context) -> Any:
    x, w = ctx.lab(ctx.node.args[0]), ctx.lab(ctx.node.args[1])
    b = ctx.lab(ctx.node.args[2])
    transposed, groups = ctx.node.args[6], ctx.node.args[8]
    out = ctx.out
    atoms = ctx.atoms
    spatial = "a convolution's spatial dimension"
    for d in [*x.dims[2:], *w.dims[2:]]:
        atoms.block(d, spatial)
    if transposed:
        if groups != 1:
            return unknown(ctx)
        atoms.unite(x.dims[1], w.dims[0])
        out_ch, out_linked = w.dims[1], w.linked[1]
    elif groups == 1:
        atoms.unite(x.dims[1], w.dims[1])
        out_ch, out_linked = w.dims[0], w.linked[0]
    else:
        # Grouped/depthwise: the unit is a whole group (its input channels, its filters), so
        # groups stay equal in width and the group count shrinks.
        atoms.block(w.dims[1], "a grouped convolution's per-group input width")
        xin = x.dims[1].reshape(groups, -1)
        wout = w.dims[0].reshape(groups, -1)
        atoms.unite(xin, xin[:, :1])
        atoms.unite(wout, xin[:, :1])
        out_ch, out_linked = w.dims[0], True
    if b is not None:
        atoms.unite(b.dims[0], out_ch)
    sp = atoms.fresh(tuple(out.shape[2:]), spatial)
    in_ch = w.dims[0] if transposed else w.dims[1]
    ctx.count_macs([x.dims[0], out_ch, *sp.dims, in_ch, *w.dims[2:]])
    return Label([x.dims[0], out_ch, *sp.dims], [x.linked[0], out_linked, *sp.linked])


SDPA = [
    "scaled_dot_product_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_attention_math",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
]


@rule(*SDPA)
def sdpa(ctx: Context) -> Any:
    """q [..., Hq, L, E], k [..., Hkv, S, E], v [..., Hkv, S, Ev] → [..., Hq, L, Ev].

    With grouped-query attention (Hq = r·Hkv) query head h reads key/value head h // r, so a
    key/value head and its query group form one unit."""
    q, k, v = (ctx.lab(x) for x in ctx.node.args[:3])
    atoms = ctx.atoms
    atoms.unite(q.dims[-1], k.dims[-1])
    atoms.unite(k.dims[-2], v.dims[-2])
    nd = len(q.dims)
    for i in range(nd - 2):
        qd, kd, vd = q.dims[i], k.dims[i], v.dims[i]
        atoms.unite(kd, vd)
        if len(qd) == len(kd):
            atoms.unite(qd, kd)
        elif len(kd) == 1:
            atoms.block(kd, "broadcast in attention")
        else:
            rep = len(qd) // len(kd)
            atoms.unite(qd.reshape(len(kd), rep), kd.reshape(-1, 1))
    ctx.count_macs([*q.dims[:-1], k.dims[-2], q.dims[-1]], [*q.dims[:-1], k.dims[-2], v.dims[-1]])
    if nd >= 3:
        atoms.tag(q.dims[-3], HEAD)
        atoms.tag(k.dims[-3], HEAD)
    others = [a for a in [*ctx.node.args[3:], *ctx.node.kwargs.values()] if ctx.lab(a)]
    score = Label(
        [*q.dims[:-1], k.dims[-2]], [*q.linked[:-1], k.linked[-2]]
    )  # the [..., Hq, L, S] scores a mask is added to
    for m in others:
        broadcast(ctx, [score, ctx.lab(m)], score.shape)
    out = Label([*q.dims[:-1], v.dims[-1]], [*q.linked[:-1], v.linked[-1]])
    results = ctx.out
    if isinstance(results, torch.Tensor):
        return out
    labs: list[Any] = [out]
    for extra in results[1:]:
        if isinstance(extra, torch.Tensor) and tuple(extra.shape) == tuple(q.shape[:-1]):
            labs.append(Label(q.dims[:-1], q.linked[:-1]))
        else:
            labs.append(ctx.fresh_like(extra, "attention statistics"))
    return labs


# ---------------------------------------------------------------- normalization
@rule(
    "native_batch_norm",
    "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit",
    "_native_batch_norm_legit_functional",
    "batch_norm",
)
def batch_norm(ctx: Context) -> Any:
    """Per-channel affine in eval mode: channel c couples with weight/bias/running stats [c]."""
    x = ctx.lab(ctx.node.args[0])
    stats = [ctx.lab(a) for a in ctx.node.args[1:5] if isinstance(ctx.lab(a), Label)]
    for s in stats:
        ctx.atoms.unite(s.dims[0], x.dims[1])
    training = any(a is True for a in ctx.node.args[5:6])
    if training:
        for k, d in enumerate(x.dims):
            if k != 1:
                ctx.atoms.block(d, "batch statistics")
    out = Label(list(x.dims), list(x.linked))
    results = ctx.out
    if isinstance(results, torch.Tensor):
        return out
    rest = [
        Label([x.dims[1]], [x.linked[1]])
        if isinstance(r, torch.Tensor) and r.dim() == 1 and len(r) == len(x.dims[1])
        else ctx.fresh_like(r, "batch statistics")
        for r in results[1:]
    ]
    return [out, *rest]


@rule("native_layer_norm", "layer_norm", "rms_norm", "_fused_rms_norm")
def layer_norm(ctx: Context) -> Any:
    """The normalized dimensions' statistics mix every channel, so they cannot shrink without
    changing the outputs: blocked, or with ``hidden`` analysis tagged as a norm's channels."""
    x = ctx.lab(ctx.node.args[0])
    shape = ctx.node.args[1]
    k = len(shape) if isinstance(shape, list | tuple) else 1
    for p in ctx.node.args[2:4]:
        lab = ctx.lab(p)
        if isinstance(lab, Label):
            for a, b in zip(lab.dims, x.dims[-k:], strict=True):
                ctx.atoms.unite(a, b)
    for d in x.dims[-k:]:
        if ctx.hidden:
            ctx.atoms.tag(d, NORM)
        else:
            ctx.atoms.block(d, "normalized by a LayerNorm/RMSNorm (statistics over channels)")
    out = Label(list(x.dims), list(x.linked))
    results = ctx.out
    if isinstance(results, torch.Tensor):
        return out
    return [out] + [ctx.fresh_like(r, "normalization statistics") for r in results[1:]]


@rule("native_group_norm")
def group_norm(ctx: Context) -> Any:
    """Statistics per group of channels: a whole group is one unit (the group count shrinks)."""
    x, w, b = (ctx.lab(a) for a in ctx.node.args[:3])
    groups = ctx.node.args[6]
    ch = x.dims[1].reshape(groups, -1)
    ctx.atoms.unite(ch, ch[:, :1])
    for p in (w, b):
        if isinstance(p, Label):
            ctx.atoms.unite(p.dims[0], x.dims[1])
    for d in x.dims[2:]:
        ctx.atoms.block(d, "group statistics")
    ctx.atoms.block(x.dims[0], "group statistics")
    out = Label(list(x.dims), list(x.linked))
    return [out] + [ctx.fresh_like(r, "normalization statistics") for r in ctx.out[1:]]


# ---------------------------------------------------------------- reductions
REDUCTIONS = [
    "sum",
    "mean",
    "amax",
    "amin",
    "max",
    "min",
    "argmax",
    "argmin",
    "var",
    "std",
    "var_mean",
    "std_mean",
    "linalg_vector_norm",
    "norm",
    "logsumexp",
    "prod",
    "any",
    "all",
    "count_nonzero",
]


@rule(*REDUCTIONS)
def reduction(ctx: Context) -> Any:
    lab = ctx.lab(ctx.node.args[0])
    nd = len(lab.dims)
    dim = ctx.arg(1, "dim", None)
    if ctx.opname in ("linalg_vector_norm", "norm"):
        dim = ctx.arg(2, "dim", None)
    if dim is None or (isinstance(dim, list | tuple) and len(dim) == 0):
        reduced = set(range(nd))
    else:
        dims = dim if isinstance(dim, list | tuple) else [dim]
        reduced = {_dim(d, nd) for d in dims}
    results = ctx.out
    first = results[0] if isinstance(results, list | tuple) else results
    if not isinstance(first, torch.Tensor):
        return unknown(ctx)
    keepdim = first.dim() == nd
    # A hand-written norm (LLaMA's RMSNorm, ConvNeXt's channels-first LayerNorm) takes its
    # statistic over one dimension and broadcasts it back (keepdim).
    statistic = ctx.hidden and keepdim and len(reduced) == 1 and ctx.opname in STATISTICS
    for k in reduced:
        if statistic:
            ctx.atoms.tag(lab.dims[k], NORM)
        else:
            ctx.atoms.block(lab.dims[k], f"reduced by {ctx.opname}")
    dims, linked = [], []
    for k in range(nd):
        if k in reduced:
            if keepdim:
                dims.append(ctx.atoms.fresh((1,), "reduced").dims[0])
                linked.append(False)
        else:
            dims.append(lab.dims[k])
            linked.append(lab.linked[k])
    out = Label(dims, linked)
    return [out for _ in results] if isinstance(results, list | tuple) else out


@rule(
    "_softmax",
    "_safe_softmax",
    "softmax",
    "_log_softmax",
    "log_softmax",
    "cumsum",
    "cumprod",
    "logcumsumexp",
)
def along_dim(ctx: Context) -> Any:
    lab = ctx.lab(ctx.node.args[0])
    d = _dim(ctx.node.args[1], len(lab.dims))
    ctx.atoms.block(lab.dims[d], f"mixed along the dimension by {ctx.opname}")
    return Label(list(lab.dims), list(lab.linked))


POOLS = {
    "max_pool1d": 1, "max_pool2d": 2, "max_pool3d": 3, "max_pool2d_with_indices": 2,
    "max_pool1d_with_indices": 1, "max_pool3d_with_indices": 3,
    "avg_pool1d": 1, "avg_pool2d": 2, "avg_pool3d": 3,
    "adaptive_avg_pool1d": 1, "adaptive_avg_pool2d": 2, "adaptive_avg_pool3d": 3,
    "_adaptive_avg_pool2d": 2, "_adaptive_avg_pool3d": 3,
    "adaptive_max_pool1d": 1, "adaptive_max_pool2d": 2, "adaptive_max_pool3d": 3,
    "upsample_nearest1d": 1, "upsample_nearest2d": 2, "upsample_nearest3d": 3,
    "upsample_bilinear2d": 2, "upsample_bicubic2d": 2, "_upsample_bilinear2d_aa": 2,
    "upsample_linear1d": 1, "upsample_trilinear3d": 3,
    "_upsample_nearest_exact1d": 1, "_upsample_nearest_exact2d": 2,
    "_upsample_nearest_exact3d": 3, "pixel_shuffle": -1, "pixel_unshuffle": -1,
}  # fmt: skip


def pool(ctx: Context) -> Any:
    """Channels pass through; spatial positions are resampled."""
    k = POOLS[ctx.opname]
    lab = ctx.lab(ctx.node.args[0])
    if k < 0:
        return unknown(ctx)
    reason = "a pooling/resampling window"
    for d in lab.dims[-k:]:
        ctx.atoms.block(d, reason)
    results = ctx.out
    first = results[0] if isinstance(results, list | tuple) else results
    sp = ctx.atoms.fresh(tuple(first.shape[-k:]), reason)
    out = Label([*lab.dims[:-k], *sp.dims], [*lab.linked[:-k], *sp.linked])
    return [out, out] if isinstance(results, list | tuple) else out


for _name in POOLS:
    RULES[_name] = pool


# ---------------------------------------------------------------- no tensor dependencies
CREATION = [
    "arange",
    "zeros",
    "ones",
    "full",
    "empty",
    "scalar_tensor",
    "rand",
    "randn",
    "randint",
    "tensor",
    "new_zeros",
    "new_ones",
    "new_full",
    "new_empty",
    "new_empty_strided",
    "empty_strided",
    "zeros_like_",
    "linspace",
    "eye",
    "tril",
    "triu",
    "_local_scalar_dense",
    "item",
    "sym_size",
    "sym_numel",
    "sym_stride",
]


@rule(*CREATION)
def creation(ctx: Context) -> Any:
    # new_* take a tensor only for its dtype/device; tril/triu keep a mask's structure. In all
    # cases the values are tied to positions, not to channels that could be removed.
    reason = f"created or read by {ctx.opname}"
    for lab in tensor_inputs(ctx):
        ctx.block_label(lab, reason)
    return ctx.fresh_like(ctx.out, reason)
