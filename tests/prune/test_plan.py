import pytest
import torch

from prunekit.config import NM
from prunekit.prune import plan


@pytest.mark.parametrize("shape", [(7,), (13, 11), (6, 4, 3, 3)])
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.8, 0.95, 0.999])
def test_unstructured_mask_prunes_exactly(shape, sparsity):
    scores = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    keep = plan.unstructured_mask(scores, sparsity)
    assert keep.shape == scores.shape
    assert int((~keep).sum()) == round(sparsity * scores.numel())
    if 0 < (~keep).sum() < keep.numel():
        assert scores[~keep].max() <= scores[keep].min()


def test_ties_do_not_change_the_count():
    keep = plan.unstructured_mask(torch.ones(10, 10), 0.37)
    assert int((~keep).sum()) == 37


def test_global_masks_rank_across_layers_and_hit_the_total():
    scores = {"a": torch.arange(10.0), "b": torch.arange(10.0, 30.0)}
    masks = plan.global_masks(scores, 0.5)
    assert int((~masks["a"]).sum()) == 10  # all of "a" ranks below all of "b"
    assert int((~masks["b"]).sum()) == 5


def _groups_of(mask, m):
    return plan.nm_groups(mask, m)


@pytest.mark.parametrize("nm", [NM(2, 4), NM(4, 8), NM(1, 4)])
@pytest.mark.parametrize("shape", [(6, 16), (5, 8, 3, 3)])
def test_nm_mask_has_exactly_n_zeros_per_group(nm, shape):
    scores = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    keep = plan.nm_mask(scores, nm)
    groups = _groups_of(keep, nm.m)
    assert torch.all((~groups).sum(dim=1) == nm.n)
    # the lowest scores in each group are the ones removed
    g_scores = _groups_of(scores, nm.m)
    removed_max = g_scores.masked_fill(groups, float("-inf")).max(dim=1).values
    kept_min = g_scores.masked_fill(~groups, float("inf")).min(dim=1).values
    assert torch.all(removed_max <= kept_min)


def test_conv_groups_run_along_input_channels():
    w = torch.arange(2 * 4 * 1 * 2).reshape(2, 4, 1, 2)
    groups = plan.nm_groups(w, 4)
    # one group = the 4 input channels at a fixed (out, kh, kw) position
    assert groups[0].tolist() == w[0, :, 0, 0].tolist()
    assert torch.equal(plan.nm_ungroup(groups, w.shape), w)


def test_l2_normalisation_keeps_a_small_scale_layer_from_being_wiped_out():
    g = torch.Generator().manual_seed(0)
    scores = {
        "big": torch.rand(1000, generator=g) * 1000,
        "small": torch.rand(100, generator=g) * 1e-3,
    }
    raw = plan.global_masks(scores, 0.5)
    assert int(raw["small"].sum()) == 0  # raw scales: the whole small-scale layer goes
    normalized = plan.global_masks(plan.l2_normalized(scores), 0.5)
    assert int(normalized["small"].sum()) > 50
    assert sum(int((~m).sum()) for m in normalized.values()) == 550


def _awkward_scores(n: int, seed: int) -> torch.Tensor:
    """Few distinct values (many ties), both zeros, infinities, negatives and a NaN."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randint(-4, 5, (n,), generator=g).float() / 4
    s[torch.randperm(n, generator=g)[: n // 10]] = -0.0
    s[torch.randperm(n, generator=g)[: n // 10]] = float("-inf")
    s[3] = float("nan")
    s[5] = float("inf")
    return s


@pytest.mark.parametrize("parts", [1, 3, 7])
@pytest.mark.parametrize("k", [0, 1, 17, 150, 299, 300])
def test_find_cut_drops_what_a_stable_sort_drops(parts, k):
    scores = _awkward_scores(300, seed=k + parts)
    chunks = list(torch.tensor_split(scores, parts))
    cut = plan.find_cut(lambda: iter(chunks), k)
    kept = []
    for chunk in chunks:
        keep, cut = plan.keep_above_cut(chunk, cut)
        kept.append(keep)
    assert torch.equal(torch.cat(kept), plan.unstructured_mask(scores, k / 300))
    assert cut.ties == 0


def test_sortable_keys_order_like_the_floats():
    s = torch.tensor([float("-inf"), -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, float("inf")])
    keys = plan.sortable_keys(s)
    assert torch.all(keys[1:] >= keys[:-1])
    assert keys[3] == keys[4]  # -0.0 and +0.0 tie, as in torch.sort
    assert plan.sortable_keys(torch.tensor([float("nan")])) > keys[-1]
