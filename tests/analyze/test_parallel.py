"""map_trials: in-process by default, on Ray when a cluster is there, same results either way."""

import os

import pytest

import prunekit as pk
from prunekit.analyze import analyze_sensitivity, map_trials
from prunekit.analyze.parallel import choose_backend


def _square(x):
    return x * x


def _fail_on_three(x):
    if x == 3:
        raise ValueError(f"trial {x} failed")
    return x


def test_local_keeps_order_and_runs_here():
    assert map_trials(_square, range(6), backend="local", progress=False) == [0, 1, 4, 9, 16, 25]
    assert map_trials(lambda _: os.getpid(), [0], backend="local", progress=False) == [os.getpid()]
    assert map_trials(_square, [], backend="local") == []


def test_auto_stays_in_process_without_a_cluster(monkeypatch):
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if ray.is_initialized():
        pytest.skip("a Ray instance is running in this process")
    assert choose_backend("auto") == "local"


def test_errors_name_the_argument():
    with pytest.raises(pk.PrunekitError, match="backend must be one of auto, ray, local"):
        map_trials(_square, [1], backend="dask")
    with pytest.raises(pk.PrunekitError, match="num_workers must be at least 1; got 0"):
        map_trials(_square, [1], num_workers=0)
    with pytest.raises(ValueError, match="trial 3 failed"):
        map_trials(_fail_on_three, range(5), backend="local", progress=False)


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_gives_the_local_results_in_order(local_ray, trained, accuracy):
    assert choose_backend("auto") == "ray"  # ray.init was called: auto uses it
    pids = map_trials(lambda _: os.getpid(), range(4), backend="auto", progress=False)
    assert os.getpid() not in pids  # the trials ran in Ray's worker processes
    items = list(range(9))
    assert map_trials(_square, items, "ray", num_workers=2, progress=False) == [
        _square(i) for i in items
    ]
    with pytest.raises(ValueError, match="trial 3 failed"):
        map_trials(_fail_on_three, range(5), backend="ray", num_workers=2, progress=False)
    # The sweep itself: the model travels to the workers, the results match in-process ones.
    kwargs = {"ratios": (0.5, 0.9), "layers": ["conv1", "fc"], "progress": False}
    remote = analyze_sensitivity(trained, accuracy, backend="ray", **kwargs)
    local = analyze_sensitivity(trained, accuracy, backend="local", **kwargs)
    assert remote == local
