"""auto_compress on digits: budget, size, the user's model, the frontier, determinism."""

import pytest
import torch

from prunekit.artifact.io import artifact_size
from prunekit.auto import AutoConfig, auto_compress, build_space, pareto_front
from prunekit.errors import PrunekitError
from prunekit.measure.accuracy import top1_accuracy

FAST = {"trials": 5, "trial_epochs": 2, "final_epochs": 3}


@pytest.fixture(scope="module")
def searched(digits, digits_mlp):
    train, val, test = digits
    before = {k: v.clone() for k, v in digits_mlp.state_dict().items()}
    report = auto_compress(
        digits_mlp, train, val, AutoConfig(max_drop=2.0, **FAST), test_data=test,
        backend="local", progress=False,
    )  # fmt: skip
    return report, before


def test_chosen_model_is_smaller_and_within_budget_on_test(searched, digits):
    report, _ = searched
    test = digits[2]
    final = report.final
    assert final is not None and final.checked_on == "test" and final.within_budget
    # The figures are the returned model's own, re-measured here.
    accuracy = top1_accuracy(report.model, test)[0]
    assert accuracy == pytest.approx(final.test_accuracy)
    assert 100 * (report.baseline["test_accuracy"] - accuracy) <= report.config.max_drop
    assert artifact_size(report.model) == final.bytes < report.baseline["bytes"]
    chosen = report.trials[final.trial]
    assert chosen.choice == final.choice
    assert chosen.feasible or chosen.number in report.frontier  # promoted from the frontier
    assert final.val_drop <= report.config.max_drop
    assert 1 <= len(final.attempts) <= report.config.final_candidates
    # The chosen sparsities are the model's own, layer by layer (a pruning step that did
    # nothing once went unnoticed here: every trial's size depended only on its bits).
    layers = dict(report.model.named_modules())
    for layer, s in final.choice.layer_sparsity.items():
        weight = layers[layer].weight
        assert float((weight == 0).float().mean()) == pytest.approx(s, abs=0.01), layer


def test_every_trial_is_judged_on_validation_accuracy(searched):
    report, _ = searched
    assert len(report.trials) == report.config.trials
    base = report.baseline["val_accuracy"]
    for t in report.trials:
        assert t.drop == pytest.approx(100 * (base - t.accuracy))
        assert t.feasible == (t.drop <= report.config.max_drop)
        for layer, s in t.choice.layer_sparsity.items():
            low, high = report.space["ranges"][layer]
            assert low - 1e-9 <= s <= high + 1e-9


def test_the_users_model_is_untouched(searched, digits_mlp):
    _, before = searched
    after = digits_mlp.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_frontier_is_exactly_the_non_dominated_trials(searched):
    report, _ = searched
    points = {t.number: (t.bytes, t.accuracy) for t in report.trials}

    def dominates(a, b):
        return a[0] <= b[0] and a[1] >= b[1] and a != b

    for n, p in points.items():
        dominated = any(dominates(q, p) for m, q in points.items() if m != n)
        assert (n in report.frontier) == (not dominated), n
    assert [points[n][0] for n in report.frontier] == sorted(points[n][0] for n in report.frontier)


def test_pareto_front_on_known_points():
    points = [(10, 0.9), (5, 0.8), (7, 0.7), (5, 0.85), (12, 0.95), (12, 0.9)]
    assert pareto_front(points) == [3, 0, 4]


def test_same_seed_same_search(digits, digits_cnn):
    train, val, _ = digits
    config = AutoConfig(max_drop=3.0, trials=3, trial_epochs=1, final_epochs=1, seed=3)
    runs = [
        auto_compress(digits_cnn, train, val, config, backend="local", progress=False)
        for _ in range(2)
    ]
    a, b = ([{**t.to_dict(), "seconds": 0} for t in r.trials] for r in runs)
    assert a == b
    assert {t.choice.conv_bits for t in runs[0].trials if t.choice.quant == "kmeans"} <= set(
        range(5, 9)
    )


def test_space_is_bounded_by_the_profile(digits, digits_mlp):
    from prunekit.analyze import analyze_sensitivity

    val = digits[1]
    profile = analyze_sensitivity(
        digits_mlp, lambda m: 100 * top1_accuracy(m, val)[0], ratios=(0.5, 0.8, 0.9, 0.95),
        backend="local", progress=False,
    )  # fmt: skip
    config = AutoConfig(max_drop=1.0, one_shot_limit=5.0)
    space = build_space(profile, {"1": False, "3": False, "5": False}, config)
    for layer, (low, high) in space.ranges.items():
        assert low == profile.max_sparsity(layer, 1.0 / 3)
        assert high == max(low, profile.max_sparsity(layer, 5.0))
        assert space.start[f"sparsity:{layer}"] == low
    assert space.quant == ("kmeans",)


def test_latency_objective_offers_int8_only_where_it_applies(digits, digits_mlp):
    train, val, _ = digits
    config = AutoConfig(objective="latency", max_drop=5.0, trials=2, final_epochs=1)
    report = auto_compress(digits_mlp, train, val, config, backend="local", progress=False)
    # Every layer of this MLP is narrower than int8-dynamic's min_features.
    assert report.space["quant"] == ["none"]
    assert all(t.latency_ms > 0 for t in report.trials)


def test_bad_inputs_name_the_field(digits, digits_mlp):
    train = digits[0]
    with pytest.raises(ValueError, match="bits"):
        AutoConfig(bits=(3, 9))
    with pytest.raises(ValueError, match="max_drop"):
        AutoConfig(max_drop=0)
    with pytest.raises(PrunekitError, match="eval_data"):
        auto_compress(digits_mlp, train, [], backend="local")
