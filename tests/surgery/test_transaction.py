"""transaction(model): copies past memory_limit go to a temporary file and still restore the
model exactly; nothing is kept after the block."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.surgery.transaction import transaction


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("limit", [0, 1000, 1 << 30], ids=["file", "split", "memory"])
def test_failed_block_restores_values_bit_for_bit(dtype: torch.dtype, limit: int) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 20), nn.Linear(20, 3)).to(dtype)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="boom"), transaction(model, memory_limit=limit) as tx:
        tx.protect(model.parameters())
        spilled = tx._file is not None
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(0)
        raise RuntimeError("boom")
    assert spilled == (limit < 1 << 30)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(v.dtype == dtype for v in model.state_dict().values())


def test_success_keeps_the_changes_and_drops_the_copies() -> None:
    model = nn.Linear(8, 8)
    with transaction(model, memory_limit=0) as tx:
        tx.protect([model.weight])
        with torch.no_grad():
            model.weight.zero_()
    assert tx._file is None and not tx._values
    assert int(model.weight.count_nonzero()) == 0
