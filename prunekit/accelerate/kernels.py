"""The layers ``accelerate_`` can swap in for a Linear (or transformers' Conv1D), and how each
candidate is built from the original layer.

- ``csr``: :class:`CSRLinear`, the weight's non-zeros in compressed sparse rows, run by one of
  two kernels measured against each other: ``csr/mkl``, torch's sparse CSR matrix product (MKL
  on x86), or ``csr/bag``, ``embedding_bag`` over the transposed input (fbgemm's SpMDM: each
  output row sums the input columns its non-zeros name, weighted by them);
- ``int8``: :class:`prunekit.quantize.layers.Int8Linear` (fbgemm's dynamic int8 linear), the same
  layer and swap kind ``quantize_`` uses, so an artifact holding it loads either way.

State is plain tensors (indices and values, never a dense copy); the swap kind ``"csr"`` is
registered with :mod:`prunekit.surgery.swaps`, so ``pk.load`` rebuilds the layer before loading
its tensors.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.layout import canonical
from prunekit.quantize.layers import INT8_SWAP, Int8Linear, linear_shape
from prunekit.surgery.swaps import int_arg, register_swap, state_versions

CSR_SWAP = "csr"
CSR_IMPLS = ("mkl", "bag")
BAG_TABLE_FLOATS, BAG_MIN_ROWS, BAG_MAX_ROWS = 1 << 17, 64, 256
INDEX_DTYPE = torch.int32  # MKL's sparse BLAS takes 32-bit indices; half the bytes of int64


class CSRLinear(nn.Module):
    """``y = x Wᵀ + b`` with W ``[out, in]`` stored as compressed sparse rows.

    State: ``crow_indices`` int32 ``[out + 1]`` (row i's non-zeros are
    ``crow_indices[i]:crow_indices[i+1]``), ``col_indices`` int32 ``[nnz]``, ``values``
    ``[nnz]`` (the weight's dtype), ``bias`` ``[out]`` or None.

    impl: ``"mkl"``: ``torch.addmm`` with a sparse CSR tensor built from the state on first use
    (and again whenever it changes); ``"bag"``: ``F.embedding_bag`` with the input's columns as
    the table, ``col_indices`` as the bags' contents, ``crow_indices`` as their offsets and
    ``values`` as per-sample weights, which wins at tens of rows and more.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        nnz: int,
        bias: bool = True,
        dtype: Any = None,
        impl: str = "mkl",
    ) -> None:
        super().__init__()
        assert impl in CSR_IMPLS, impl
        self.in_features, self.out_features, self.impl = in_features, out_features, impl
        self.register_buffer("crow_indices", torch.zeros(out_features + 1, dtype=INDEX_DTYPE))
        self.register_buffer("col_indices", torch.zeros(nnz, dtype=INDEX_DTYPE))
        self.register_buffer("values", torch.zeros(nnz, dtype=dtype or torch.float32))
        zeros = nn.Parameter(torch.zeros(out_features, dtype=dtype), requires_grad=False)
        self.register_parameter("bias", zeros if bias else None)
        self._sparse: tuple[tuple[Any, ...], torch.Tensor] | None = None

    @classmethod
    def from_layer(cls, layer: nn.Module, impl: str = "mkl") -> CSRLinear:
        """The CSR form of a Linear/Conv1D's weight (its exact non-zeros) and its bias."""
        w = canonical(layer, layer.weight.detach())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            csr = w.to_sparse_csr()
        bias = getattr(layer, "bias", None)
        new = cls(w.shape[1], w.shape[0], csr.values().numel(), bias is not None, w.dtype, impl)
        new.crow_indices.copy_(csr.crow_indices())
        new.col_indices.copy_(csr.col_indices())
        new.values.copy_(csr.values())
        if new.bias is not None:
            new.bias.data.copy_(bias.detach())
        return new.to(w.device)

    @property
    def nnz(self) -> int:
        return self.values.numel()

    def sparse(self) -> torch.Tensor:
        """The weight as a torch sparse CSR tensor ``[out, in]`` (cached while unchanged)."""
        versions = state_versions(self.crow_indices, self.col_indices, self.values)
        if self._sparse is None or self._sparse[0] != versions:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
                w = torch.sparse_csr_tensor(
                    self.crow_indices, self.col_indices, self.values,
                    (self.out_features, self.in_features), check_invariants=False,
                )  # fmt: skip
            self._sparse = (versions, w)
        return self._sparse[1]

    @property
    def weight(self) -> torch.Tensor:
        """The dense weight ``[out, in]`` (built on each access; for code that inspects it)."""
        return self.sparse().to_dense()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if self.impl == "bag":
            y = self._bag(rows)
            if self.bias is not None:
                y = y.add_(self.bias.unsqueeze(1))
        elif self.bias is None:
            y = torch.sparse.mm(self.sparse(), rows.t())
        else:
            y = torch.addmm(self.bias.unsqueeze(1), self.sparse(), rows.t())
        # [out, N] → [N, out] as a view: the copy a contiguous result costs is not worth it.
        return y.t().reshape(*x.shape[:-1], self.out_features)

    def _bag(self, rows: torch.Tensor) -> torch.Tensor:
        """``W @ rows.T`` ``[out, N]`` by ``embedding_bag``, over blocks of rows whose transposed
        copy (the table the bags read) stays within ≈ 512 KB: on MiniLM's layers at 2,048 rows,
        blocks of 64–256 rows ran 1.5–2.8× faster than one table of them all."""
        step = min(BAG_MAX_ROWS, max(BAG_MIN_ROWS, BAG_TABLE_FLOATS // self.in_features))
        if rows.shape[0] <= step:
            return self._bag_block(rows)
        y = rows.new_empty(self.out_features, rows.shape[0])
        for start in range(0, rows.shape[0], step):
            y[:, start : start + step] = self._bag_block(rows[start : start + step])
        return y

    def _bag_block(self, rows: torch.Tensor) -> torch.Tensor:
        return F.embedding_bag(
            self.col_indices, rows.t().contiguous(), self.crow_indices, mode="sum",
            per_sample_weights=self.values, include_last_offset=True,
        )  # fmt: skip

    def state_problem(self, state: dict[str, torch.Tensor]) -> str | None:
        """What in ``state`` (this layer's tensors about to be loaded) would make the sparse
        kernel read out of bounds: ``prunekit.load`` refuses such an artifact."""
        crow, col = state.get("crow_indices"), state.get("col_indices")
        if crow is None or col is None:
            return None
        if crow.numel() != self.out_features + 1 or int(crow[0]) != 0:
            return "crow_indices must start at 0 and have out_features + 1 entries"
        if int(crow[-1]) != col.numel() or bool((crow.diff() < 0).any()):
            return f"crow_indices must rise from 0 to nnz={col.numel()}"
        if col.numel() and (int(col.min()) < 0 or int(col.max()) >= self.in_features):
            return f"col_indices must lie in 0..{self.in_features - 1}"
        return None

    def __getstate__(self) -> dict[str, Any]:
        # Copies rebuild the sparse tensor from the state tensors.
        state = self.__dict__.copy()
        state["_sparse"] = None
        return state

    def extra_repr(self) -> str:
        density = self.nnz / max(1, self.in_features * self.out_features)
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, nnz={self.nnz} ({density:.1%} dense), "
            f"CSR ({self.impl})"
        )


def _build_csr(layer: nn.Module, args: dict[str, Any]) -> nn.Module:
    out, k = linear_shape(layer)
    nnz = int_arg(args, "nnz", 0, out * k)
    impl = args.get("impl", "mkl")
    if impl not in CSR_IMPLS:
        raise PrunekitError(f"the swap record has impl={impl!r}; expected one of {CSR_IMPLS}")
    has_bias = getattr(layer, "bias", None) is not None
    return CSRLinear(k, out, nnz, has_bias, layer.weight.dtype, impl)


def csr_args(module: CSRLinear) -> dict[str, Any]:
    """The JSON args that rebuild ``module`` (for the swap record)."""
    return {"nnz": module.nnz, "impl": module.impl}


# kernel name → (swap kind, build from the layer, swap-record args of the built module)
Candidate = tuple[str, Callable[[nn.Module], nn.Module], Callable[[Any], dict[str, Any]]]
CANDIDATES: dict[str, Candidate] = {
    "csr/mkl": (CSR_SWAP, lambda layer: CSRLinear.from_layer(layer, "mkl"), csr_args),
    "csr/bag": (CSR_SWAP, lambda layer: CSRLinear.from_layer(layer, "bag"), csr_args),
    "int8": (INT8_SWAP, Int8Linear.from_layer, lambda m: {}),
}


def expand(kernels: list[str]) -> list[str]:
    """Config kernel names → the kernels measured (``"csr"`` is ``csr/mkl`` and ``csr/bag``)."""
    out: list[str] = []
    for name in kernels:
        out += [f"csr/{impl}" for impl in CSR_IMPLS] if name == "csr" else [name]
    return out


register_swap(CSR_SWAP, _build_csr)
