"""The distillation losses against hand computation."""

import math

import pytest
import torch

from prunekit.distill.losses import (
    distillation_loss,
    mean_pool,
    output_loss,
    real_positions,
    row_loss,
)


def _kl_by_hand(student, teacher, t):
    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        zs = sum(math.exp(v / t) for v in s_row)
        zt = sum(math.exp(v / t) for v in t_row)
        for s, q in zip(s_row, t_row, strict=True):
            p_t, p_s = math.exp(q / t) / zt, math.exp(s / t) / zs
            total += p_t * (math.log(p_t) - math.log(p_s))
    return total / len(student) * t * t


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_soft_target_kl_is_kl_of_the_softened_distributions_times_t_squared(temperature):
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g) * 3
    got = float(distillation_loss(student, teacher, temperature))
    assert got == pytest.approx(_kl_by_hand(student, teacher, temperature), rel=1e-5)


def test_soft_target_kl_is_zero_for_equal_logits_and_positive_otherwise():
    logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(1))
    assert float(distillation_loss(logits, logits.clone(), 4.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(logits, logits.flip(-1), 4.0)) > 0.01
    # a per-row shift leaves the softmax unchanged
    shifted = logits + torch.arange(4.0).unsqueeze(1)
    assert float(distillation_loss(shifted, logits, 2.0)) == pytest.approx(0.0, abs=1e-5)


def test_row_losses_by_hand():
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    assert float(row_loss(s, t, "mse")) == pytest.approx((4 + 0 + 1 + 1) / 4)
    # row 1 parallel (cos 1), row 2 at 45 degrees
    assert float(row_loss(s, t, "cosine")) == pytest.approx((0 + (1 - 1 / math.sqrt(2))) / 2)
    assert float(row_loss(s, 5 * s, "cosine")) == pytest.approx(0.0, abs=1e-6)
    # t's mean square is (9 + 0 + 1 + 1) / 4: the same error on a 10x larger scale weighs alike
    assert float(row_loss(s, t, "normalized-mse")) == pytest.approx(6 / 11)
    assert float(row_loss(10 * s, 10 * t, "normalized-mse")) == pytest.approx(6 / 11)
    with pytest.raises(ValueError, match="'normalized-mse' or 'cosine'"):
        row_loss(s, t, "l1")


def test_padding_positions_are_left_out():
    states = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    rows = real_positions(states, mask)
    assert rows.shape == (6, 3)
    assert torch.equal(rows[4:], states[1, :2])
    changed = states.clone()
    changed[1, 2:] = 100.0  # only padding differs
    assert torch.allclose(mean_pool(changed, mask), mean_pool(states, mask))
    assert torch.allclose(mean_pool(states, mask)[1], states[1, :2].mean(0))
    for kind in ("mse", "cosine"):
        assert float(output_loss(changed, states, kind, 1.0, mask, pool=True)) == pytest.approx(
            0.0, abs=1e-6
        )
        assert float(output_loss(changed, states, kind, 1.0, mask)) == pytest.approx(0.0, abs=1e-6)
        assert float(output_loss(changed, states, kind, 1.0)) > 0.1  # without the mask it counts


def test_feature_maps_compare_per_pixel_channels():
    x = torch.randn(2, 3, 4, 5)
    rows = real_positions(x)
    assert rows.shape == (2 * 4 * 5, 3)
    assert torch.equal(rows[0], x[0, :, 0, 0])


def test_pooled_cosine_ignores_the_embedding_scale_but_mse_does_not():
    states = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(3))
    assert float(output_loss(2 * states, states, "cosine", 1.0, pool=True)) == pytest.approx(
        0.0, abs=1e-6
    )
    assert float(output_loss(2 * states, states, "mse", 1.0, pool=True)) > 0.0
