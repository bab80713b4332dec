"""Wanda and SparseGPT: the math against direct references, and block-by-block pruning of
Hugging Face transformers built from small configs (no download)."""

import pytest
import torch
import transformers
from torch import nn

import prunekit as pk
from prunekit.config import NM
from prunekit.prune.allocation import (
    error_curve,
    exact_counts,
    owl_sparsities,
    sensitivity_sparsities,
    sparsity_grid,
)
from prunekit.prune.methods.sparsegpt import sparsegpt_prune
from prunekit.prune.methods.wanda import wanda_mask, wanda_scores
from prunekit.prune.plan import row_masks
from tests import hf_zoo


def _layer_problem(seed=0, out=32, k=64, n=512):
    """A layer and inputs with a few outlier features, as LLM activations have."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, k, generator=g)
    mix = torch.randn(k, k, generator=g) / k**0.5
    x = torch.randn(n, k, generator=g) @ (torch.eye(k) + mix)  # correlated features
    x[:, [1, 18, 39, 54]] *= 20.0  # outlier channels, in different N:M groups
    return w, x


def _error(w, w_hat, x):
    return float(((x @ w.t()) - (x @ w_hat.t())).norm())


@pytest.mark.parametrize("pattern", ["unstructured", "2:4", "4:8"])
def test_sparsegpt_reconstructs_better_than_wanda_than_magnitude(pattern):
    w, x = _layer_problem()
    nm = NM(*map(int, pattern.split(":"))) if pattern != "unstructured" else None
    sq = (x**2).sum(0)
    h = 2 * x.t() @ x / x.shape[0]
    magnitude = pk.prune.plan.plan_masks({"w": w.abs()}, 0.5, nm)["w"]
    e_mag = _error(w, w * magnitude, x)
    e_wanda = _error(w, w * wanda_mask(w, sq, 0.5, nm, "row"), x)
    w_sgpt = sparsegpt_prune(w, h, 0.5, nm, block_size=16)
    e_sgpt = _error(w, w_sgpt, x)
    assert e_sgpt < e_wanda < e_mag
    assert int((w_sgpt == 0).sum()) == w.numel() // 2
    if nm is not None:
        groups = w_sgpt.reshape(-1, nm.m)
        assert torch.all((groups == 0).sum(dim=1) == nm.n)


def test_wanda_scores_equal_a_hand_computation():
    w = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.5, -0.5]])
    x = torch.tensor([[1.0, 0.0, 2.0], [3.0, 4.0, 0.0]])
    sq = (x**2).sum(0)  # [10, 16, 4] → norms [√10, 4, 2]
    expected = torch.tensor([[10**0.5, 8.0, 6.0], [0.5 * 10**0.5, 2.0, 1.0]])
    torch.testing.assert_close(wanda_scores(w, sq), expected)
    keep = wanda_mask(w, sq, 1 / 3, None, "row")  # one per row goes: the lowest of each row
    assert keep.tolist() == [[False, True, True], [True, True, False]]


def test_row_masks_are_exact_in_total_and_even_across_rows():
    scores = torch.rand(7, 10, generator=torch.Generator().manual_seed(0))
    keep = row_masks(scores, 0.55)
    assert int((~keep).sum()) == round(0.55 * 70)
    per_row = (~keep).sum(dim=1)
    assert int(per_row.max() - per_row.min()) <= 1


def test_sparsegpt_with_no_pruning_returns_the_weights():
    w, x = _layer_problem()
    out = sparsegpt_prune(w, 2 * x.t() @ x / len(x), 0.0)
    torch.testing.assert_close(out, w)


def test_owl_allocation_is_exact_and_favours_outlier_layers():
    sparsities = owl_sparsities([0.01, 0.05, 0.02], 0.5, 0.08)
    assert sparsities[1] == min(sparsities) and sparsities[0] == max(sparsities)
    assert max(sparsities) - min(sparsities) == pytest.approx(0.16)
    counts = exact_counts(sparsities, [100, 300, 200], 0.5)
    assert sum(counts) == 300


def test_error_curve_sums_each_rows_smallest_errors_over_the_total():
    saliency = torch.tensor([[1.0, 2.0, 3.0, 4.0], [8.0, 0.0, 1.0, 1.0]])  # total 20
    # s = 0.5: rows lose {1, 2} and {0, 1}: (3 + 1) / 20; s = 0.375 is halfway to s = 0.25's
    # {1} and {0}: (1 + 0) / 20.
    curve = error_curve(saliency, [0.0, 0.25, 0.375, 0.5, 1.0])
    assert curve == pytest.approx([0.0, 0.05, 0.125, 0.2, 1.0])


def test_sensitivity_allocation_is_exact_bounded_and_spares_the_costly_layer():
    grid = sparsity_grid(0.5, 0.15)
    assert grid[0] == pytest.approx(0.35) and grid[-1] == pytest.approx(0.65) and 0.5 in grid
    g = torch.Generator().manual_seed(0)
    flat = torch.rand(64, 100, generator=g) + 1.0  # every weight matters about as much
    tailed = torch.rand(64, 100, generator=g) ** 8  # a few weights carry the layer
    middle = torch.rand(64, 100, generator=g) ** 2
    curves = [error_curve(s, grid) for s in (flat, tailed, middle)]
    sizes = [6400, 12800, 6400]
    sparsities = sensitivity_sparsities(curves, sizes, grid, 0.5)
    assert sparsities[0] < sparsities[2] < sparsities[1]
    assert all(0.35 <= s <= 0.65 for s in sparsities)
    assert sum(s * n for s, n in zip(sparsities, sizes, strict=True)) == pytest.approx(12800)
    assert sum(exact_counts(sparsities, sizes, 0.5)) == 12800
    # Identical curves: nothing to gain from moving away from the target.
    same = sensitivity_sparsities([curves[2]] * 3, sizes, grid, 0.5)
    assert same == pytest.approx([0.5] * 3)


class _TwoInputs(nn.Module):
    """Two layers side by side, each reading its own half of the input."""

    def __init__(self, k=16):
        super().__init__()
        self.k = k
        self.spread = nn.Linear(k, k)
        self.peaked = nn.Linear(k, k)

    def forward(self, x):
        return torch.cat([self.spread(x[:, : self.k]), self.peaked(x[:, self.k :])], dim=1)


@pytest.mark.parametrize("method", [pk.WandaConfig, pk.SparseGPTConfig])
@pytest.mark.parametrize("lam", [0.15, 0.05])
def test_sensitivity_prunes_the_layer_whose_inputs_carry_more_signal_less(method, lam):
    torch.manual_seed(0)
    model = _TwoInputs().eval()
    x = torch.randn(256, 32)
    x[:, 16:] *= 0.01  # the second layer's signal sits in two of its 16 inputs
    x[:, [16, 17]] *= 100.0
    config = method(sparsity=0.5, allocation="sensitivity", sensitivity_lambda=lam, num_samples=4)
    report = pk.prune_(model, config, data=[x[i : i + 64] for i in range(0, 256, 64)])
    allocation = report.extra["allocation"]
    assert allocation["spread"] == pytest.approx(0.5 - lam, abs=1 / 256)
    assert allocation["peaked"] == pytest.approx(0.5 + lam, abs=1 / 256)
    assert report.zeros == 256 == report.numel // 2
    assert int((model.spread.weight == 0).sum()) == round(allocation["spread"] * 256)


def test_sensitivity_leaves_n_m_patterns_as_they_are():
    # N:M fixes every layer's sparsity, so there is nothing to allocate (as with OWL).
    torch.manual_seed(0)
    model = _TwoInputs().eval()
    x = torch.randn(64, 32)
    x[:, 18:] *= 0.01
    config = pk.WandaConfig(pattern="2:4", allocation="sensitivity")
    report = pk.prune_(model, config, data=[x])
    assert report.extra["allocation"] == {"spread": 0.5, "peaked": 0.5}
    for layer in (model.spread, model.peaked):
        assert torch.all((layer.weight.reshape(-1, 4) == 0).sum(dim=1) == 2)


# --- whole transformers, block by block --------------------------------------------------------


def _gpt2():
    return hf_zoo.gpt2(n_head=4)


def _tokens(n=8, length=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (n, length), generator=g)
    return [
        {"input_ids": ids[i : i + 4], "attention_mask": torch.ones(4, length, dtype=torch.long)}
        for i in range(0, n, 4)
    ]


def _outputs(model, batches):
    with torch.no_grad():
        out = model(**batches[0])
    return (
        out.logits if hasattr(out, "logits") and out.logits is not None else out.last_hidden_state
    )


@pytest.mark.parametrize(
    "build", [_gpt2, hf_zoo.llama_gqa, hf_zoo.bert], ids=["gpt2", "llama-gqa", "bert"]
)
@pytest.mark.parametrize(
    "config",
    [
        pk.WandaConfig(sparsity=0.5),
        pk.SparseGPTConfig(pattern="2:4"),
        pk.WandaConfig(sparsity=0.6, allocation="owl"),
        pk.SparseGPTConfig(sparsity=0.6, allocation="sensitivity", num_samples=8),
    ],
    ids=["wanda", "sparsegpt-2:4", "wanda-owl", "sparsegpt-sensitivity"],
)
def test_transformers_prune_block_by_block(build, config):
    model = build()
    data = _tokens()
    embed = model.get_input_embeddings().weight.detach().clone()
    before = _outputs(model, data)
    report = pk.prune_(model, config, data=data)
    after = _outputs(model, data)
    assert after.shape == before.shape and torch.isfinite(after).all()
    assert not torch.equal(after, before)
    assert torch.equal(
        model.get_input_embeddings().weight, embed
    )  # embeddings (and tied head) kept
    assert report.layers and all(".0." in r.name or ".1." in r.name for r in report.layers)
    if config.allocation == "uniform":
        for r in report.layers:
            assert r.zeros == round(config.target_sparsity * r.numel)
    else:
        assert report.zeros == round(config.target_sparsity * report.numel)
    for m in model.modules():
        assert not m._forward_pre_hooks and not m._forward_hooks


def test_calibrated_pruning_is_deterministic():
    a, b = _gpt2(), _gpt2()
    pk.prune_(a, pk.SparseGPTConfig(sparsity=0.5), data=_tokens())
    pk.prune_(b, pk.SparseGPTConfig(sparsity=0.5), data=_tokens())
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), n


@pytest.mark.parametrize(
    ("config", "data", "message"),
    [
        (pk.WandaConfig(), None, "needs calibration batches"),
        (pk.SparseGPTConfig(pattern="2:4", targets=["re:c_attn"]), "ok", "not divisible by 4"),
    ],
)
def test_bad_input_leaves_the_transformer_untouched(config, data, message):
    model = _gpt2()
    if "not divisible" in message:  # make c_attn's input width 30: not divisible by 4
        model = transformers.GPT2LMHeadModel(
            transformers.GPT2Config(n_layer=2, n_embd=30, n_head=3, vocab_size=64, n_positions=32)
        ).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(pk.PrunekitError, match=message):
        pk.prune_(model, config, data=_tokens() if data else None)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_multihead_attention_out_proj_is_skipped_not_guessed():
    block = nn.TransformerEncoderLayer(16, nhead=4, dim_feedforward=32, batch_first=True).eval()
    data = [torch.randn(4, 6, 16) for _ in range(2)]
    out_proj = block.self_attn.out_proj.weight.detach().clone()
    report = pk.prune_(block, pk.WandaConfig(sparsity=0.5), data=data)
    assert "self_attn.out_proj" in report.skipped
    assert torch.equal(block.self_attn.out_proj.weight, out_proj)
    assert report.per_layer["linear1"] == 0.5


def test_calibration_reads_its_samples_once_so_every_pass_sees_the_same_ones():
    # OWL's dense pass, the probe for uncalled layers and the pruning pass all read the data; a
    # one-shot generator (or a shuffling loader, which draws a new order each time) must give
    # them the same samples.
    data = _tokens(n=16)
    config = pk.WandaConfig(sparsity=0.5, num_samples=8, allocation="owl")
    a, b = _gpt2(), _gpt2()
    pk.prune_(a, config, data=data)
    pk.prune_(b, config, data=(batch for batch in data))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("dampening", [1e300, float("inf")])
def test_sparsegpt_refuses_a_dampening_too_large_to_invert(dampening):
    # torch's _LinAlgError came through as it was.
    w, x = _layer_problem()
    with pytest.raises(pk.PrunekitError, match="dampening"):
        sparsegpt_prune(w, 2 * x.t() @ x / len(x), 0.5, dampening=dampening)
