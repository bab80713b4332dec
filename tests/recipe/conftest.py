"""builtin:digits-cnn (trained once per session into a temporary cache) and digits loaders."""

import pytest

from prunekit.data import load_data
from prunekit.specs import load_model


@pytest.fixture(scope="session")
def digits_cnn(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRUNEKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
        model, _ = load_model("builtin:digits-cnn")
    return model


@pytest.fixture(scope="session")
def digits():
    return load_data("digits")


@pytest.fixture
def loaders(digits):
    """A function giving fresh (train, test) loaders, as a new process would build them."""
    return lambda: (
        digits.loader("train", batch_size=64, seed=0),
        digits.loader("test", batch_size=512),
    )
