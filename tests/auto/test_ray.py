"""Trials on a local Ray instance give what they give in-process."""

import pytest

from prunekit.auto import AutoConfig, auto_compress


@pytest.mark.slow
def test_trials_on_ray_match_in_process(digits, digits_mlp):
    import ray

    train, val, _ = digits
    config = AutoConfig(max_drop=3.0, trials=4, trial_epochs=1, final_epochs=1, parallel=2)
    local = auto_compress(digits_mlp, train, val, config, backend="local", progress=False)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        on_ray = auto_compress(digits_mlp, train, val, config, backend="auto", progress=False)
    finally:
        ray.shutdown()
    assert on_ray.backend == "ray" and local.backend == "local"
    strip = [{**t.to_dict(), "seconds": 0} for t in local.trials]
    assert [{**t.to_dict(), "seconds": 0} for t in on_ray.trials] == strip
