import torch
from torch import nn

import prunekit as pk
from prunekit.prune.pruner import Pruner


def test_taylor_scores_equal_a_hand_computation():
    layer = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]]))
    x1, t1 = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.0, 1.0]])
    x2, t2 = torch.tensor([[-1.0, 0.5, 2.0]]), torch.tensor([[2.0, -1.0]])

    def mse(out, target):
        return 0.5 * ((out - target) ** 2).sum()

    # L = ½‖Wx − t‖² ⇒ ∂L/∂W = (Wx − t) xᵀ; score = mean over batches of |W ⊙ ∂L/∂W|.
    w = layer.weight.detach().clone()
    expected = sum(
        (w * torch.outer((w @ x[0]) - t[0], x[0])).abs() for x, t in [(x1, t1), (x2, t2)]
    )
    expected = expected / 2

    pruner = Pruner(nn.Sequential(layer), pk.TaylorConfig(sparsity=0.5))
    pruner.calibrate([(x1, t1), (x2, t2)], mse, None)
    got = pruner.scorer.scores()["0"]
    torch.testing.assert_close(got, expected)


def test_magnitude_keeps_the_largest_weights():
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, -5.0, 0.3, -0.2]]))
    pk.prune_(nn.Sequential(layer), pk.MagnitudeConfig(sparsity=0.5))
    expected = torch.tensor([[0.0, -5.0, 0.3, 0.0]])
    assert torch.equal(layer.weight.detach(), expected)
    assert not torch.signbit(layer.weight[0, 3])  # +0.0, not -0.0


def test_random_is_deterministic_under_seed_and_differs_across_seeds():
    def run(seed):
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(32, 32))
        pk.prune_(m, pk.RandomConfig(sparsity=0.5, seed=seed))
        return m[0].weight != 0

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
