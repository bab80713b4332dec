import copy
import itertools
import math

import pytest
import torch

import prunekit as pk
from prunekit.distill.losses import distillation_loss
from prunekit.measure.accuracy import top1_accuracy
from prunekit.targets import select_layers
from tests import zoo


def _zero_masks(model):
    return {n: (m.weight == 0).clone() for n, m in select_layers(model).items()}


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "sgd"])
def test_pruned_weights_stay_zero_through_finetuning(optimizer):
    model, batches = zoo.build("cnn-bn")
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.8, scope="global"))
    zeros = _zero_masks(model)
    kept_before = {n: m.weight.detach().clone() for n, m in select_layers(model).items()}
    pk.finetune_(
        model, batches, epochs=3, lr=1e-2, optimizer=optimizer, weight_decay=0.1, progress=False
    )
    for name, m in select_layers(model).items():
        assert torch.equal(m.weight == 0, zeros[name]), name  # same zeros, none revived
        assert not torch.equal(m.weight.detach(), kept_before[name])  # and it did train


def test_nothing_lingers_on_the_model_after_finetuning():
    model, batches = zoo.build("mlp")
    keys = set(model.state_dict())
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.5))
    pk.finetune_(model, batches, epochs=1, progress=False)
    assert set(model.state_dict()) == keys
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        assert not hasattr(m, "parametrizations")
    for p in model.parameters():
        assert not p._backward_hooks  # None or empty: no tensor hooks left


def test_finetuning_learns():
    model, batches = zoo.build("mlp")
    before = top1_accuracy(model, batches)[0]
    report = pk.finetune_(model, batches, epochs=20, lr=1e-2, eval_data=batches, progress=False)
    assert report.final_accuracy > before + 0.3
    assert report.epochs == 20 and report.steps == 20 * len(batches)


def test_nan_loss_stops_early_and_keeps_the_last_good_weights():
    model, batches = zoo.build("mlp")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = {"n": 0}

    def loss_fn(logits, labels):
        calls["n"] += 1
        loss = torch.nn.functional.cross_entropy(logits, labels)
        return loss * math.nan if calls["n"] > len(batches) + 1 else loss

    report = pk.finetune_(model, batches, epochs=3, loss_fn=loss_fn, progress=False)
    assert report.stopped_early and "non-finite" in report.stopped_early
    assert report.epochs == 1  # epoch 2 hit the NaN; epoch 1's weights are kept
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_an_error_mid_training_restores_the_model():
    model, batches = zoo.build("cnn-bn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = {"n": 0}

    def loss_fn(logits, labels):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return torch.nn.functional.cross_entropy(logits, labels)

    with pytest.raises(RuntimeError, match="boom"):
        pk.finetune_(model, batches, epochs=2, loss_fn=loss_fn, progress=False)
    for k, v in model.state_dict().items():
        assert torch.equal(before[k], v), k


@pytest.mark.parametrize("schedule", ["oneshot", pk.Iterative(rounds=3), pk.AGP(end=0.6)])
@pytest.mark.parametrize("config", [pk.MagnitudeConfig, pk.TaylorConfig])
def test_schedules_reach_the_final_sparsity_exactly(schedule, config):
    model, batches = zoo.build("cnn-bn")
    report = pk.finetune_(
        model, batches, epochs=6, prune=config(sparsity=0.9), schedule=schedule, progress=False
    )
    for m in select_layers(model).values():
        assert int((m.weight == 0).sum()) == round(0.9 * m.weight.numel())
    targets = [p["sparsity"] for p in report.pruning]
    assert targets == sorted(targets) and targets[-1] == pytest.approx(0.9)
    sparsities = [h["sparsity"] for h in report.history]
    assert sparsities == sorted(sparsities)


def _kl_to_teacher(model, teacher, batches):
    """Mean KL(teacher ‖ model) of the outputs on ``batches``, both in eval mode."""
    was = model.training
    model.eval()
    with torch.no_grad():
        kl = sum(float(distillation_loss(model(x), teacher(x), 1.0)) for x, _ in batches)
    model.train(was)
    return kl / len(batches)


def test_distillation_from_a_teacher_runs_and_keeps_masks():
    # The teacher is another net (seed 1): with alpha=1 only its outputs teach, so the student
    # must move toward them, which training on the labels alone would not do.
    model, batches = zoo.build("cnn-bn")
    teacher = pk.teacher_copy(zoo.build("cnn-bn", seed=1)[0])
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.7))
    zeros = _zero_masks(model)
    plain = copy.deepcopy(model)
    before = _kl_to_teacher(model, teacher, batches)
    report = pk.finetune_(
        model, batches, epochs=4, lr=1e-2, alpha=1.0, teacher=teacher, progress=False
    )
    pk.finetune_(plain, batches, epochs=4, lr=1e-2, alpha=1.0, progress=False)
    after = _kl_to_teacher(model, teacher, batches)
    without = _kl_to_teacher(plain, teacher, batches)
    assert after < before and after < without / 3
    assert all(math.isfinite(h["soft_loss"]) for h in report.history)
    assert all(torch.equal(m.weight == 0, zeros[n]) for n, m in select_layers(model).items())
    assert all(not p.requires_grad for p in teacher.parameters())
    assert not teacher.training


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be"),
        ({"lr": -1.0}, "lr must be > 0"),
        ({"optimizer": "lion"}, "optimizer must be one of"),
        ({"prune": pk.MovementConfig(sparsity=0.5), "schedule": "oneshot"}, "gradual schedule"),
    ],
)
def test_bad_arguments_fail_before_training(kwargs, message):
    model, batches = zoo.build("mlp")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(pk.PrunekitError, match=message):
        pk.finetune_(model, batches, progress=False, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_causal_lm_trains_on_its_own_shifted_loss_and_prunes_with_taylor():
    import transformers

    from prunekit.measure.text import perplexity

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=16, n_positions=32)
    model = transformers.GPT2LMHeadModel(config)
    # a language with a rule a model can learn: each token is the previous one + 1 (mod 16)
    starts = torch.randint(0, 16, (64, 1), generator=torch.Generator().manual_seed(0))
    ids = (starts + torch.arange(24)) % 16
    batches = [{"input_ids": ids[i : i + 8], "labels": ids[i : i + 8]} for i in range(0, 64, 8)]
    before = perplexity(model, batches)
    report = pk.prune_(model, pk.TaylorConfig(sparsity=0.3), data=batches)
    assert report.sparsity == pytest.approx(0.3, abs=1e-3)
    pk.finetune_(model, batches, epochs=8, lr=3e-3, progress=False)
    assert perplexity(model, batches) < before / 4  # the model's own (shifted) loss was used


def test_progress_is_logged_per_epoch_and_within_long_epochs(caplog, monkeypatch):
    # Where no bar is drawn (output to a file) these lines are the progress the CLI shows.
    import prunekit.train.progress as progress

    monkeypatch.setattr(progress, "PROGRESS_SECONDS", -1.0)  # every batch counts as a long wait
    model, batches = zoo.build("mlp")
    with caplog.at_level("INFO", logger="prunekit.train.progress"):
        pk.finetune_(model, batches, epochs=2, eval_data=batches, progress=False)
    lines = [r.getMessage() for r in caplog.records]
    within = [line for line in lines if line.startswith("epoch 1/2: batch ")]
    assert len(within) == len(batches)
    assert within[-1].startswith(f"epoch 1/2: batch {len(batches) - 1}/{len(batches)}, loss ")
    ends = [line for line in lines if "train_loss" in line]
    assert len(ends) == 2 and ends[0].startswith("epoch 1/2: train_loss ")
    assert "eval_accuracy" in ends[1] and "{" not in ends[1]


class _SteppingClock:
    """A clock that moves one second each time it is read: the training loop reads it once per
    step, so "seconds" are steps and the test does not depend on the machine's speed."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now


def test_a_time_budget_ends_the_run_and_the_schedule_at_the_deadline(monkeypatch):
    import prunekit.train.optim as optim

    monkeypatch.setattr(optim, "time", _SteppingClock())
    model, batches = zoo.build("mlp")
    lrs = []
    real_step = torch.optim.AdamW.step

    def step(opt, *args, **kwargs):
        lrs.append(opt.param_groups[0]["lr"])
        return real_step(opt, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    report = pk.finetune_(model, batches, epochs=100, minutes=0.5, lr=1e-2, progress=False)
    # Read at the start and before each step: after 28 steps 29 "seconds" are spent, and one
    # more step at that average (29/28 s) would end past the 30-second deadline.
    assert report.out_of_time and report.steps == 28 < 100 * len(batches)
    assert report.epochs == math.ceil(28 / len(batches)) == len(report.history)
    # The schedule follows the clock, not the 100 epochs' steps: warm-up over the first 5 % of
    # the time, then the cosine comes down to (near) zero by the deadline.
    assert max(lrs) == pytest.approx(1e-2, rel=0.05) and lrs.index(max(lrs)) <= 2
    assert lrs[-1] < 0.05 * 1e-2  # the last step starts at 28 of the 30 "seconds"
    assert all(a >= b for a, b in itertools.pairwise(lrs[2:]))


def test_without_a_budget_the_run_is_its_epochs():
    model, batches = zoo.build("mlp")
    report = pk.finetune_(model, batches, epochs=2, progress=False)
    assert not report.out_of_time and report.steps == 2 * len(batches)


def test_bf16_mixed_precision_learns_with_fp32_weights_and_the_masks_kept():
    model, batches = zoo.build("mlp")
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.5))
    zeros = _zero_masks(model)
    before = top1_accuracy(model, batches)[0]
    seen = []
    first = next(iter(select_layers(model).values()))
    hook = first.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    report = pk.finetune_(
        model, batches, epochs=20, lr=1e-2, precision="bf16", eval_data=batches, progress=False
    )
    hook.remove()
    assert seen[0] == torch.bfloat16  # the training steps ran under autocast
    assert seen[-1] == torch.float32  # evaluation did not
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert report.final_accuracy > before + 0.3
    for name, m in select_layers(model).items():
        assert torch.equal(m.weight == 0, zeros[name]), name


def test_auto_precision_is_bf16_only_where_the_cpu_has_amx(monkeypatch):
    from prunekit.train.loop import autocast

    model = torch.nn.Linear(4, 4)
    for amx in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        with autocast("auto", model):
            out = model(torch.randn(2, 4))
        assert out.dtype == (torch.bfloat16 if amx else torch.float32)
