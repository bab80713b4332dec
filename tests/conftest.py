import os

import pytest

# OpenMP threads spin while waiting; on a shared 2-core machine that slowed torch 50-100x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Bit-for-bit results at any thread count from MKL's matrix products (its strict conditional
# reproducibility mode; AVX2: every x86 CPU these run on has it). Without it, on Intel Xeons
# MKL splits a product's sums by thread count, so a 1-thread Ray worker and a 2-thread process
# trained to different bits; on AMD EPYC they agreed. The tests check prunekit's own
# reductions, which must not depend on the thread count. Read when MKL starts: before torch.
os.environ.setdefault("MKL_CBWR", "AVX2,STRICT")


# A user's model file for py:FILE.py:FUNCTION specs: a digits-sized MLP.
FACTORY = """
import torch
from torch import nn

def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
"""


@pytest.fixture
def factory(tmp_path):
    """The path of a user's model file; its ``make`` builds the MLP (``py:{path}:make``)."""
    path = tmp_path / "net.py"
    path.write_text(FACTORY)
    return path


@pytest.fixture(scope="module")
def pruned_digits_dir(tmp_path_factory):
    """A channel-pruned DigitsCNN saved by pk.save: its manifest names the digits dataset, which
    the export commands read their example inputs from."""
    import torch

    import prunekit as pk
    from prunekit.models import DigitsCNN

    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x = torch.randn(4, 1, 8, 8)
    pk.prune_(model, pk.MagnitudeConfig(pattern="channel", sparsity=0.5), example_inputs=(x,))
    return pk.save(model, tmp_path_factory.mktemp("run") / "model")
