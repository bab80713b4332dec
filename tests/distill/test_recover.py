"""``recover_``'s bound on the steps: exact, reproducible, with the schedule ending at the last
step; the time box still ends a run first when it is spent; bad bounds are refused."""

import copy

import pytest
import torch

import prunekit as pk
from prunekit.errors import PrunekitError
from tests.hf_zoo import bert, perturb_
from tests.train.test_finetune import _SteppingClock


def _text(n: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(3, 64, (8, 10), generator=g)} for _ in range(n)]


def _pruned(dense: torch.nn.Module) -> torch.nn.Module:
    model = copy.deepcopy(dense)
    pk.prune_(model, pk.MagnitudeConfig(sparsity=0.5, pattern="2:4"))
    return model


def test_max_steps_is_the_run_and_its_schedule_and_it_repeats_exactly():
    dense = perturb_(bert())
    text = _text(4)  # 6 steps: the batches once, then half of them again
    runs = [_pruned(dense) for _ in range(2)]
    zeros = {n: p == 0 for n, p in runs[0].named_parameters() if (p == 0).any()}
    assert zeros  # the 2:4 layers
    reports = [pk.recover_(m, dense, text, max_steps=6, progress=False) for m in runs]
    first = reports[0]
    assert first.steps == 6 and first.epochs == 1 and not first.out_of_time
    # The cosine ends at the sixth step, not at the time box's end.
    assert first.history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    for name, p in runs[0].named_parameters():
        if name in zeros:
            assert torch.equal(p == 0, zeros[name]), name  # the zeros stay, no others appear
    pairs = zip(runs[0].parameters(), dense.parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)  # it trained
    for a, b in zip(runs[0].parameters(), runs[1].parameters(), strict=True):
        assert torch.equal(a, b)


def test_the_time_box_still_ends_a_run_with_more_steps_than_it_holds(monkeypatch):
    import prunekit.train.optim as optim

    monkeypatch.setattr(optim, "time", _SteppingClock())  # one "second" per step
    dense = perturb_(bert())
    report = pk.recover_(_pruned(dense), dense, _text(2), minutes=0.5, max_steps=1000,
                         progress=False)  # fmt: skip
    assert report.out_of_time and 0 < report.steps < 30


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_a_bad_max_steps_is_refused_before_anything_trains(bad):
    dense = bert()
    model = copy.deepcopy(dense)
    with pytest.raises(PrunekitError, match=r"max_steps must be an integer > 0, or None; got "):
        pk.recover_(model, dense, _text(1), max_steps=bad, progress=False)
    for a, b in zip(model.parameters(), dense.parameters(), strict=True):
        assert torch.equal(a, b)
