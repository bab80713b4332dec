"""What the command-line tests share: a private model cache and a Hugging Face folder with text."""

import pytest


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """PRUNEKIT_CACHE in a fresh directory: builtin models train once per test module."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRUNEKIT_CACHE", str(path))
        yield path


@pytest.fixture
def hf_text_folder(tmp_path):
    """``make(model, words_per_line, lines)``: the tiny Hugging Face ``model`` saved with a
    tokenizer of its vocabulary, and a text file of those words; returns (folder, text)."""
    from tests.models.test_hf import VOCAB, tiny_tokenizer

    def make(model, words_per_line, lines):
        folder = tmp_path / "hf"
        model.save_pretrained(str(folder))
        tiny_tokenizer(tmp_path).save_pretrained(str(folder))
        words = [w for w in VOCAB if w.isalpha()]
        text = tmp_path / "text.txt"
        text.write_text("".join(
            " ".join(words[(i * 7 + j) % len(words)] for j in range(words_per_line)) + "\n"
            for i in range(lines)
        ))  # fmt: skip
        return folder, text

    return make


@pytest.fixture
def gpt2_folder(hf_text_folder):
    """A tiny GPT-2 folder with a tokenizer, and a text file of its words."""
    from tests import hf_zoo
    from tests.models.test_hf import VOCAB

    return hf_text_folder(hf_zoo.gpt2(len(VOCAB)), words_per_line=12, lines=60)
