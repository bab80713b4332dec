"""The steps a recipe holds: one verb each, with its method's config and the verb's own fields.

A step is written ``{verb: {method: NAME, field: value, …}}``. Verbs with methods (``prune``,
``distill``, ``share``, ``factorize``, ``quantize``) read the method from the registry and split
the fields between the method's config and the verb's own options (below); the others
(``finetune``, ``export``, ``measure``) have options only. Every field is validated by pydantic
before any step runs, and an error names the step number, its verb, the field and what is
accepted.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from prunekit.config import BaseConfig
from prunekit.data.text import existing_file
from prunekit.errors import PrunekitError, quote
from prunekit.prune.methods.calibrated import CalibratedConfig
from prunekit.prune.schedule import SCHEDULES
from prunekit.registry import MethodInfo, methods
from prunekit.train.config import FinetuneConfig, TrainingSettings


class RecipeError(PrunekitError):
    """A recipe that cannot run: names the step (1-based), its verb and the field at fault."""

    def __init__(self, message: str, step: int | None = None, verb: str | None = None,
                 field: str | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.step, self.verb, self.field = step, verb, field


class PruneOptions(TrainingSettings):
    """prune's own fields. ``epochs`` > 0 trains after (or, with a gradual ``schedule``, while)
    pruning, as ``finetune_(prune=config, schedule=...)`` does, with the training fields of
    :class:`prunekit.FinetuneConfig` (``lr``, ``lr_schedule``, ``warmup``, ``optimizer``,
    ``temperature``, ``alpha``…; the seed is the method's); ``distill``: the original model
    teaches during that training."""

    schedule: str = "oneshot"
    epochs: int = Field(0, ge=0)
    distill: bool = False

    def finetune_config(self, seed: int) -> FinetuneConfig:
        """The training this step does after (or while) pruning; ``epochs`` must be ≥ 1."""
        fields = {k: v for k, v in self.model_dump().items() if k in FinetuneConfig.model_fields}
        return FinetuneConfig(**fields, seed=seed)

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, v: str) -> str:
        if v not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {quote(v)}")
        return v

    @model_validator(mode="after")
    def _training_agrees(self) -> PruneOptions:
        if self.epochs == 0 and self.schedule != "oneshot":
            raise ValueError(
                f"schedule {self.schedule!r} prunes while training; set epochs ≥ 1 "
                f"(or use schedule 'oneshot')"
            )
        if self.epochs == 0 and self.distill:
            raise ValueError("distill applies to training; set epochs ≥ 1 or drop distill")
        return self


class FinetuneOptions(FinetuneConfig):
    """finetune's fields: :class:`prunekit.FinetuneConfig`'s, as ``prunekit.finetune_`` takes
    them, and ``distill``: the original (unmodified) model teaches, as the config's
    distillation fields say (soft targets mixed in with ``alpha`` at ``temperature``…)."""

    distill: bool = False

    def finetune_config(self) -> FinetuneConfig:
        """The config without ``distill`` (which says who teaches, not how)."""
        return FinetuneConfig(**self.model_dump(exclude={"distill"}))


class ExportOptions(BaseConfig):
    """export's fields: ``onnx`` is the file written, relative to the run's output directory."""

    onnx: str = "model.onnx"

    @field_validator("onnx")
    @classmethod
    def _inside_out(cls, v: str) -> str:
        path = PurePosixPath(v)
        inside = not path.is_absolute() and ".." not in path.parts and v == path.as_posix()
        if not inside or path.suffix != ".onnx":
            raise ValueError(
                f"onnx must be a relative path ending in .onnx inside the output directory "
                f"(e.g. model.onnx); got {quote(v)}"
            )
        return v


class MeasureOptions(BaseConfig):
    """measure's fields, as ``prunekit.measure`` takes them."""

    latency: bool = True
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 64])
    min_run_time: float = Field(0.5, gt=0)
    num_samples: int | None = Field(None, ge=1)
    artifact: bool = True

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(b < 1 for b in v):
            raise ValueError(f"batch_sizes must be a non-empty list of integers ≥ 1; got {v}")
        return v


class DistillOptions(BaseConfig):
    """distill's own field: ``more_text``, a text file (one sample per line) whose every line
    also trains, tokenized as the run's text data is and shuffled in with its training batches
    (``prunekit.data.with_more_text``). A relative path is read from the recipe file's folder
    (from the working directory for a recipe given as text or a mapping); the file must exist
    when the recipe is read."""

    more_text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        # Unset, the field is not written: recipes and their digests stay what they were before
        # it existed, so a run started then still resumes.
        out = super().to_dict()
        if out.get("more_text") is None:
            out.pop("more_text", None)
        return out


class NoOptions(BaseConfig):
    """A verb whose fields are all its method's."""


@dataclass(frozen=True)
class Verb:
    """A step's verb: its own options, the registry kind of its methods (None: no method) and
    the method used when a step names none (None: the step must name one)."""

    options: type[BaseConfig]
    kind: str | None = None
    default_method: str | None = None
    changes_model: bool = True


VERBS: dict[str, Verb] = {
    "prune": Verb(PruneOptions, "prune"),
    "finetune": Verb(FinetuneOptions),
    "distill": Verb(DistillOptions, "distill", "kd"),
    "share": Verb(NoOptions, "share", "kmeans"),
    "factorize": Verb(NoOptions, "factorize", "svd"),
    "quantize": Verb(NoOptions, "quantize"),
    "export": Verb(ExportOptions, changes_model=False),
    "measure": Verb(MeasureOptions, changes_model=False),
}


@dataclass(frozen=True)
class Step:
    """One validated step: ``index`` counts from 1; ``config`` is the method's (None for verbs
    without methods); ``options`` the verb's own fields."""

    index: int
    verb: str
    options: BaseConfig
    method: str | None = None
    config: BaseConfig | None = None

    @property
    def label(self) -> str:
        """``prune (magnitude)``, or the verb alone."""
        return f"{self.verb} ({self.method})" if self.method else self.verb

    @property
    def changes_model(self) -> bool:
        return VERBS[self.verb].changes_model

    def fields(self) -> dict[str, Any]:
        """Every field with its default filled in: method first, then options, then config."""
        out: dict[str, Any] = {"method": self.method} if self.method else {}
        out.update(self.options.to_dict())
        if self.config is not None:
            out.update(self.config.to_dict())
        return out

    def to_dict(self) -> dict[str, Any]:
        """The resolved step as a recipe writes it: ``{verb: fields}``."""
        return {self.verb: self.fields()}


def parse_step(index: int, raw: Any, base: Path | None = None) -> Step:
    """Validate one recipe entry (``{verb: {field: value}}``) into a :class:`Step`; relative
    file paths in it are read from ``base`` (None: the working directory)."""
    if not isinstance(raw, dict) or len(raw) != 1:
        raise RecipeError(
            f"step {index}: expected one verb with its fields, such as "
            f"`- prune: {{method: magnitude, sparsity: 0.9}}`; got {quote(raw)}",
            index,
        )
    ((verb, body),) = raw.items()
    if verb not in VERBS:
        raise RecipeError(
            f"step {index}: unknown verb {quote(verb)}{_close(verb, VERBS)}; choose one of: "
            f"{', '.join(VERBS)}",
            index,
        )
    body = {} if body is None else body
    if not isinstance(body, dict):
        raise RecipeError(
            f"step {index} ({verb}): expected a mapping of fields (e.g. {{}}); got {quote(body)}",
            index,
            verb,
        )
    spec = VERBS[verb]
    fields = dict(body)
    info = None
    if spec.kind is not None:
        info = _method(index, verb, spec, fields.pop("method", spec.default_method))
    own = set(spec.options.model_fields)
    theirs = set(info.config.model_fields) if info else set()
    assert not own & theirs, f"{verb}'s own fields clash with its method's: {own & theirs}"
    label = f"{verb}, method {info.name}" if info else verb
    for key in fields:
        if key not in own | theirs:
            accepted = sorted(own | theirs | ({"method"} if info else set()))
            raise RecipeError(
                f"step {index} ({label}): unknown field {quote(key)}{_close(key, accepted)}; "
                f"accepted fields: {', '.join(accepted)}",
                index,
                verb,
                str(key),
            )
    options = _validate(
        index, verb, label, spec.options, {k: v for k, v in fields.items() if k in own}
    )
    config = None
    if info is not None:
        mine = {k: v for k, v in fields.items() if k in theirs}
        config = _validate(index, verb, label, info.config, mine)
    options = _resolve_paths(index, verb, options, base)
    step = Step(index, verb, options, info.name if info else None, config)
    _check_combination(step)
    return step


def _resolve_paths(index: int, verb: str, options: Any, base: Path | None) -> Any:
    # Resolved once, here, so the recorded recipe names the file read, wherever it runs from.
    if not isinstance(options, DistillOptions) or options.more_text is None:
        return options
    file = existing_file(options.more_text, base or Path.cwd())
    if file is None:
        where = f"the recipe's folder {base}" if base else "the working directory"
        raise RecipeError(
            f"step {index} ({verb}): field 'more_text': {quote(options.more_text)} is not a file "
            f"(relative paths are read from {where}); give an existing text file, one sample "
            f"per line",
            index, verb, "more_text",
        )  # fmt: skip
    return options.model_copy(update={"more_text": str(file.resolve())})


def _method(index: int, verb: str, spec: Verb, name: Any) -> MethodInfo:
    _load_optional_kinds()
    known = [m.name for m in methods(spec.kind)]
    if name is None:
        raise RecipeError(
            f"step {index} ({verb}): field 'method' is required; choose one of: {', '.join(known)}",
            index, verb, "method",
        )  # fmt: skip
    if not isinstance(name, str) or name not in known:
        other = {m.name: m.kind for m in methods()}.get(name) if isinstance(name, str) else None
        why = f"is a {other} method, not a {spec.kind} method" if other else "is not registered"
        hint = "" if other else _close(name, known)
        raise RecipeError(
            f"step {index} ({verb}): method {quote(name)} {why}{hint}; choose one of: "
            f"{', '.join(known)}",
            index, verb, "method",
        )  # fmt: skip
    return next(m for m in methods(spec.kind) if m.name == name)


def _load_optional_kinds() -> None:
    # Distillation registers its methods when imported, which the registry does not do itself.
    if importlib.util.find_spec("prunekit.distill") is not None:
        importlib.import_module("prunekit.distill")


def _validate(
    index: int, verb: str, label: str, cls: type[BaseConfig], fields: dict[str, Any]
) -> Any:
    try:
        return cls(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(x) for x in first["loc"])
        msg = str(first["msg"]).removeprefix("Value error, ")
        where = f"field {quote(field)}: " if field else ""
        got = f"; got {quote(first['input'])}" if field and "got" not in msg else ""
        if field == "pattern" and isinstance(first["input"], int):
            got += " (YAML reads an unquoted N:M as a number: write pattern: '2:4')"
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        message = f"step {index} ({label}): {where}{msg}{got}{more}"
        raise RecipeError(message, index, verb, field or None) from None


def _check_combination(step: Step) -> None:
    # What neither the options nor the config can see alone: how the method is scheduled.
    if step.verb != "prune":
        return
    options, config = step.options, step.config
    assert isinstance(options, PruneOptions) and config is not None
    where = f"step {step.index} (prune, method {step.method}): field 'schedule'"
    gradual = options.epochs > 0 and (options.schedule != "oneshot" or config.needs_training)
    if config.needs_training and options.schedule != "agp":
        raise RecipeError(
            f"{where}: {step.method} learns its scores while training and needs schedule 'agp' "
            f"with epochs ≥ 1; got {options.schedule!r}",
            step.index, "prune", "schedule",
        )  # fmt: skip
    if gradual and isinstance(config, CalibratedConfig):
        raise RecipeError(
            f"{where}: {step.method} prunes in one shot from calibration data; use schedule "
            f"'oneshot' (gradual schedules suit methods scored per weight, such as magnitude or "
            f"taylor); got {options.schedule!r}",
            step.index, "prune", "schedule",
        )  # fmt: skip


def _close(word: Any, choices: Any) -> str:
    # Only a word can be a typo of one; a long one would only slow difflib down.
    if not isinstance(word, str) or len(word) > 100:
        return ""
    match = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""
