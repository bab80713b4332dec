"""bf16 / fp16 models are pruned and quantized in their own dtype: each method keeps the dtype,
reaches its sparsity or bits, and gives outputs close to running the same method on an fp32
copy of the same weights."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch

import prunekit as pk
from tests.hf_zoo import llama_gqa

DTYPES = [torch.bfloat16, torch.float16]
# Relative error of the logits between the low-precision result and the fp32 one (measured:
# bf16 0.004-0.008, fp16 0.0005-0.002; pruning or 4-bit quantization itself moves them by
# 0.05-0.3). bf16 keeps 8
# bits of mantissa (~0.4 % per rounding), a two-block model compounds a few of them.
TOLERANCE = {torch.bfloat16: 0.02, torch.float16: 0.006}


def _model(dtype: torch.dtype) -> torch.nn.Module:
    model = llama_gqa(vocab_size=64, layers=2)
    return model.to(dtype)


def _calibration(n: int = 8) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(0, 64, (1, 16), generator=g)} for _ in range(n)]


def _logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _block_linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    return {
        n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n
    }


PRUNE = {
    "magnitude": lambda: pk.MagnitudeConfig(sparsity=0.5),
    "wanda": lambda: pk.WandaConfig(sparsity=0.5, num_samples=8),
    "sparsegpt": lambda: pk.SparseGPTConfig(sparsity=0.5, num_samples=8, block_size=16),
    "sparsegpt-no-refine": lambda: pk.SparseGPTConfig(
        sparsity=0.5, num_samples=8, block_size=16, refine=False
    ),
}
# SparseGPT's mask refinement (on by default) swaps weights whose errors differ by less than
# the rounding, and each swap moves the solve: measured bf16 0.024, fp16 0.011 (0.006 and 0.002
# without it), still far below the 0.13 that pruning itself moves the logits.
REFINED = {"sparsegpt": 2.5}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("method", list(PRUNE))
def test_unstructured_keeps_dtype_and_matches_fp32(method: str, dtype: torch.dtype) -> None:
    low = _model(dtype)
    ref = copy.deepcopy(low).float()
    pk.prune_(low, PRUNE[method](), data=_calibration())
    pk.prune_(ref, PRUNE[method](), data=_calibration())
    assert {p.dtype for p in low.parameters()} == {dtype}
    layers = _block_linears(low)
    zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
    total = sum(m.weight.numel() for m in layers.values())
    assert zeros == pytest.approx(0.5 * total, abs=len(layers))
    assert _rel(_logits(low), _logits(ref)) < TOLERANCE[dtype] * REFINED.get(method, 1.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_structured_keeps_dtype_and_matches_fp32(dtype: torch.dtype) -> None:
    low = _model(dtype)
    ref = copy.deepcopy(low).float()
    example = {"input_ids": torch.randint(0, 64, (1, 16))}
    config = pk.MagnitudeConfig(sparsity=0.5, pattern="channel")
    pk.prune_(low, config, example_inputs=example)
    pk.prune_(ref, config, example_inputs=example)
    assert {p.dtype for p in low.parameters()} == {dtype}
    assert low.model.layers[0].mlp.up_proj.out_features == 32  # 64 → 32
    assert _rel(_logits(low), _logits(ref)) < TOLERANCE[dtype]


QUANTIZE = {
    "rtn": lambda: pk.RTNConfig(bits=4, group_size=16),
    "gptq": lambda: pk.GPTQConfig(bits=4, group_size=16, num_samples=8, block_size=16),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("method", list(QUANTIZE))
def test_weight_only_keeps_dtype_and_matches_fp32(method: str, dtype: torch.dtype) -> None:
    low = _model(dtype)
    ref = copy.deepcopy(low).float()
    report = pk.quantize_(low, QUANTIZE[method](), data=_calibration())
    pk.quantize_(ref, QUANTIZE[method](), data=_calibration())
    assert {row.bits for row in report.layers} == {4}
    assert {p.dtype for p in low.parameters() if p.is_floating_point()} == {dtype}
    out = _logits(low)
    assert _rel(out, _logits(ref)) < TOLERANCE[dtype]


# Run in a fresh process: the peak resident memory of pytest's own process carries every earlier
# test. A LLaMA shape scaled down from the 119M-parameter check (46M parameters, 88 MiB
# in bf16: SparseGPT takes ~15 s here, GPTQ ~10 s, the others 1-3 s); a tiny model goes through
# the same call first so torch's kernels and prunekit's lazy imports are loaded before the
# measurement.
MEMORY_SCRIPT = """
import json, sys, torch, transformers
import prunekit as pk
from prunekit.memory import peak_rss
dtype, method = getattr(torch, sys.argv[1]), sys.argv[2]
def llama(**shape):
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)
    try:
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**shape)).eval()
    finally:
        torch.set_default_dtype(torch.float32)
def calibration(n, vocab):
    return [{"input_ids": torch.randint(0, vocab, (1, 128))} for _ in range(n)]
config = {
    "sparsegpt": pk.SparseGPTConfig(sparsity=0.5, num_samples=4),
    "magnitude": pk.MagnitudeConfig(sparsity=0.5),
    "magnitude-global": pk.MagnitudeConfig(sparsity=0.5, scope="global"),
    "channel": pk.MagnitudeConfig(sparsity=0.5, pattern="channel"),
    "rtn": pk.RTNConfig(bits=4, group_size=128),
    "gptq": pk.GPTQConfig(bits=4, group_size=128, num_samples=4),
}[method]
verb = pk.quantize_ if method in ("rtn", "gptq") else pk.prune_
tiny = llama(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=2,
             num_key_value_heads=2, vocab_size=100)
verb(tiny, config, data=calibration(2, 100))
# Structured pruning is fast, so it runs on the issue's ~119M class (bench.llm_memory's 134m
# shape), where the trace's fixed cost (graph objects, a few tens of MiB that vary run to run
# with the heap's fragmentation) weighs as it does on the models users bring.
shape = (dict(hidden_size=768, num_hidden_layers=12, intermediate_size=2048, num_attention_heads=12)
         if method == "channel" else
         dict(hidden_size=384, num_hidden_layers=12, intermediate_size=1024, num_attention_heads=6))
model = llama(**shape, num_key_value_heads=shape["num_attention_heads"], vocab_size=32000)
data = calibration(4, 32000)
model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
with peak_rss() as peak:
    report = verb(model, config, data=data)
print(json.dumps({
    "rise": peak.rise,
    "bytes": model_bytes,
    "dtypes": sorted({str(p.dtype) for p in model.parameters()}),
    "sparsity": getattr(report, "sparsity", None),
    "bits": sorted({row.bits for row in getattr(report, "layers", [])} if verb is pk.quantize_
                   else []),
    "verified": getattr(report, "max_diff", None) is not None,
    "widths": sorted({(b.self_attn.q_proj.out_features, b.mlp.up_proj.out_features)
                      for b in model.model.layers}),
}))
"""
MEMORY_CASES = [
    ("sparsegpt", "bfloat16"),
    ("sparsegpt", "float16"),
    ("magnitude", "bfloat16"),
    ("magnitude-global", "bfloat16"),
    ("channel", "bfloat16"),
    ("rtn", "bfloat16"),
    ("gptq", "bfloat16"),
]


@pytest.mark.skipif(
    not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's /proc peak reset"
)
@pytest.mark.parametrize(("method", "dtype"), MEMORY_CASES, ids=["-".join(c) for c in MEMORY_CASES])
def test_peak_memory_within_three_quarters_of_the_model(method: str, dtype: str) -> None:
    """Magnitude planned with every layer's float32 scores at once took 5.7x the bf16 model
    (global 12x), RTN and GPTQ 1.3x: now a layer (a part of one) at a time. Structured
    (channel, on the 134M shape) took 1.27x: the trace kept every activation and the
    equivalence check compared float64 copies of the whole outputs."""
    # A fixed mmap threshold: glibc otherwise raises it after each large free (up to 32 MiB) and
    # keeps later freed blocks cached, which moved the same SparseGPT call's peak between 0.65x
    # and 0.86x from run to run; with it, what is measured is what prunekit holds.
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, dtype, method],
        capture_output=True, text=True, env=env, check=True, timeout=600,
    )  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["dtypes"] == [f"torch.{dtype}"]
    if method in ("rtn", "gptq"):
        assert result["bits"] == [4]
    elif method == "channel":
        # Half the heads (12 → 6, 64 wide) and FFN channels (2048 → 1024) of every block,
        # rebuilt and checked against the masked model.
        assert result["widths"] == [[384, 1024]]
        assert result["verified"]
    else:
        assert result["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert result["rise"] <= 0.75 * result["bytes"], result


def test_too_large_for_memory_is_refused_before_any_change(monkeypatch) -> None:
    model = _model(torch.bfloat16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    monkeypatch.setattr("prunekit.memory.available_bytes", lambda: 1000)
    with pytest.raises(pk.PrunekitError, match=r"needs about .* GiB .* and 0.00 GiB is available"):
        pk.prune_(model, pk.SparseGPTConfig(sparsity=0.5, num_samples=8), data=_calibration())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_device_cuda_without_cuda_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = _model(torch.bfloat16)
    with pytest.raises(pk.PrunekitError, match=r"device='cuda'.*use device='auto'"):
        pk.prune_(model, pk.WandaConfig(sparsity=0.5, device="cuda"), data=_calibration())
    with pytest.raises(ValueError, match="device='gpu0' is not a torch device"):
        pk.WandaConfig(sparsity=0.5, device="gpu0")


@pytest.mark.parametrize("device", ["auto", "cpu"])
def test_device_path_gives_the_same_model(device: str) -> None:
    """On a CPU-only machine ``auto`` resolves to where the model is; ``cpu`` takes the moving
    path (blocks, their inputs and the statistics sent to the device and back)."""
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine 'auto' runs on the GPU: results differ in rounding")
    a, b = _model(torch.bfloat16), _model(torch.bfloat16)
    config = pk.SparseGPTConfig(sparsity=0.5, num_samples=8, block_size=16)
    pk.prune_(a, config, data=_calibration())
    pk.prune_(b, config.model_copy(update={"device": device}), data=_calibration())
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
