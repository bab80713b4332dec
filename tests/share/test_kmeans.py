"""The pure k-means codebook functions."""

import pytest
import torch

from prunekit.share import cluster, decode, index_dtype


def _sparse_weight(shape=(32, 48), sparsity=0.6, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    w[torch.rand(shape, generator=g) < sparsity] = 0.0
    return w


@pytest.mark.parametrize("bits", [1, 3, 5, 8])
def test_at_most_2_to_bits_values_and_zeros_kept(bits):
    w = _sparse_weight()
    cb = cluster(w, bits)
    shared = cb.decode()
    assert cb.codebook.shape == (2**bits,) and cb.codebook.dtype == torch.float32
    assert cb.indices.shape == w.shape and cb.indices.dtype == index_dtype(bits)
    assert torch.equal(cb.indices == 0, w == 0)
    assert torch.equal(shared == 0, w == 0)
    assert shared[w != 0].unique().numel() == cb.clusters <= 2**bits
    assert torch.all(cb.codebook[: cb.clusters].diff() > 0), "codebook ascending, all used"
    assert torch.all(cb.codebook[cb.clusters :] == 0)


def test_each_weight_gets_a_nearby_value():
    w = _sparse_weight()
    cb = cluster(w, 4)
    err = (w - cb.decode()).abs().max()
    spread = w[w != 0].max() - w[w != 0].min()
    assert err < spread / 2**4


def test_more_bits_lower_error():
    w = _sparse_weight(sparsity=0.0)
    errors = [float((w - cluster(w, b).decode()).norm() / w.norm()) for b in (2, 4, 6, 8)]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 0.01


def test_few_distinct_values_kept_exactly():
    w = torch.tensor([[0.0, 0.5, -0.25], [0.5, 0.0, 1.0]])
    cb = cluster(w, 5)
    assert cb.clusters == 3
    assert torch.equal(cb.decode(), w)


def test_all_zero_weight():
    cb = cluster(torch.zeros(4, 4), 3)
    assert cb.clusters == 0 and torch.equal(cb.decode(), torch.zeros(4, 4))


def test_linear_init_is_deterministic_and_ignores_seed():
    w = _sparse_weight(sparsity=0.3)
    a, b = cluster(w, 5, "linear", seed=0), cluster(w, 5, "linear", seed=7)
    assert torch.equal(a.codebook, b.codebook) and torch.equal(a.indices, b.indices)


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_other_inits_deterministic_given_seed(init):
    w = _sparse_weight(sparsity=0.3)
    a, b = cluster(w, 4, init, seed=3), cluster(w, 4, init, seed=3)
    assert torch.equal(a.codebook, b.codebook) and torch.equal(a.indices, b.indices)


def test_index_dtype():
    assert [index_dtype(b) for b in range(1, 9)] == [torch.uint8] * 7 + [torch.int16]


def test_decode_sums_gradients_per_cluster():
    codebook = torch.tensor([-1.0, 2.0, 3.0], requires_grad=True)
    indices = torch.tensor([[0, 1, 2], [2, 2, 3]], dtype=torch.uint8)
    upstream = torch.tensor([[10.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    w = decode(codebook, indices)
    assert torch.equal(w.detach(), torch.tensor([[0.0, -1.0, 2.0], [2.0, 2.0, 3.0]]))
    (w * upstream).sum().backward()
    assert torch.equal(codebook.grad, torch.tensor([1.0, 2.0 + 3.0 + 4.0, 5.0]))
