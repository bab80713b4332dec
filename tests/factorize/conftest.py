"""builtin:digits-cnn (trained once per session into a temporary cache) and its data."""

import pytest

import prunekit as pk


@pytest.fixture(scope="session")
def digits():
    return pk.data.load_data("digits")


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A function giving a fresh copy of the trained digits-cnn (eval mode)."""
    cache = tmp_path_factory.mktemp("cache")
    pk.models.pretrained("digits-cnn", cache_dir=cache, progress=False)
    return lambda: pk.models.pretrained("digits-cnn", cache_dir=cache, progress=False)
