"""Why the exporter failed, in one actionable line: which module called which op it cannot
translate (int8 modules calling ``torch.ops.quantized.*``, say), found by re-running the forward
under a dispatch mode that records the innermost module of every op."""

from __future__ import annotations

import logging
import re
from typing import Any

from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from prunekit.errors import PrunekitError
from prunekit.export.inputs import ModelCall, one_line

log = logging.getLogger(__name__)

HINTS = {
    "batch": "; if the model fixes its batch size, pass dynamic_batch=False (CLI --static-batch)",
    "sequence": "; if the model fixes its sequence length, leave dynamic_sequence off",
}


def explain(model: nn.Module, call: ModelCall, err: Exception) -> PrunekitError:
    """An exporter failure as one actionable message, naming the modules whose ops failed."""
    chain: list[BaseException] = []
    cause: BaseException | None = err
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__
    text = " ".join(str(e) for e in chain)
    named = set(re.findall(r"op='([\w.]+)'", text))
    modules = dict(model.named_modules())
    bad = {op: m for op, m in _op_callers(model, call).items() if op in named or _foreign(op)}
    if bad:
        where = "; ".join(
            f"{op}, called by module {m or '<root>'!r} ({_class_name(modules[m])})"
            for op, m in sorted(bad.items())
        )
        return PrunekitError(
            f"export_onnx: torch.onnx cannot translate {where}; export the float model before "
            f"quantizing it and quantize in onnxruntime instead (export_onnx(..., "
            f"quantize='int8-dynamic'), CLI --quantize int8-dynamic), or replace that module"
        )
    hint = "; the forward must be traceable by torch.export"
    if re.search(r"Constraints violated|specializ", text):
        hint = HINTS["sequence" if call.sequence is not None else "batch"]
    return PrunekitError(
        f"export_onnx: torch.onnx could not export {type(model).__name__}: "
        f"{type(chain[-1]).__name__}: {one_line(chain[-1])}{hint}"
    )


def _class_name(module: nn.Module) -> str:
    cls = type(module)
    # torch.ao's quantized Linear is called "Linear" too; its module path tells them apart.
    return (
        f"{cls.__module__}.{cls.__qualname__}"
        if cls.__module__.startswith("torch.")
        else cls.__name__
    )


def _foreign(op: str) -> bool:
    # ONNX's translation library covers aten and prims, plus quantized_decomposed's Q/DQ ops.
    return op.split(".")[0] not in ("aten", "prims", "quantized_decomposed")


class _OpRecorder(TorchDispatchMode):
    """For each op the forward dispatches, the innermost module that first called it."""

    def __init__(self, stack: list[str]):
        super().__init__()
        self.stack = stack
        self.callers: dict[str, str] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.callers.setdefault(str(func.overloadpacket), self.stack[-1] if self.stack else "")
        return func(*args, **(kwargs or {}))


def _op_callers(model: nn.Module, call: ModelCall) -> dict[str, str]:
    stack: list[str] = []

    def enter(name: str) -> Any:
        return lambda *_: stack.append(name)  # returns None, so the inputs are kept

    def leave(*_: Any) -> None:
        stack.pop()

    handles = []
    for name, module in model.named_modules():
        handles += [module.register_forward_pre_hook(enter(name))]
        handles += [module.register_forward_hook(leave)]
    recorder = _OpRecorder(stack)
    try:
        with recorder:
            call.outputs(model, call.inputs)
    except Exception:
        log.debug("the forward that locates unexportable ops failed", exc_info=True)
    finally:
        for handle in handles:
            handle.remove()
    return recorder.callers
