"""Distilling a shallower encoder without a task head: sentence embeddings and token states."""

import copy

import pytest
import torch
import transformers
from torch import nn

from prunekit.distill import DistillConfig, distill_
from prunekit.errors import PrunekitError
from prunekit.measure.text import embedding_fidelity
from tests.hf_zoo import perturb_

SEQ = 12


def _bert(layers: int) -> transformers.BertModel:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    return perturb_(transformers.BertModel(config).eval())


def _batches(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Unlabelled, padded token batches (16 x 12), as a text loader in lines mode gives them."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        lengths = torch.randint(4, SEQ + 1, (16,), generator=g)
        mask = (torch.arange(SEQ) < lengths[:, None]).long()
        ids = torch.randint(3, 64, (16, SEQ), generator=g) * mask
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def _shallow(teacher: nn.Module, keep: list[int]) -> nn.Module:
    student = copy.deepcopy(teacher)
    student.encoder.layer = nn.ModuleList([student.encoder.layer[i] for i in keep])
    student.config.num_hidden_layers = len(keep)
    return student


@pytest.mark.parametrize(
    ("output_loss", "hidden"), [("cosine", None), ("mse", "auto"), ("cosine", "auto")]
)
def test_a_shallower_encoder_recovers_the_teachers_embeddings(output_loss, hidden):
    teacher = _bert(4)
    student = _shallow(teacher, [0, 3])
    keys = set(student.state_dict())
    train, val = _batches(8, 0), _batches(2, 1)
    before = embedding_fidelity(student, teacher, val)
    config = DistillConfig(alpha=1.0, output_loss=output_loss, hidden=hidden, epochs=4)
    report = distill_(student, teacher, train, config, eval_data=val, progress=False)
    after = embedding_fidelity(student, teacher, val)
    assert before < 0.85 and after > before + 0.1
    assert report.history[-1]["eval_fidelity"] == pytest.approx(after, abs=1e-5)
    assert report.history[-1]["soft_loss"] < report.history[0]["soft_loss"]
    if hidden == "auto":
        # evenly spaced, last block meets last block; same width: no projection
        assert report.pairs == [
            "encoder.layer.0=encoder.layer.1",
            "encoder.layer.1=encoder.layer.3",
        ]
        assert report.projections == []
        assert report.history[-1]["hidden_loss"] < report.history[0]["hidden_loss"]
    assert set(student.state_dict()) == keys
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in student.modules())


def test_token_states_need_an_embedding_loss_and_no_labels():
    teacher = _bert(4)
    student = _shallow(teacher, [0, 3])
    train = _batches(2, 0)
    with pytest.raises(PrunekitError, match=r"output_loss: 'kl' needs logits.*'cosine'"):
        distill_(student, teacher, train, DistillConfig(alpha=1.0), progress=False)
    labelled = [{**b, "labels": torch.zeros(16, dtype=torch.long)} for b in train]
    with pytest.raises(PrunekitError, match="set alpha=1"):
        distill_(student, teacher, labelled, DistillConfig(output_loss="cosine"), progress=False)


def test_a_causal_lm_learns_soft_targets_over_every_position():
    from prunekit.distill.step import Distiller
    from tests.hf_zoo import gpt2

    teacher = perturb_(gpt2(n_head=4), scale=0.5)
    student = perturb_(copy.deepcopy(teacher), scale=0.2, seed=1)
    train, val = ([{"input_ids": b["input_ids"]} for b in _batches(n, seed)] for n, seed in
                  ((4, 0), (2, 1)))  # fmt: skip
    config = DistillConfig(alpha=1.0, epochs=4, lr=1e-2, temperature=2.0)
    before = Distiller(teacher, config).evaluate(student, val)["eval_agreement"]
    report = distill_(student, teacher, train, config, eval_data=val, progress=False)
    soft = [h["soft_loss"] for h in report.history]
    assert soft[-1] < 0.7 * soft[0]
    assert report.history[-1]["eval_agreement"] > before + 0.05  # next-token arg-max, 0.14 → 0.24


def test_a_classifier_with_labels_uses_its_own_task_loss():
    from tests.hf_zoo import distilbert

    teacher = perturb_(distilbert(), scale=0.5)
    student = distilbert()
    train = [{**b, "labels": torch.arange(16) % 3} for b in _batches(4, 0)]
    report = distill_(student, teacher, train, DistillConfig(alpha=0.5, epochs=2), progress=False)
    first = report.history[0]
    assert first["train_loss"] == pytest.approx(0.5 * first["soft_loss"] + 0.5 * first["task_loss"])
