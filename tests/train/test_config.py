"""FinetuneConfig: validation, the keywords of finetune_, and the loop's schedule, warm-up,
clipping and optimizers as the optimizer sees them, step by step."""

import copy
import math

import pydantic
import pytest
import torch

import prunekit as pk
import prunekit.train.loop as loop
from prunekit.auto import AutoConfig
from prunekit.models import model_info
from prunekit.recipe import Recipe
from prunekit.train.optim import lr_factor, make_optimizer
from tests import zoo


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("lr", 0.0),
        ("optimizer", "lion"),
        ("lr_schedule", "step"),
        ("warmup", 1.0),
        ("warmup", -0.1),
        ("weight_decay", -1.0),
        ("max_grad_norm", 0.0),
        ("temperature", 0.0),
        ("alpha", 1.5),
        ("output_loss", "l1"),
        ("hidden", ["no-equals-sign"]),
        ("hidden_loss", "l1"),
        ("hidden_weight", -1.0),
    ],
)
def test_every_bad_field_is_an_error_naming_the_field_and_the_value(field, value):
    with pytest.raises(pydantic.ValidationError, match=field) as info:
        pk.FinetuneConfig(**{field: value})
    assert str(value if not isinstance(value, list) else value[0]) in str(info.value)
    model, batches = zoo.build("mlp")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(pk.PrunekitError) as err:
        pk.finetune_(model, batches, progress=False, **{field: value})
    message = str(err.value)
    assert message.startswith(f"{field} ") and "; got " in message, message
    assert repr(value if not isinstance(value, list) else value[0]) in message, message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_defaults_round_trip_and_distill_config_is_the_same_config():
    config = pk.FinetuneConfig()
    assert pk.FinetuneConfig(**config.to_dict()) == config
    assert issubclass(pk.DistillConfig, pk.FinetuneConfig)
    assert pk.DistillConfig().to_dict() == config.to_dict()


def test_unknown_keywords_and_wrong_configs_are_type_errors():
    model, batches = zoo.build("mlp")
    with pytest.raises(TypeError, match="'learning_rate'"):
        pk.finetune_(model, batches, learning_rate=1e-3, progress=False)
    with pytest.raises(TypeError, match="FinetuneConfig; got int"):
        pk.finetune_(model, batches, 2, progress=False)


def test_keywords_override_the_config_and_the_report_says_what_ran():
    model, batches = zoo.build("mlp")
    config = pk.FinetuneConfig(epochs=3, lr=1e-2, lr_schedule="linear")
    report = pk.finetune_(model, batches, config, epochs=1, progress=False)
    assert report.epochs == 1
    assert report.config == {**config.to_dict(), "epochs": 1}


def _recorded(monkeypatch, batches, **fields):
    """Run finetune_ on the zoo MLP; per step, the learning rate the optimizer steps with and
    the gradients' global norm as it steps."""
    optimizers, lrs, norms = [], [], []

    def make(params, config):
        opt = make_optimizer(params, config)

        def record(opt, args, kwargs):
            lrs.append(opt.param_groups[0]["lr"])
            grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

        opt.register_step_pre_hook(record)
        optimizers.append(opt)
        return opt

    monkeypatch.setattr(loop, "make_optimizer", make)
    model, _ = zoo.build("mlp")
    pk.finetune_(model, batches, progress=False, **fields)
    return optimizers, lrs, norms


@pytest.mark.parametrize("schedule", ["cosine", "constant", "linear"])
def test_each_schedule_sets_the_learning_rate_of_every_step(monkeypatch, schedule):
    _, batches = zoo.build("mlp")
    epochs, lr = 3, 1e-2
    _, lrs, _ = _recorded(
        monkeypatch, batches, epochs=epochs, lr=lr, lr_schedule=schedule, warmup=0.0
    )
    total = epochs * len(batches)
    assert len(lrs) == total
    for step, got in enumerate(lrs):
        progress = step / total
        want = {
            "constant": lr,
            "linear": lr * (1 - progress),
            "cosine": lr * 0.5 * (1 + math.cos(math.pi * progress)),
        }[schedule]
        assert got == pytest.approx(want, rel=1e-6, abs=1e-12), step
    if schedule != "constant":
        assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.1 * lr


def test_warmup_rises_linearly_to_the_peak_then_the_schedule_starts(monkeypatch):
    _, batches = zoo.build("mlp")
    epochs, lr, warmup = 4, 1e-2, 0.25
    _, lrs, _ = _recorded(
        monkeypatch, batches, epochs=epochs, lr=lr, lr_schedule="cosine", warmup=warmup
    )
    k = round(warmup * epochs * len(batches))
    assert k >= 2
    assert lrs[:k] == pytest.approx([lr * (i + 1) / k for i in range(k)])
    assert lrs[k] == pytest.approx(lr)  # the first step of the cosine is at the peak
    assert lrs[k:] == sorted(lrs[k:], reverse=True)


def test_lr_factor_counts_warmup_as_a_fraction_of_all_steps():
    config = pk.FinetuneConfig(warmup=0.1, lr_schedule="constant")
    factor = lr_factor(config, 200)
    assert [factor(s) for s in (0, 9, 19, 20, 199)] == pytest.approx([0.05, 0.5, 1, 1, 1])


def test_gradients_are_clipped_to_max_grad_norm(monkeypatch):
    _, batches = zoo.build("mlp")
    _, _, free = _recorded(monkeypatch, batches, epochs=1, lr=1e-3)
    _, _, clipped = _recorded(monkeypatch, batches, epochs=1, lr=1e-3, max_grad_norm=1e-3)
    assert max(free) > 1e-2  # the bound below is a real constraint
    assert all(n <= 1e-3 * (1 + 1e-4) for n in clipped)


@pytest.mark.parametrize(
    ("name", "cls"),
    [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)],
)
def test_the_optimizer_asked_for_is_the_one_that_steps(monkeypatch, name, cls):
    _, batches = zoo.build("mlp")
    optimizers, _, _ = _recorded(
        monkeypatch, batches, epochs=1, optimizer=name, weight_decay=0.01, lr=1e-3
    )
    (opt,) = optimizers
    assert type(opt) is cls
    assert opt.param_groups[0]["weight_decay"] == 0.01


def test_adam_and_adamw_differ_only_by_how_weight_decay_applies():
    model, batches = zoo.build("mlp")
    runs = {}
    for name in ("adam", "adamw"):
        for wd in (0.0, 0.1):
            m = copy.deepcopy(model)
            pk.finetune_(m, batches, optimizer=name, weight_decay=wd, progress=False)
            runs[name, wd] = m.state_dict()
    for k in runs["adam", 0.0]:
        assert torch.allclose(runs["adam", 0.0][k], runs["adamw", 0.0][k])
    assert any(
        not torch.allclose(runs["adam", 0.1][k], runs["adamw", 0.1][k]) for k in runs["adam", 0.1]
    )


def test_distill_and_finetune_with_a_teacher_are_one_path():
    student, batches = zoo.build("mlp")
    teacher = pk.teacher_copy(zoo.build("mlp", seed=1)[0])
    twin = copy.deepcopy(student)
    config = pk.DistillConfig(epochs=2, lr=1e-2, alpha=0.7, temperature=2.0, hidden="auto")
    distilled = pk.distill_(student, teacher, batches, config, progress=False)
    tuned = pk.finetune_(twin, batches, config, teacher=teacher, progress=False)
    for k, v in student.state_dict().items():
        assert torch.equal(v, twin.state_dict()[k]), k
    assert distilled.history == tuned.history and distilled.pairs == tuned.pairs


def test_recipes_auto_and_builtin_training_read_the_same_config():
    recipe = Recipe.from_yaml(
        "steps:\n"
        "  - prune: {method: magnitude, sparsity: 0.5, epochs: 2, lr_schedule: linear, seed: 3}\n"
        "  - finetune: {epochs: 2, lr: 0.001, distill: true, lr_schedule: constant, warmup: 0.1,"
        " optimizer: sgd, hidden: auto}\n"
    )
    prune, finetune = list(recipe)
    assert prune.options.finetune_config(prune.config.seed) == pk.FinetuneConfig(
        epochs=2, lr_schedule="linear", seed=3
    )
    assert finetune.options.finetune_config() == pk.FinetuneConfig(
        epochs=2, lr=1e-3, lr_schedule="constant", warmup=0.1, optimizer="sgd", hidden="auto"
    )
    auto = AutoConfig(lr_schedule="linear", alpha=0.9, trial_epochs=2)
    trial = auto.finetune_config(auto.trial_epochs)
    assert (trial.epochs, trial.lr_schedule, trial.alpha, trial.seed) == (2, "linear", 0.9, 0)
    assert auto.share_config().lr == auto.share_lr
    with pytest.raises(pydantic.ValidationError, match="warmup"):
        AutoConfig(warmup=2.0)
    recipe = model_info("lenet300").recipe
    assert isinstance(recipe, pk.FinetuneConfig) and recipe.batch_size == 128
