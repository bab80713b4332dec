"""The surgery contract on every zoo model: pruning units gives exactly the outputs of the
unpruned model with those units' slices zeroed, and parameters/MACs drop as planned."""

import copy

import pytest
import torch

import prunekit as pk
from prunekit.data.batches import batch_size
from prunekit.measure.counting import count_params
from prunekit.measure.macs import count_macs
from prunekit.prune.structured.trace import run_model
from tests import hf_zoo, zoo

# Models where no unit can be removed without changing the outputs, and why.
UNPRUNABLE = {
    # Global Response Normalization divides every channel by the mean over all channels.
    "convnext_v2": "nothing in this model can be removed",
}

# FlopCounterMode cannot see nn.TransformerEncoderLayer's fused eval-mode kernel.
MACS_INVISIBLE = {"attention"}


def _hand_made(name):
    model, batches = zoo.build(name)
    return model.eval(), batches[0][0]


def _hf(name):
    model, inputs = hf_zoo.ZOO[name]()
    # Hugging Face initialises some parameters to constants (zero position tables, unit layer
    # scales): perturb them so a wrong slice cannot hide behind equal values.
    return hf_zoo.perturb_(model), inputs


CASES = [(n, _hand_made) for n in [*zoo.ZOO, *zoo.COUPLINGS]] + [(n, _hf) for n in hf_zoo.ZOO]


def masked_reference(model, plan, inputs):
    masked = copy.deepcopy(model)
    tensors = {**dict(masked.named_parameters()), **dict(masked.named_buffers())}
    with torch.no_grad():
        for name, dims in plan.items():
            for d, idx in dims.items():
                tensors[name].index_fill_(int(d), torch.tensor(idx), 0)
        return run_model(masked, inputs)


@pytest.mark.parametrize("name,build", CASES, ids=[n for n, _ in CASES])
def test_pruned_equals_masked(name, build):
    model, inputs = build(name)
    dense = copy.deepcopy(model)
    config = pk.MagnitudeConfig(sparsity=0.5, pattern="channel", verify=False)
    if name in UNPRUNABLE:
        with pytest.raises(pk.PrunekitError, match=UNPRUNABLE[name]):
            pk.prune_(model, config, example_inputs=inputs)
        for a, b in zip(model.state_dict().values(), dense.state_dict().values(), strict=True):
            assert torch.equal(a, b)
        return
    report = pk.prune_(model, config, example_inputs=inputs)
    assert report.applied and report.plan
    reference = masked_reference(dense, report.plan, inputs)
    with torch.no_grad():
        outputs = run_model(model.eval(), inputs)
    assert len(outputs) == len(reference)
    for out, ref in zip(outputs, reference, strict=True):
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    # Parameters really went, as planned; MACs as PyTorch's own counter sees them.
    assert count_params(model) == report.params[1] < report.params[0] == count_params(dense)
    if name not in MACS_INVISIBLE:
        batch = batch_size(inputs)
        assert count_macs(dense, inputs).dense / batch == pytest.approx(report.macs[0], rel=0.02)
        assert count_macs(model, inputs).dense / batch == pytest.approx(report.macs[1], rel=0.02)
    assert not model._forward_hooks and not model._forward_pre_hooks
