"""Quantized models go through pk.save / pk.load (safetensors, no pickle) with identical outputs."""

import pytest
import torch

import prunekit as pk
from prunekit import quantize as q
from tests import hf_zoo
from tests.zoo import CNNBN, MLP, build

CASES = {
    "int8-dynamic": ("mlp", MLP, q.Int8DynamicConfig(min_features=0)),
    "rtn": ("mlp", MLP, q.RTNConfig(bits=3, group_size=16, symmetric=False)),
    "gptq": ("mlp", MLP, q.GPTQConfig(bits=4, group_size=16, num_samples=32)),
    "int8-static": ("cnn-bn", CNNBN, q.Int8StaticConfig(num_samples=16)),
    "qat": ("cnn-bn", CNNBN, q.QATConfig()),
}


@pytest.mark.parametrize("key", list(CASES))
def test_save_load_identical(key, tmp_path):
    zoo, cls, config = CASES[key]
    model, batches = build(zoo)
    q.quantize_(model, config, data=batches)
    if key == "qat":
        pk.finetune_(model, batches, epochs=1, progress=False)
        q.convert_(model)
    x = batches[0][0]
    with torch.no_grad():
        out = model.eval()(x)
    pk.save(model, tmp_path / "m")
    back = pk.load(tmp_path / "m", model=cls())
    with torch.no_grad():
        assert torch.equal(back(x), out)


def test_hugging_face_model_reopens_by_itself(tmp_path):
    model, inputs = hf_zoo.ZOO["gpt2"]()
    q.quantize_(model, q.Int8DynamicConfig(min_features=0))
    with torch.no_grad():
        out = model(**inputs).logits
    pk.save(model, tmp_path / "m")
    back = pk.load(tmp_path / "m")
    assert isinstance(back.transformer.h[0].attn.c_attn, q.Int8Linear)
    with torch.no_grad():
        assert torch.equal(back(**inputs).logits, out)


def test_shared_weights_quantize_to_int8_and_round_trip(tmp_path):
    # A recipe may share weights (k-means) and then quantize: the shared layers become int8
    # layers whose weights are the codebook values on the int8 grid; zeros stay zero.
    model, batches = build("mlp")
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.8))
    pk.share_weights_(model, pk.KMeansConfig(bits=4))
    x = batches[0][0]
    with torch.no_grad():
        shared_out = model.eval()(x)
        shared_w = {n: m.weight.clone() for n, m in model.named_modules() if hasattr(m, "codebook")}
    report = q.quantize_(model, q.Int8DynamicConfig(min_features=0))
    assert {r.name for r in report.layers} == set(shared_w)
    for name, w in shared_w.items():
        layer = model.get_submodule(name)
        assert isinstance(layer, q.Int8Linear)
        assert torch.equal(layer.weight == 0, w == 0)
        assert torch.allclose(layer.weight, w, atol=layer.scale.max().item())
    with torch.no_grad():
        out = model(x)
    assert torch.nn.functional.cosine_similarity(out, shared_out).min() > 0.99
    pk.save(model, tmp_path / "m")
    back = pk.load(tmp_path / "m", model=MLP())
    with torch.no_grad():
        assert torch.equal(back(x), out)
