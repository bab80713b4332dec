"""share_weights_: the contract on the zoo, codebook fine-tuning, rollback and rebuilding."""

import copy
import json

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.measure.counting import count_params, per_layer_sparsity
from prunekit.measure.macs import count_macs
from prunekit.share import KMeansConfig, SharedLayer, share_weights_
from prunekit.share import api as share_api
from prunekit.surgery import swaps
from prunekit.targets import select_layers
from tests import zoo


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _run(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


def _shared(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, SharedLayer)}


def _distinct_nonzeros(layer):
    w = layer.weight.detach()
    return w[w != 0].unique().numel()


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("model_name", list(zoo.ZOO))
def test_conformance_8_bits(model_name):
    model, batches = zoo.build(model_name)
    x = batches[0][0]
    dense_out = _run(model, x)
    linear_convs = {n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}

    report = share_weights_(model, KMeansConfig(bits=8))

    out = _run(model, x)
    assert out.shape == dense_out.shape and torch.isfinite(out).all()
    assert _rel(out, dense_out) < 0.02
    shared = _shared(model)
    assert set(shared) == linear_convs - set(report.skipped)
    assert [r.name for r in report.layers] == list(shared)
    for name, layer in shared.items():
        assert _distinct_nonzeros(layer) <= 256, name
        assert layer.codebook.shape == (256,) and layer.indices.dtype == torch.int16
    assert all(r.error < 0.01 for r in report.layers)
    record = swaps.swap_record(model)
    assert [(e["module"], e["kind"]) for e in record] == [(n, "shared") for n in shared]
    json.dumps(record)
    json.dumps(report.to_dict())


@pytest.mark.parametrize("model_name", ["mlp", "cnn-bn", "grouped-concat", "attention"])
def test_replay_and_load_reproduce_outputs_exactly(model_name):
    model, batches = zoo.build(model_name)
    x = batches[0][0]
    share_weights_(model, KMeansConfig(bits=4, conv_bits=6))
    fresh, _ = zoo.build(model_name, seed=1)
    swaps.replay_swaps_(fresh, swaps.swap_record(model))
    assert {k: (v.shape, v.dtype) for k, v in fresh.state_dict().items()} == {
        k: (v.shape, v.dtype) for k, v in model.state_dict().items()
    }
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(_run(fresh, x), _run(model, x))
    assert swaps.swap_record(fresh) == swaps.swap_record(model)


def test_pruned_zeros_preserved_exactly():
    model, _ = zoo.build("cnn-bn")
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.7))
    zeros = {n: (m.weight == 0).clone() for n, m in select_layers(model).items()}
    report = share_weights_(model, KMeansConfig(bits=3))
    for name, layer in _shared(model).items():
        assert torch.equal(layer.weight == 0, zeros[name]), name
        assert torch.equal(layer.indices == 0, zeros[name]), name
        assert _distinct_nonzeros(layer) <= 8
    assert all(abs(r.zeros / r.numel - 0.7) < 0.01 for r in report.layers)


def test_conv_bits_honoured():
    model, _ = zoo.build("cnn-bn")
    report = share_weights_(model, KMeansConfig(bits=4, conv_bits=6))
    assert report.bits == {"features.0": 6, "features.3": 6, "head": 4}
    assert model.features[3].codebook.numel() == 64 and model.head.codebook.numel() == 16
    assert swaps.swap_record(model)[-1]["args"] == {"bits": 4, "layer": "Linear"}


def test_linear_init_deterministic():
    a, _ = zoo.build("mlp")
    b = copy.deepcopy(a)
    share_weights_(a, KMeansConfig(bits=5))
    share_weights_(b, KMeansConfig(bits=5, seed=123))
    assert _same(_state(a), _state(b))


def test_targets_and_ignore():
    model, _ = zoo.build("cnn-bn")
    report = share_weights_(model, KMeansConfig(targets=["Conv2d"], ignore=["features.3"]))
    assert list(_shared(model)) == ["features.0"]
    assert [r.name for r in report.layers] == ["features.0"]
    assert isinstance(model.features[3], nn.Conv2d) and isinstance(model.head, nn.Linear)


def test_tied_weight_left_dense_and_tied():
    model, _ = zoo.build("tied-lm")
    report = share_weights_(model, KMeansConfig(bits=6))
    assert "head" in report.skipped and "embed" in report.skipped["head"]
    assert isinstance(model.head, nn.Linear) and model.head.weight is model.embed.weight
    assert set(_shared(model)) == {"mlp.0", "mlp.2"}
    assert "skipped head: weight tied to embed" in str(report)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"bits": 0}, "bits"),
        ({"bits": 9}, "bits"),
        ({"conv_bits": 0}, "conv_bits"),
        ({"conv_bits": 9}, "conv_bits"),
        ({"init": "density"}, "init"),
        ({"max_iter": 0}, "max_iter"),
        ({"bitz": 4}, "bitz"),
    ],
)
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field) as e:
        KMeansConfig(**kwargs)
    value = str(next(iter(kwargs.values())))
    assert value in str(e.value)


def test_config_round_trips():
    config = KMeansConfig(bits=4, conv_bits=8, init="kmeans++", ignore=["head"], seed=2)
    assert KMeansConfig(**config.to_dict()) == config


def test_bad_selectors_leave_model_untouched():
    model, _ = zoo.build("mlp")
    before = _state(model)
    with pytest.raises(pk.PrunekitError, match="targets"):
        share_weights_(model, KMeansConfig(targets=["nope"]))
    assert _same(before, _state(model)) and not swaps.swap_record(model)


def test_failure_midway_leaves_model_unchanged(monkeypatch):
    model, batches = zoo.build("cnn-bn")
    x = batches[0][0]
    before, out = _state(model), _run(model, x)
    modules = dict(model.named_modules())
    real_swap, calls = swaps.swap_, {"n": 0}

    def failing_swap(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return real_swap(*args, **kwargs)

    monkeypatch.setattr(share_api.swaps, "swap_", failing_swap)
    with pytest.raises(RuntimeError, match="boom"):
        share_weights_(model, KMeansConfig(bits=3))
    assert calls["n"] == 3
    assert dict(model.named_modules()).keys() == modules.keys()
    assert all(model.get_submodule(n) is m for n, m in modules.items())
    assert _same(before, _state(model)) and not swaps.swap_record(model)
    assert torch.equal(_run(model, x), out)


def test_sharing_twice_says_so():
    model, _ = zoo.build("mlp")
    share_weights_(model)
    with pytest.raises(pk.PrunekitError, match="already share"):
        share_weights_(model)


@pytest.mark.parametrize("model_name", ["mlp", "attention"])
def test_finetune_trains_codebooks_with_indices_and_zeros_fixed(model_name):
    # attention: nn.MultiheadAttention reads out_proj.weight itself, which must train too.
    model, batches = zoo.build(model_name)
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.5))
    share_weights_(model, KMeansConfig(bits=3))
    shared = _shared(model)
    codebooks = {n: m.codebook.detach().clone() for n, m in shared.items()}
    indices = {n: m.indices.clone() for n, m in shared.items()}
    pk.finetune_(model, batches, epochs=2, lr=1e-2, progress=False)
    for name, layer in _shared(model).items():
        assert layer is shared[name]
        assert not torch.equal(layer.codebook.detach(), codebooks[name]), name
        assert torch.equal(layer.indices, indices[name]), name
        assert torch.equal(layer.weight == 0, indices[name] == 0), name
        assert _distinct_nonzeros(layer) <= 8


def test_finetune_on_conv_model_keeps_codebooks():
    # finetune_ runs conv models in channels_last: the 4-D indices buffer goes through it too.
    model, batches = zoo.build("cnn-bn")
    share_weights_(model, KMeansConfig(bits=2))
    indices = {n: m.indices.clone() for n, m in _shared(model).items()}
    pk.finetune_(model, batches, epochs=1, lr=1e-2, progress=False)
    for name, layer in _shared(model).items():
        assert torch.equal(layer.indices, indices[name])
        assert layer.indices.is_contiguous()
        assert _distinct_nonzeros(layer) <= 4


def test_codebook_gradient_is_the_per_cluster_sum():
    model, batches = zoo.build("mlp")
    share_weights_(model, KMeansConfig(bits=4))
    layer = model.net[1]
    x = batches[0][0].flatten(1)
    layer(x).square().sum().backward()
    w = layer.weight.detach().requires_grad_()
    nn.functional.linear(x, w, layer.bias).square().sum().backward()
    expected = torch.stack([w.grad[layer.indices == k + 1].sum() for k in range(16)])
    torch.testing.assert_close(layer.codebook.grad, expected)


def test_hf_conv1d():
    import transformers

    from tests.hf_zoo import gpt2

    model = gpt2()
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    dense = model(input_ids=ids).logits.detach()
    report = share_weights_(model, KMeansConfig(bits=8))
    conv1d = transformers.pytorch_utils.Conv1D
    assert not any(isinstance(m, conv1d) for m in model.modules())
    assert {r.kind for r in report.layers} == {"Conv1D"}
    assert "lm_head" in report.skipped  # tied to the token embedding
    attn = model.transformer.h[0].attn.c_attn
    assert attn.transposed and attn.indices.shape == (32, 96)
    with torch.no_grad():
        out = model(input_ids=ids).logits
    assert _rel(out, dense) < 0.02
    fresh = gpt2()
    swaps.replay_swaps_(fresh, swaps.swap_record(model))
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(input_ids=ids).logits, out)


def test_report_table_and_dict():
    model, _ = zoo.build("cnn-bn")
    report = share_weights_(model, KMeansConfig(bits=5))
    text = str(report)
    assert "features.0" in text and "head" in text and "rel. error" in text
    d = report.to_dict()
    assert d["method"] == "kmeans" and d["config"]["bits"] == 5
    assert [row["name"] for row in d["layers"]] == ["features.0", "features.3", "head"]
    assert set(report.clusters.values()) <= {32} | set(range(1, 32))
    assert report.seconds > 0


def test_counting_and_macs_run_on_a_shared_model():
    model, batches = zoo.build("cnn-bn")
    x = batches[0][0][:1]
    dense_macs, params = count_macs(model, x).dense, count_params(model)
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.5))
    share_weights_(model, KMeansConfig(bits=4))
    # Counted as the weights they represent, not as codebooks and index buffers.
    assert count_params(model) == params
    assert count_macs(model, x).dense == dense_macs
    assert per_layer_sparsity(model) == pytest.approx(
        {"features.0": 0.5, "features.3": 0.5, "head": 0.5}, abs=0.01
    )


def test_inference_gathers_the_weight_once_and_follows_codebook_changes():
    layer = nn.Linear(16, 8)
    model = nn.Sequential(layer)
    share_weights_(model, KMeansConfig(bits=3))
    shared = model[0]
    x = torch.randn(4, 16)
    with torch.no_grad():
        first = shared.weight
        assert shared.weight is first  # kept while nothing changed
        y = model(x)
        shared.codebook.mul_(2.0)  # an in-place edit (an optimizer step, load_state_dict)
        assert torch.equal(shared.weight, 2.0 * first)
        assert torch.allclose(model(x), 2.0 * (y - shared.bias) + shared.bias, atol=1e-5)
    # With gradients on, the weight is gathered afresh and the codebook trains.
    model(x).sum().backward()
    assert shared.codebook.grad is not None and shared.codebook.grad.abs().sum() > 0
    assert "_decoded" not in shared.state_dict()


def test_finetuning_shared_layers_gives_the_same_bits_at_any_thread_count():
    # The per-cluster gradient sum was an accumulating scatter whose order depended on the
    # thread count: 1 and 2 threads ended up to 2.7e-5 apart after fine-tuning.
    def run(threads: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(784, 300), torch.nn.ReLU(), torch.nn.Linear(300, 10)
        )
        pk.share_weights_(model, pk.KMeansConfig(bits=4))
        shared = model[0].codebook.detach().clone()
        g = torch.Generator().manual_seed(1)
        data = [
            (torch.randn(64, 784, generator=g), torch.randint(0, 10, (64,), generator=g))
            for _ in range(4)
        ]
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            pk.finetune_(model, data, epochs=1, lr=1e-2, progress=False)
        finally:
            torch.set_num_threads(previous)
        return shared, {k: v.clone() for k, v in model.state_dict().items()}

    (shared, one), (_, several) = run(1), run(4)
    assert not torch.equal(one["0.codebook"], shared)  # it trained
    assert all(torch.equal(one[k], several[k]) for k in one)
