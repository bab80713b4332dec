"""The fuzz campaign of ``python -m bench.fuzz``, smaller: mutated artifacts (bit flips,
truncation, manifest and config.json edits at any JSON path, resealed and not, files swapped for
FIFOs and links), hostile Hugging Face configs, recipes and method configs. Every case loads and
runs one forward, or is refused with a PrunekitError; none crashes, hangs, allocates past the
bound, loads an unsealed edit or imports a folder's code.

Cases run in forked workers, each bounded in memory; the per-case timeout only tells a hang from
a result (a generous one: it measures nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzzing import engine
from tests.fuzzing.bases import build_bases
from tests.fuzzing.cases import TARGETS

BOUNDS = engine.Bounds(memory_mb=1024, timeout=300)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    return build_bases(tmp_path_factory.mktemp("fuzz") / "bases")


def _failures(tally: engine.Tally) -> str:
    lines = []
    for key, group in tally.failures.items():
        case = group["examples"][0]
        lines.append(f"{key} ({group['count']}x), e.g. case {case['index']}: {case['detail']}")
    return "\n".join(lines)


def test_fuzzed_artifacts_and_configs_load_or_are_refused_cleanly(bases, tmp_path: Path) -> None:
    tally = engine.run(bases, 400, seed=0, scratch=tmp_path, bounds=BOUNDS)
    assert tally.failed() == 0, _failures(tally)
    assert set(tally.counts) == set(TARGETS)  # every target was reached
    assert tally.total("loaded") > 0 and tally.total("refused") > tally.total() // 2


@pytest.mark.slow
def test_fuzz_campaign_of_two_thousand_cases(bases, tmp_path: Path) -> None:
    tally = engine.run(bases, 2000, seed=1, scratch=tmp_path, bounds=BOUNDS)
    assert tally.total() == 2000
    assert tally.failed() == 0, _failures(tally)
