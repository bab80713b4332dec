"""Passes over calibration data that collect statistics, leaving the model as it was.

Gradient-based scores need ∂L/∂w on real batches. This pass runs in eval mode (no BatchNorm
statistics updated, no dropout), saves and restores every ``.grad`` and ``requires_grad`` flag,
and never steps an optimizer: afterwards the model is bit-identical to before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from prunekit.data.batches import split_batch, take_samples
from prunekit.errors import PrunekitError
from prunekit.layout import input_rows

LossFn = Callable[[torch.Tensor, Any], torch.Tensor]


def gradient_pass(
    model: nn.Module,
    data: Iterable[Any],
    on_backward: Callable[[], None],
    loss_fn: LossFn | None = None,
    num_samples: int | None = None,
) -> int:
    """Forward/backward over ``data`` (up to ``num_samples`` samples), calling ``on_backward``
    after each batch's backward while the gradients are in ``.grad``. Returns batches seen."""
    # Imported here: the training package imports this module.
    from prunekit.train.losses import forward_with_loss

    params = list(model.parameters())
    saved = [(p.grad, p.requires_grad) for p in params]
    was_training = model.training
    model.eval()
    batches = 0
    try:
        for p in params:
            p.requires_grad_(True)
        for batch in take_samples(data, num_samples):
            for p in params:
                p.grad = None
            inputs, labels = split_batch(batch)
            _, loss = forward_with_loss(model, inputs, labels, loss_fn)
            loss.backward()
            on_backward()
            batches += 1
    finally:
        for p, (grad, req) in zip(params, saved, strict=True):
            p.grad = grad
            p.requires_grad_(req)
        model.train(was_training)
    if batches == 0:
        raise PrunekitError("data: got no batches; pass at least one (inputs, labels) batch")
    return batches


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the wanted inputs were recorded."""


@dataclass(frozen=True)
class Call:
    """One recorded call of a block: its inputs, and which of the batch's token positions are
    real (the attention mask ``[B, T]``; None when the batch has no padding information)."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    tokens: torch.Tensor | None = None


def token_mask(inputs: Any) -> torch.Tensor | None:
    """``attention_mask`` as bool ``[B, T]`` for dict inputs that carry one, else None."""
    if isinstance(inputs, dict):
        mask = inputs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            return mask.bool()
    return None


def find_blocks(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The repeated blocks of a transformer, in order: the longest ``nn.ModuleList`` whose
    children share one class and hold prunable layers (``encoder.layer``, ``transformer.h``,
    ``model.layers``…). None when the model has no such list (then it is one block)."""
    from prunekit.targets import prunable_types

    kinds = prunable_types()
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 2:
            continue
        if len({type(m) for m in module}) != 1:
            continue
        if not any(isinstance(s, kinds) for s in module[0].modules()):
            continue
        if best is None or len(module) > len(best[1]):
            best = (name, module)
    if best is None:
        return None
    prefix = f"{best[0]}." if best[0] else ""
    return [(f"{prefix}{i}", block) for i, block in enumerate(best[1])]


def calibration_forward(model: nn.Module, inputs: Any) -> Any:
    """One forward pass on a batch's inputs, as calibration runs it: keyword inputs for dict
    batches, and no KV cache for models that keep one (a cache would grow across passes)."""
    if isinstance(inputs, dict):
        config = getattr(model, "config", None)
        extra = {"use_cache": False} if getattr(config, "use_cache", None) is not None else {}
        return model(**inputs, **extra)
    return model(inputs)


def capture_block_inputs(
    model: nn.Module, block: nn.Module, data: Iterable[Any], num_samples: int | None
) -> list[Call]:
    """Run calibration batches only up to ``block`` and record each call's positional and keyword
    inputs (the hidden states, attention masks, position embeddings…). The hook is always removed.
    """
    calls: list[Call] = []
    tokens: list[torch.Tensor | None] = [None]

    def record(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        calls.append(Call(_detach(args), _detach(kwargs), tokens[0]))
        raise _StopForward

    handle = block.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            for batch in take_samples(data, num_samples):
                inputs, _ = split_batch(batch)
                tokens[0] = token_mask(inputs)
                with contextlib.suppress(_StopForward):
                    calibration_forward(model, inputs)
    finally:
        handle.remove()
    if not calls:
        raise PrunekitError("data: got no calibration batches; pass at least one batch")
    return calls


def run_block(block: nn.Module, call: Call) -> torch.Tensor:
    """Run one recorded call through ``block``; returns its hidden-state output."""
    out = block(*call.args, **call.kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


def next_call(call: Call, hidden: torch.Tensor) -> Call:
    """The call the following block receives: the new hidden states, the same other inputs."""
    args, kwargs = call.args, call.kwargs
    if args:
        return Call((hidden, *args[1:]), kwargs, call.tokens)
    key = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
    return Call(args, {**kwargs, key: hidden}, call.tokens)


class input_hooks:
    """Within ``with input_hooks(layers, fn):`` each forward of a layer calls ``fn(name, input)``;
    the hooks are removed on exit, whatever happens inside."""

    def __init__(
        self, layers: dict[str, nn.Module], fn: Callable[[str, torch.Tensor], None]
    ) -> None:
        self.layers, self.fn, self.handles = layers, fn, []

    def __enter__(self) -> input_hooks:
        for name, module in self.layers.items():
            self.handles.append(
                module.register_forward_pre_hook(
                    lambda _m, args, name=name: self.fn(name, args[0].detach())
                )
            )
        return self

    def __exit__(self, *_: object) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


ROWS_AT_ONCE = 256

# One calibration forward: the real-token mask of its batch ([B, T], None without padding) and
# a function running it.
Run = tuple[torch.Tensor | None, Callable[[], object]]


def runs_on_model(model: nn.Module, data: Iterable[Any], num_samples: int | None = None
                  ) -> Iterable[Run]:  # fmt: skip
    """Forward passes of the whole model over ``data`` (up to ``num_samples`` samples)."""
    for batch in take_samples(data, num_samples):
        inputs, _ = split_batch(batch)
        yield token_mask(inputs), partial(calibration_forward, model, inputs)


def runs_on_block(block: nn.Module, calls: list[Call]) -> Iterable[Run]:
    """Forward passes of one block over its recorded inputs."""
    for call in calls:
        yield call.tokens, partial(run_block, block, call)


def collect_input_rows(
    layers: dict[str, nn.Module],
    runs: Iterable[Run],
    on_rows: Callable[[str, torch.Tensor], None],
) -> set[str]:
    """Call ``on_rows(name, rows)`` with each layer's input rows (``[N, K]``, see
    :func:`prunekit.layout.input_rows`) over the forward passes in ``runs``; returns the names
    of the layers that were called.

    Padding positions are left out: with one padded line per sample most positions of a batch
    can be padding, and their activations would otherwise dominate ‖X‖ and XXᵀ.
    """
    seen: set[str] = set()
    current: list[torch.Tensor | None] = [None]

    def observe(name: str, x: torch.Tensor) -> None:
        seen.add(name)
        rows = input_rows(layers[name], x)
        mask = current[0]
        if mask is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(mask.shape):
            rows = rows[mask.reshape(-1).to(rows.device)]
        # Statistics upcast their rows (to float64): in slices, that copy stays small however
        # many tokens a batch holds.
        for part in rows.split(ROWS_AT_ONCE):
            on_rows(name, part)

    with input_hooks(layers, observe):
        for mask, forward in runs:
            current[0] = mask
            forward()
    return seen


def shared_inputs(layers: dict[str, nn.Module], run: Run) -> dict[str, str]:
    """Layers that read the very same input tensor in the forward pass ``run`` (a transformer's
    query/key/value projections, an MLP's gate and up projections), as ``{follower: leader}``
    with the first such layer as leader: their input statistics are equal, so one copy serves
    them all (for SparseGPT one [K, K] Hessian instead of three)."""
    inputs: dict[str, torch.Tensor] = {}

    def keep(name: str, x: torch.Tensor) -> None:
        inputs.setdefault(name, x)  # held to the end, so no other tensor reuses its memory

    with input_hooks(layers, keep):
        run[1]()
    leaders: dict[tuple[Any, ...], str] = {}
    shared = {}
    for name, x in inputs.items():
        m = layers[name]
        key = (type(m), x.untyped_storage().data_ptr(), x.storage_offset(), x.shape, x.stride())
        if key in leaders:
            shared[name] = leaders[key]
        else:
            leaders[key] = name
    return shared


def _detach(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, tuple):
        return tuple(_detach(o) for o in obj)
    if isinstance(obj, list):
        return [_detach(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _detach(v) for k, v in obj.items()}
    return obj


def hessian_inverse_factor(h: torch.Tensor, dampening: float, method: str) -> torch.Tensor:
    """Upper Cholesky factor of (H + λI)⁻¹ with λ = dampening · mean(diag H), h: [K, K] — the
    inverse Hessian that SparseGPT and GPTQ walk column by column. ``method`` names the caller
    in the errors."""
    h = h.clone()
    h.diagonal().add_(dampening * torch.mean(torch.diag(h)))
    chol, info = torch.linalg.cholesky_ex(h)
    # Each [K, K] intermediate is freed as soon as the next exists: for an MLP's down projection
    # of a 1B model (K = 5632) each is 127 MB, and this is the peak of a block's working set.
    del h
    if int(info) != 0:
        raise PrunekitError(
            f"{method}: the layer's Hessian is not positive definite even with dampening="
            f"{dampening}; raise dampening (e.g. 0.1) or give more calibration samples"
        )
    # A huge dampening (1e300, inf) leaves an inverse too small to factor again.
    inverse = torch.cholesky_inverse(chol)
    del chol
    factor, info = torch.linalg.cholesky_ex(inverse, upper=True)
    if int(info) != 0:
        raise PrunekitError(
            f"{method}: dampening={dampening} leaves no usable inverse Hessian; use a "
            f"dampening of about 0.01 (0.001 to 1)"
        )
    return factor


def check_device(device: str | None) -> str | None:
    """``device`` as a config takes it: None, ``auto`` or a torch device string."""
    if device is None or device == "auto":
        return device
    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"device={device!r} is not a torch device; use 'auto', 'cpu', 'cuda' or 'cuda:1'"
        ) from None
    return device


def resolve_device(device: str | None) -> torch.device | None:
    """The device a config's ``device`` names: None (where the model is) when unset or when
    ``auto`` finds no GPU; an error when it names a GPU that is not there."""
    if device is None:
        return None
    if device == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else None
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise PrunekitError(
            f"device={device!r}: this torch has no usable CUDA device "
            f"(torch.cuda.is_available() is False); use device='auto' (the GPU when there is "
            f"one) or leave device unset"
        )
    return resolved


def move_call(call: Call, device: torch.device) -> Call:
    """``call`` with every tensor in it on ``device``."""
    return Call(_to(call.args, device), _to(call.kwargs, device), call.tokens)


def _to(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(_to(o, device) for o in obj)
    if isinstance(obj, list):
        return [_to(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


@contextlib.contextmanager
def on_device(module: nn.Module, device: torch.device | None) -> Iterator[None]:
    """Within the block ``module`` lives on ``device`` (None: where it is); afterwards it is
    back where it was, also when the block raises (before any rollback writes into it)."""
    home = next(module.parameters()).device
    if device is None or device == home:
        yield
        return
    module.to(device)
    try:
        yield
    finally:
        module.to(home)
