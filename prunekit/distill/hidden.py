"""Which intermediate states the student matches, and capturing them for one forward pass.

A :class:`Tap` names a module's output (or input) to read. Pairs come from the config
(``"student_module=teacher_module"``) or are found (``"auto"``). Hooks live only inside
``with capturing(...)``: they are removed on exit, whatever happens inside, so nothing stays on
either model between steps.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunekit.calibrate import calibration_forward, find_blocks
from prunekit.errors import PrunekitError
from prunekit.measure._common import evaluating
from prunekit.train.config import TrainingSettings


@dataclass(frozen=True)
class Tap:
    """A module's output (its input with ``input=True``) to capture."""

    name: str
    input: bool = False

    def __str__(self) -> str:
        return f"{self.name} (input)" if self.input else self.name


Pair = tuple[Tap, Tap]  # (student tap, teacher tap)


def first_tensor(value: Any) -> torch.Tensor | None:
    """The tensor a module passed or returned: itself, or the first item of a tuple/list
    (transformer blocks return ``(hidden_states, ...)``)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


class capturing:
    """Within ``with capturing(model, taps) as got:`` each forward of a tapped module stores its
    output (or input) in ``got[tap]``, keeping the autograd graph; hooks removed on exit."""

    def __init__(self, model: nn.Module, taps: list[Tap]) -> None:
        self.model, self.taps = model, taps
        self.got: dict[Tap, torch.Tensor] = {}
        self.handles: list[Any] = []

    def _store(self, tap: Tap) -> Callable[..., None]:
        def store(_m: nn.Module, args: Any, out: Any = None) -> None:
            value = first_tensor(args if tap.input else out)
            if value is not None:
                self.got[tap] = value

        return store

    def __enter__(self) -> dict[Tap, torch.Tensor]:
        try:
            for tap in self.taps:
                module = self.model.get_submodule(tap.name)
                if tap.input:
                    self.handles.append(module.register_forward_pre_hook(self._store(tap)))
                else:
                    self.handles.append(module.register_forward_hook(self._store(tap)))
        except BaseException:
            self.__exit__()
            raise
        return self.got

    def __exit__(self, *_: object) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def resolve_pairs(
    student: nn.Module, teacher: nn.Module, config: TrainingSettings, inputs: Any
) -> list[Pair]:
    """The ``(student, teacher)`` taps ``config.hidden`` asks for; ``inputs`` (one batch's) run
    through both models only when ``"auto"`` has to find the classifiers."""
    if config.hidden is None:
        return []
    if config.hidden != "auto":
        for s, t in config.pairs:
            _check_module(student, s, "student")
            _check_module(teacher, t, "teacher")
        return [(Tap(s), Tap(t)) for s, t in config.pairs]
    s_blocks, t_blocks = find_blocks(student), find_blocks(teacher)
    if s_blocks and t_blocks:
        n_s, n_t = len(s_blocks), len(t_blocks)
        # Evenly spaced, last meets last: a student of half the depth copies every other block,
        # so its block i has to do what the teacher's blocks up to 2i+1 do.
        return [
            (Tap(s_blocks[i][0]), Tap(t_blocks[max(round((i + 1) * n_t / n_s) - 1, 0)][0]))
            for i in range(n_s)
        ]
    return [(Tap(_classifier(student, inputs, "student"), input=True),
             Tap(_classifier(teacher, inputs, "teacher"), input=True))]  # fmt: skip


def _check_module(model: nn.Module, name: str, role: str) -> None:
    names = [n for n, _ in model.named_modules() if n]
    if name in names:
        return
    near = difflib.get_close_matches(name, names, n=5, cutoff=0.5) or names[:5]
    raise PrunekitError(
        f"hidden: the {role} has no module {name!r}; it has e.g. {', '.join(near)} "
        f"(see {role}.named_modules())"
    )


def _linear_like(module: nn.Module) -> bool:
    # prunekit's swapped layers (SharedLinear, QATLinear, Int8Linear, ...) are linear layers too.
    return isinstance(module, nn.Linear) or type(module).__name__.endswith("Linear")


def _classifier(model: nn.Module, inputs: Any, role: str) -> str:
    """The name of the last linear layer to run on ``inputs``: the classifier, whose input is
    the features it reads. One forward in eval mode, without gradients; hooks removed."""
    order: list[str] = []
    linears = {n: m for n, m in model.named_modules() if n and _linear_like(m)}
    handles = [
        m.register_forward_pre_hook(lambda _m, _a, name=n: order.append(name))
        for n, m in linears.items()
    ]
    try:
        with evaluating(model), torch.no_grad():
            calibration_forward(model, inputs)
    finally:
        for h in handles:
            h.remove()
    if not order:
        raise PrunekitError(
            f"hidden='auto': the {role} has no transformer blocks and runs no linear layer; "
            f"name the pairs instead: hidden=['student_module=teacher_module']"
        )
    return order[-1]


def _width_dim(x: torch.Tensor) -> int:
    return 1 if x.dim() == 4 else x.dim() - 1


def width(x: torch.Tensor) -> int:
    """The feature width of a captured state: channels of ``[B, C, H, W]``, else the last dim."""
    return int(x.shape[_width_dim(x)])


def _without_width(x: torch.Tensor) -> list[int]:
    return [n for d, n in enumerate(x.shape) if d != _width_dim(x)]


def make_projections(
    pairs: list[Pair], student: dict[Tap, torch.Tensor], teacher: dict[Tap, torch.Tensor]
) -> nn.ModuleDict:
    """A linear map student width → teacher width for each pair (key: its index) whose widths
    differ; checks every pair was captured and that the shapes agree apart from the width."""
    projections = nn.ModuleDict()
    for i, (s_tap, t_tap) in enumerate(pairs):
        s, t = student.get(s_tap), teacher.get(t_tap)
        for tap, got, role in ((s_tap, s, "student"), (t_tap, t, "teacher")):
            if got is None:
                raise PrunekitError(
                    f"hidden: the {role}'s module {str(tap)!r} did not run, or gave no tensor, "
                    f"on the first batch; pick a module that produces a tensor"
                )
        assert s is not None and t is not None
        if s.dim() != t.dim() or _without_width(s) != _without_width(t):
            raise PrunekitError(
                f"hidden: student {str(s_tap)!r} gives shape {list(s.shape)} and teacher "
                f"{str(t_tap)!r} gives {list(t.shape)}; they may differ only in the width; pair "
                f"modules whose outputs line up"
            )
        if width(s) != width(t):
            projections[str(i)] = nn.Linear(width(s), width(t)).to(device=s.device, dtype=s.dtype)
    return projections
