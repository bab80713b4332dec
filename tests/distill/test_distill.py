"""distill_ on real small models: it teaches, and it leaves nothing behind."""

import copy

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.data import load_data
from prunekit.distill import DistillConfig, distill_
from prunekit.distill.losses import distillation_loss
from prunekit.errors import PrunekitError
from prunekit.measure.accuracy import top1_accuracy
from prunekit.registry import get_method
from prunekit.targets import select_layers


def mlp(width: int, seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))


@pytest.fixture(scope="module")
def digits():
    splits = load_data("digits")
    train = list(splits.loader("train", batch_size=64, seed=0))
    test = list(splits.loader("test", batch_size=180))
    return train, test


@pytest.fixture(scope="module")
def trained_teacher(digits):
    train, test = digits
    teacher = mlp(128)
    pk.finetune_(teacher, train, epochs=10, lr=3e-3, progress=False)
    assert top1_accuracy(teacher, test)[0] > 0.93
    return teacher


@pytest.fixture
def teacher(trained_teacher):
    return copy.deepcopy(trained_teacher)


def _agreement(student, teacher, batches):
    with torch.no_grad():
        same = sum(int((student(x).argmax(-1) == teacher(x).argmax(-1)).sum()) for x, _ in batches)
    return same / sum(len(x) for x, _ in batches)


def _kl(student, teacher, batches):
    with torch.no_grad():
        kl = sum(float(distillation_loss(student(x), teacher(x), 1.0)) for x, _ in batches)
    return kl / len(batches)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _no_hooks(model):
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        for m in model.modules()
    )


def test_a_small_student_learns_the_teacher_on_digits(digits, teacher):
    train, test = digits
    student = mlp(16)
    before = _agreement(student, teacher, test)
    config = DistillConfig(epochs=15, lr=1e-2, alpha=0.7, temperature=4.0)
    report = distill_(student, teacher, train, config, eval_data=test, progress=False)
    assert report.epochs == 15 and report.steps == 15 * len(train)
    after = _agreement(student, teacher, test)
    assert before < 0.3 and after > 0.85
    assert report.history[-1]["eval_agreement"] == pytest.approx(after)
    assert report.final_accuracy > 0.85
    losses = [h["soft_loss"] for h in report.history]
    assert losses[-1] < 0.5 * losses[0]
    assert {"task_loss", "soft_loss", "train_loss"} <= set(report.history[0])
    assert "hidden_loss" not in report.history[0]


def test_unlabelled_inputs_suffice_for_pure_distillation(digits, teacher):
    train, test = digits
    student = mlp(16)
    inputs_only = [x for x, _ in train]
    report = distill_(
        student, teacher, inputs_only, DistillConfig(epochs=8, lr=1e-2, alpha=1.0), progress=False
    )
    assert "task_loss" not in report.history[0]
    assert _agreement(student, teacher, test) > 0.8


def test_labels_are_required_when_the_task_loss_counts(digits, teacher):
    train, _ = digits
    student = mlp(16)
    before = _state(student)
    with pytest.raises(PrunekitError, match=r"alpha=0.5.*needs labels.*alpha=1"):
        distill_(student, teacher, [x for x, _ in train], DistillConfig(), progress=False)
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())


def test_different_widths_train_through_a_projection_that_is_discarded(digits, teacher):
    train, test = digits
    student = mlp(16)
    keys = set(student.state_dict())
    config = DistillConfig(epochs=3, lr=1e-2, hidden="auto", hidden_loss="mse")
    report = distill_(student, teacher, train, config, eval_data=test, progress=False)
    # auto on a plain net: the input of the last linear layer, 16 wide vs 128 wide
    assert report.pairs == ["3 (input)=3 (input)"]
    assert report.projections == ["3 (input)=3 (input): 16→128"]
    hidden = [h["hidden_loss"] for h in report.history]
    assert hidden[-1] < hidden[0]
    assert set(student.state_dict()) == keys
    assert not any(isinstance(m, nn.Linear) and m.in_features == 16 and m.out_features == 128
                   for m in student.modules())  # fmt: skip
    assert _no_hooks(student) and _no_hooks(teacher)


def test_named_pairs_and_cosine_hidden_loss(digits, teacher):
    train, _ = digits
    student = mlp(16)
    config = DistillConfig(epochs=2, lr=1e-2, hidden=["2=2"], hidden_loss="cosine")
    report = distill_(student, teacher, train, config, progress=False)
    assert report.pairs == ["2=2"] and report.projections == ["2=2: 16→128"]
    assert 0.0 <= report.history[-1]["hidden_loss"] <= 2.0


def test_the_teacher_is_frozen_during_the_run_and_put_back_after(digits, teacher):
    train, _ = digits
    teacher.train()
    teacher[1].weight.requires_grad_(True)
    teacher[3].weight.requires_grad_(False)
    before = _state(teacher)
    seen = []

    def loss_fn(logits, labels):
        seen.append((teacher.training, any(p.requires_grad for p in teacher.parameters())))
        return nn.functional.cross_entropy(logits, labels)

    distill_(mlp(16), teacher, train[:4], DistillConfig(epochs=2), loss_fn=loss_fn, progress=False)
    assert seen and all(state == (False, False) for state in seen)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert teacher.training
    assert teacher[1].weight.requires_grad and not teacher[3].weight.requires_grad
    assert all(p.grad is None for p in teacher.parameters())


def test_a_failure_mid_training_leaves_the_student_unchanged(digits, teacher):
    train, _ = digits
    student = mlp(16)
    before = _state(student)
    calls = {"n": 0}

    def loss_fn(logits, labels):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("boom")
        return nn.functional.cross_entropy(logits, labels)

    config = DistillConfig(epochs=2, hidden="auto")
    with pytest.raises(RuntimeError, match="boom"):
        distill_(student, teacher, train, config, loss_fn=loss_fn, progress=False)
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert set(student.state_dict()) == set(before)
    assert _no_hooks(student) and _no_hooks(teacher)
    assert all(p.requires_grad for p in teacher.parameters())  # flags put back


def test_pruned_weights_stay_zero_while_distilling(digits, teacher):
    train, test = digits
    student = copy.deepcopy(teacher)
    pk.prune_(student, pk.MagnitudeConfig(sparsity=0.8, scope="global"))
    zeros = {n: (m.weight == 0).clone() for n, m in select_layers(student).items()}
    pruned = top1_accuracy(student, test)[0]
    distill_(student, teacher, train, DistillConfig(epochs=2, lr=1e-3), progress=False)
    for name, m in select_layers(student).items():
        assert torch.equal(m.weight == 0, zeros[name]), name
    assert top1_accuracy(student, test)[0] > pruned  # the recovery step recovers


def test_an_unknown_hidden_module_is_named_with_some_that_exist(digits, teacher):
    train, _ = digits
    with pytest.raises(PrunekitError, match=r"student has no module 'body\.1'.*it has e\.g\. 0, 1"):
        distill_(mlp(16), teacher, train, DistillConfig(hidden=["body.1=1"]), progress=False)
    with pytest.raises(PrunekitError, match=r"teacher has no module 'layer3'"):
        distill_(mlp(16), teacher, train, DistillConfig(hidden=["3=layer3"]), progress=False)


def test_outputs_of_different_shapes_are_refused_naming_both(digits, teacher):
    train, _ = digits
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    with pytest.raises(PrunekitError, match=r"\[64, 10\].*\[64, 5\]"):
        distill_(student, teacher, train, DistillConfig(), progress=False)


def test_the_student_cannot_share_weights_with_its_teacher(teacher, digits):
    with pytest.raises(PrunekitError, match="shares 4 parameter tensors"):
        distill_(teacher, teacher, digits[0], progress=False)
    student = nn.Sequential(nn.Flatten(), teacher[1], nn.ReLU(), nn.Linear(128, 10))
    with pytest.raises(PrunekitError, match=r"shares 2 parameter tensors.*copy"):
        distill_(student, teacher, digits[0], progress=False)
    assert all(p.requires_grad for p in teacher.parameters())


def test_config_validation_names_the_field():
    for bad, field in [
        ({"alpha": 1.5}, "alpha"),
        ({"temperature": 0}, "temperature"),
        ({"hidden": ["no-equals-sign"]}, "hidden"),
        ({"hidden_loss": "l1"}, "hidden_loss"),
        ({"output_loss": "ce"}, "output_loss"),
        ({"epochs": 0}, "epochs"),
        ({"tempreature": 2.0}, "tempreature"),
    ]:
        with pytest.raises(ValueError, match=field):
            DistillConfig(**bad)
    config = DistillConfig(hidden=["a = b", "c=d"], alpha=1.0, output_loss="cosine")
    assert config.pairs == [("a", "b"), ("c", "d")]
    assert DistillConfig(**config.to_dict()) == config


def test_registered_as_the_kd_distill_method():
    info = get_method("kd")
    assert info.kind == "distill" and info.config is DistillConfig and info.impl is distill_
    assert info.needs_data
    assert "kd" in {m.name for m in pk.methods("distill")}


def test_a_weight_shared_student_trains_its_codebooks_and_keeps_its_indices(digits, teacher):
    train, test = digits
    student = copy.deepcopy(teacher)
    pk.share_weights_(student, pk.KMeansConfig(bits=2))
    layer = student[1]
    indices, codebook = layer.indices.clone(), layer.codebook.detach().clone()
    shared = _kl(student, teacher, test)
    distill_(student, teacher, train, DistillConfig(epochs=2, lr=1e-3), progress=False)
    assert torch.equal(layer.indices, indices)
    assert not torch.equal(layer.codebook.detach(), codebook)
    # What distillation trains for (accuracy moves by a sample or two either way here).
    assert _kl(student, teacher, test) < 0.8 * shared


def test_a_qat_student_distils(digits, teacher):
    train, test = digits
    student = copy.deepcopy(teacher)
    pk.quantize_(student, pk.QATConfig(bits=4))
    keys = set(student.state_dict())
    report = distill_(
        student, teacher, train, DistillConfig(epochs=2, hidden="auto"), eval_data=test,
        progress=False,
    )  # fmt: skip
    assert report.projections == []  # same width: the classifier inputs are compared directly
    assert report.history[-1]["eval_agreement"] > 0.9
    assert set(student.state_dict()) == keys
