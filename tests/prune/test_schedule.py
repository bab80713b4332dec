import pytest

from prunekit.prune.schedule import AGP, Iterative, OneShot, agp_sparsity, iterative_sparsity


def test_agp_follows_the_cubic_formula():
    si, sf, t0, n, dt = 0.1, 0.9, 100, 10, 20
    assert agp_sparsity(t0, si, sf, t0, n, dt) == pytest.approx(si)
    assert agp_sparsity(t0 + n * dt, si, sf, t0, n, dt) == pytest.approx(sf)
    assert agp_sparsity(t0 + n * dt + 500, si, sf, t0, n, dt) == pytest.approx(sf)
    mid = agp_sparsity(t0 + 5 * dt, si, sf, t0, n, dt)
    assert mid == pytest.approx(sf + (si - sf) * 0.5**3)  # 0.8
    t = t0 + 3 * dt
    assert agp_sparsity(t, si, sf, t0, n, dt) == pytest.approx(
        sf + (si - sf) * (1 - (t - t0) / (n * dt)) ** 3
    )


def test_agp_schedule_updates_every_frequency_steps_and_ends_at_final():
    sched = AGP(initial_sparsity=0.0, start=0.0, end=0.5, num_updates=5)
    targets = {t: sched.target(t, 100, 0.8) for t in range(100)}
    updates = {t: s for t, s in targets.items() if s is not None}
    assert list(updates) == [0, 10, 20, 30, 40, 50]
    assert updates[0] == 0.0 and updates[50] == pytest.approx(0.8)
    values = list(updates.values())
    assert values == sorted(values)


@pytest.mark.parametrize("total", [1, 2, 3, 7, 100])
@pytest.mark.parametrize("end", [0.75, 1.0])
def test_agp_reaches_the_final_sparsity_on_a_step_that_runs(total, end):
    # With fewer steps than num_updates (or end=1.0) the last update fell after the last step:
    # a 2-step movement run ended at 14% sparsity instead of 50%.
    sched = AGP(end=end, num_updates=10)
    updates = [s for s in (sched.target(t, total, 0.5) for t in range(total)) if s is not None]
    assert updates[-1] == pytest.approx(0.5)
    assert updates == sorted(updates)


def test_iterative_rounds_remove_the_same_fraction_of_what_is_left():
    values = [iterative_sparsity(r, 3, 0.875) for r in (1, 2, 3)]
    assert values == pytest.approx([0.5, 0.75, 0.875])
    sched = Iterative(rounds=3)
    updates = {t: sched.target(t, 30, 0.875) for t in range(30) if sched.target(t, 30, 0.875)}
    assert list(updates) == [0, 10, 20]


def test_oneshot_prunes_once_at_the_start():
    assert OneShot().target(0, 10, 0.9) == 0.9
    assert all(OneShot().target(t, 10, 0.9) is None for t in range(1, 10))


def test_agp_rejects_end_before_start():
    with pytest.raises(ValueError, match="end must be after start"):
        AGP(start=0.5, end=0.2)
