"""Mask refinement (DSnoT-style swaps) on real layer inputs: lower reconstruction error, the
same count of zeros, the N:M pattern kept; and through ``prune_`` on a Hugging Face model."""

import pytest
import torch

import prunekit as pk
from prunekit.config import NM
from prunekit.prune.methods.sparsegpt import sparsegpt_prune, sparsegpt_solve
from prunekit.prune.methods.wanda import wanda_mask
from prunekit.prune.refine import refine_mask, row_errors
from tests import hf_zoo


def _layer_inputs():
    """A real layer and its real inputs: the FFN output layer of a tiny BERT's first block
    (K=64), fed 16 sequences of 12 tokens."""
    model = hf_zoo.bert(vocab_size=64)
    layer = model.encoder.layer[0].output.dense
    seen = []
    handle = layer.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    with torch.no_grad():
        model(input_ids=torch.randint(0, 64, (16, 12), generator=torch.Generator().manual_seed(0)))
    handle.remove()
    x = seen[0].reshape(-1, seen[0].shape[-1])
    return layer.weight.detach().clone(), x


def _nm(pattern):
    return NM(*map(int, pattern.split(":"))) if pattern != "unstructured" else None


def _check_pattern(w_hat, keep, nm, zeros):
    assert int((~keep).sum()) == zeros
    assert torch.equal(w_hat == 0, ~keep)
    if nm is not None:
        assert torch.all((~keep).reshape(-1, nm.m).sum(dim=1) == nm.n)


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_refining_wanda_lowers_every_row_error_and_keeps_the_pattern(pattern):
    w, x = _layer_inputs()
    nm = _nm(pattern)
    gram = x.t() @ x / len(x)
    keep = wanda_mask(w, (x**2).sum(0), 0.5, nm, "row")
    before = row_errors(w, w * keep, gram)
    w_hat, new_keep, swaps = refine_mask(w, w * keep, keep, gram, nm, iterations=50)
    after = row_errors(w, w_hat, gram)
    assert swaps > 0
    assert torch.all(after <= before + 1e-5) and after.sum() < 0.95 * before.sum()
    _check_pattern(w_hat, new_keep, nm, int((~keep).sum()))
    assert torch.equal(keep.sum(dim=1), new_keep.sum(dim=1))  # swaps stay within a row
    # Wanda's rule holds after refinement too: kept weights keep their dense values.
    assert torch.equal(w_hat[new_keep], w[new_keep])


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_refined_sparsegpt_with_resolved_weights_reconstructs_better(pattern):
    w, x = _layer_inputs()
    nm = _nm(pattern)
    h = 2 * x.t() @ x / len(x)
    plain, keep = sparsegpt_solve(w, h, 0.5, nm, block_size=32)
    _, new_keep, _ = refine_mask(w, plain, keep, h, nm)
    resolved = sparsegpt_prune(w, h, 0.5, nm, block_size=32, keep=new_keep)
    assert not torch.equal(new_keep, keep)
    assert row_errors(w, resolved, h).sum() < row_errors(w, plain, h).sum()
    _check_pattern(resolved, new_keep, nm, w.numel() // 2)


def test_a_fixed_mask_is_obeyed_exactly():
    w, x = _layer_inputs()
    keep = torch.rand(w.shape, generator=torch.Generator().manual_seed(1)) > 0.3
    out = sparsegpt_prune(w, 2 * x.t() @ x / len(x), 0.9, keep=keep)
    assert torch.equal(out != 0, keep)


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_prune_with_refine_reaches_the_exact_sparsity_and_pattern(method, pattern):
    model = hf_zoo.bert(vocab_size=64)
    data = [{"input_ids": torch.randint(0, 64, (8, 12), generator=torch.Generator().manual_seed(i))}
            for i in range(2)]  # fmt: skip
    cls = pk.WandaConfig if method == "wanda" else pk.SparseGPTConfig
    amount = {"sparsity": 0.5} if pattern == "unstructured" else {"pattern": pattern}
    report = pk.prune_(model, cls(**amount, refine=True, num_samples=16), data=data)
    assert report.sparsity == pytest.approx(0.5, abs=1e-9)
    for block in model.encoder.layer:
        for layer in (block.attention.self.query, block.intermediate.dense, block.output.dense):
            zeros = layer.weight == 0
            assert int(zeros.sum()) == layer.weight.numel() // 2
            if pattern == "2:4":
                assert torch.all(zeros.reshape(-1, 4).sum(dim=1) == 2)


def test_refine_iterations_is_validated():
    with pytest.raises(ValueError, match="refine_iterations"):
        pk.SparseGPTConfig(sparsity=0.5, refine_iterations=0)
