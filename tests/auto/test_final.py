"""Which retrained configuration is delivered: promotion along the frontier, fallbacks."""

from prunekit.auto import AutoConfig
from prunekit.auto.final import finalize
from prunekit.auto.report import Final, TrialRecord
from prunekit.auto.space import Choice


def _record(number, size, feasible):
    choice = Choice({"fc": number / 100})
    return TrialRecord(number, choice, 0.9, 0.0, size, None, 0, 0, feasible, 0.0)


class FakeRetrain:
    """Retraining where configurations up to ``holds`` bytes keep the budget."""

    def __init__(self, holds, final_candidates=3):
        self.config = AutoConfig(final_candidates=final_candidates)
        self.holds = holds
        self.calls = []

    def __call__(self, record):
        self.calls.append(record.number)
        ok = record.bytes >= self.holds
        drop = 0.5 if ok else 3.0
        return Final(record.number, record.choice, 0.9, drop, record.bytes, None, ok), object()


RECORDS = [_record(0, 500, True), _record(1, 300, True), _record(2, 200, False),
           _record(3, 100, False), _record(4, 400, False)]  # fmt: skip
FRONTIER = [RECORDS[3], RECORDS[2], RECORDS[1], RECORDS[0]]


def test_cheaper_frontier_trials_are_promoted_while_they_hold():
    retrain = FakeRetrain(holds=200)
    final, _ = finalize(retrain, RECORDS, FRONTIER)
    assert retrain.calls == [1, 2, 3]  # cheapest feasible, then cheaper, most accurate first
    assert final.trial == 2 and final.within_budget
    assert [a["trial"] for a in final.attempts] == [1, 2, 3]


def test_a_miss_falls_back_to_costlier_feasible_trials():
    retrain = FakeRetrain(holds=500)
    final, _ = finalize(retrain, RECORDS, FRONTIER)
    assert retrain.calls == [1, 0]
    assert final.trial == 0 and final.within_budget


def test_retraining_stops_at_final_candidates():
    retrain = FakeRetrain(holds=0, final_candidates=2)
    final, _ = finalize(retrain, RECORDS, FRONTIER)
    assert retrain.calls == [1, 2] and final.trial == 2


def test_nothing_feasible_returns_nothing():
    retrain = FakeRetrain(holds=0)
    assert finalize(retrain, [_record(0, 10, False)], []) == (None, None)
    assert retrain.calls == []


def test_when_none_holds_the_least_dropping_is_flagged():
    retrain = FakeRetrain(holds=10_000)
    final, _ = finalize(retrain, RECORDS, FRONTIER)
    assert not final.within_budget and retrain.calls == [1, 0]
