"""What the conformance suite runs: every registered method (each pruning pattern it declares)
on every model below, built from ``prunekit.methods()`` at collection time.

A run's outcome is computed once per (variant, model) and shared by the checks that read it;
each check that changes a model builds its own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import prunekit as pk
from prunekit.config import BaseConfig
from prunekit.registry import MethodInfo
from tests import hf_zoo, zoo

# The N:M and structured settings each declared pattern is run with.
PATTERNS = {"unstructured": "unstructured", "N:M": "2:4", "channel": "channel", "head": "head"}
# What a method may raise to refuse a model it cannot handle (the model then stays as it was).
REFUSALS = (pk.PrunekitError, ValueError, TypeError)


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class Model:
    """A small model: ``build(seed)`` gives one in eval mode (seed 0 is the one compressed, other
    seeds the same architecture with other weights), ``data()`` the batches a method reads,
    ``inputs()`` what outputs are compared on."""

    name: str
    build: Callable[[int], nn.Module]
    data: Callable[[], list[Any]]
    inputs: Callable[[], Any]
    hf: bool = False


def _zoo(name: str) -> Callable[[int], nn.Module]:
    def build(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return zoo.ZOO[name][0]().eval()

    return build


def _images() -> list[tuple[torch.Tensor, torch.Tensor]]:
    return zoo.image_batches(n=32, batch=16)


def _hf(make: Callable[[], nn.Module]) -> Callable[[int], nn.Module]:
    # The builders seed themselves; other seeds perturb every weight so a load that kept the
    # fresh model's own weights would show.
    def build(seed: int) -> nn.Module:
        model = make()
        return hf_zoo.perturb_(model, seed=seed) if seed else model

    return build


def _text(labels: bool) -> Callable[[], list[dict[str, torch.Tensor]]]:
    def data() -> list[dict[str, torch.Tensor]]:
        g = torch.Generator().manual_seed(7)
        batches = []
        for _ in range(2):
            ids = torch.randint(3, hf_zoo.VOCAB, (2, 8), generator=g)
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            if labels:  # a causal LM computes its own loss from labels = the inputs
                batch["labels"] = ids.clone()
            batches.append(batch)
        return batches

    return data


MODELS = [
    Model("mlp", _zoo("mlp"), _images, lambda: _images()[0][0]),
    Model("cnn_bn", _zoo("cnn-bn"), _images, lambda: _images()[0][0]),
    Model("residual", _zoo("residual"), _images, lambda: _images()[0][0]),
    Model(
        "bert",
        _hf(lambda: hf_zoo.bert(num_attention_heads=4)),
        _text(labels=False),
        hf_zoo.text_inputs,
        hf=True,
    ),
    Model(
        "llama",
        _hf(hf_zoo.llama_gqa),
        _text(labels=True),
        lambda: hf_zoo.text_inputs(pad=False),
        hf=True,
    ),
]
MODEL = {m.name: m for m in MODELS}


@torch.no_grad()
def outputs(model: nn.Module, inputs: Any) -> torch.Tensor:
    """The model's output tensor in eval mode (logits, or an encoder's last hidden state)."""
    model.eval()
    out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    return logits if isinstance(logits, torch.Tensor) else out.last_hidden_state


# --------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class Variant:
    """One registered method, with one of the pruning patterns it declares."""

    info: MethodInfo
    pattern: str | None = None  # a key of PATTERNS, for pruning methods

    def __hash__(self) -> int:  # MethodInfo holds a dict: hash the names (the cache key)
        return hash((self.info.name, self.pattern))

    @property
    def id(self) -> str:
        if self.pattern is None:
            return self.info.name
        return f"{self.info.name}-{PATTERNS[self.pattern]}"

    @property
    def training(self) -> bool:
        """A pruning method that learns its scores while training runs through finetune_."""
        return self.info.kind == "prune" and bool(getattr(self.info.config, "needs_training", 0))

    def config(self, **fields: Any) -> BaseConfig:
        """The registered example config, with this variant's pattern and ``fields``."""
        values = {**self.info.example, **fields}
        if self.pattern is not None:
            values["pattern"] = PATTERNS[self.pattern]
            if self.pattern == "N:M":
                values.pop("sparsity", None)  # N:M fixes the sparsity
        return self.info.config(**values)


def variants() -> list[Variant]:
    out = []
    for info in pk.methods():
        if info.kind == "prune":
            out += [Variant(info, p) for p in info.patterns]
        else:
            out.append(Variant(info))
    return out


@dataclass(frozen=True)
class Call:
    """One call of a variant's verb, its arguments built beforehand (so that a fault injected
    into the call lands in the verb, not in building its data)."""

    variant: Variant
    config: BaseConfig
    data: list[Any]
    teacher: nn.Module | None

    @classmethod
    def of(cls, variant: Variant, model: Model, **fields: Any) -> Call:
        teacher = model.build(1) if variant.info.kind == "distill" else None
        return cls(variant, variant.config(**fields), model.data(), teacher)

    def __call__(self, model: nn.Module) -> Any:
        return run_verb(self.variant, model, self.config, self.data, self.teacher)


def run_verb(
    variant: Variant, model: nn.Module, config: BaseConfig, data: list[Any], teacher: Any
) -> Any:
    """Run ``config`` on ``model`` through the public verb its kind uses; returns the report."""
    kind = variant.info.kind
    if kind == "prune" and variant.training:
        return pk.finetune_(model, data, prune=config, schedule="agp", epochs=1, progress=False)
    if kind == "prune":
        return pk.prune_(model, config, data=data)
    if kind == "quantize":
        return pk.quantize_(model, config, data=data)
    if kind == "share":
        return pk.share_weights_(model, config)
    if kind == "factorize":
        return pk.factorize_(model, config, data=data)
    if kind == "distill":
        return pk.distill_(model, teacher, data, config, progress=False)
    raise AssertionError(f"no verb for kind {kind!r}: add one here and to the checks")


# --------------------------------------------------------------------------- model state


@dataclass
class State:
    """Everything a failed call must leave as it was."""

    tensors: dict[str, torch.Tensor]
    classes: dict[str, type]
    training: bool
    params: int  # parameters (tied ones once)


def state(model: nn.Module) -> State:
    return State(
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        {n: type(m) for n, m in model.named_modules()},
        model.training,
        sum(p.numel() for p in model.parameters()),
    )


def differences(model: nn.Module, before: State) -> list[str]:
    """What differs between ``model`` and ``before``: names of tensors and modules."""
    now = state(model)
    diff = [f"tensor {k}" for k in before.tensors.keys() ^ now.tensors.keys()]
    for k in before.tensors.keys() & now.tensors.keys():
        a, b = before.tensors[k], now.tensors[k]
        if a.shape != b.shape or a.dtype != b.dtype or not torch.equal(a, b):
            diff.append(f"tensor {k}")
    diff += [
        f"module {n} ({before.classes.get(n)} -> {now.classes.get(n)})"
        for n in before.classes.keys() | now.classes.keys()
        if before.classes.get(n) is not now.classes.get(n)
    ]
    if before.training != now.training:
        diff.append("training mode")
    return sorted(diff)


# --------------------------------------------------------------------------- runs


@dataclass
class Outcome:
    """One run of a variant on a freshly built model."""

    config: BaseConfig
    before: State
    out_before: torch.Tensor
    model: nn.Module
    report: Any = None
    error: BaseException | None = None

    @property
    def ran(self) -> bool:
        return self.error is None


@functools.cache
def outcome(variant: Variant, model_name: str) -> Outcome:
    kind = MODEL[model_name]
    model = kind.build(0)
    call = Call.of(variant, kind)
    result = Outcome(call.config, state(model), outputs(model, kind.inputs()), model)
    try:
        result.report = call(model)
    except REFUSALS as e:
        result.error = e
    return result


def first_run(variant: Variant) -> tuple[str, Outcome]:
    """The first model this variant runs on (the suite asserts there is one)."""
    for m in MODELS:
        got = outcome(variant, m.name)
        if got.ran:
            return m.name, got
    raise AssertionError(f"{variant.id} runs on none of {[m.name for m in MODELS]}")


# --------------------------------------------------------------------------- fault injection


class InjectedFault(RuntimeError):
    """Raised by :class:`FaultAt` in place of a torch call."""


# torch's own no_grad/enable_grad switch grad mode back through this call as they exit; a fault
# there would leave grad mode off for the rest of the process, torch's doing, not the method's.
NEVER_FAULTED = {torch._C._set_grad_enabled}


class FaultAt(TorchFunctionMode):
    """Counts torch function calls; raises :class:`InjectedFault` at call ``at`` (once)."""

    def __init__(self, at: int | None = None) -> None:
        super().__init__()
        self.calls, self.at = 0, at

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in NEVER_FAULTED:
            return func(*args, **(kwargs or {}))
        self.calls += 1
        if self.calls == self.at:
            raise InjectedFault(f"injected fault at torch call {self.calls}: {func}")
        return func(*args, **(kwargs or {}))


@functools.cache
def torch_calls(variant: Variant, model_name: str) -> tuple[int, bool]:
    """How many torch calls a run makes, and whether it ran (a counted dry run on a fresh
    model)."""
    kind = MODEL[model_name]
    model, call = kind.build(0), Call.of(variant, kind)
    counter = FaultAt()
    try:
        with counter:
            call(model)
    except REFUSALS:
        return counter.calls, False
    return counter.calls, True
