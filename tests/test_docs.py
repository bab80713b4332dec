"""The docs cannot drift from the code: every ```python block of docs/*.md and README.md runs,
every `prunekit …` command they show exists with the options shown, the generated methods
table of README.md is current, every public name has an API entry, and the site builds with
`mkdocs build --strict`."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
# A fence at the start of a line, its language, its body (up to the closing fence).
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)


def _gendocs():
    spec = importlib.util.spec_from_file_location("gendocs", ROOT / "scripts" / "gendocs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def blocks(page: Path, lang: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of each fenced block of ``lang`` in ``page``."""
    text = page.read_text()
    return [
        (text.count("\n", 0, m.start()) + 2, m["body"])
        for m in FENCE.finditer(text)
        if m["lang"] == lang
    ]


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


PYTHON_PAGES = [p for p in PAGES if blocks(p, "python")]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One model cache for every page: each built-in model trains once (digits-cnn: seconds)."""
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=_name)
def test_python_snippets_run(page, cache, tmp_path, monkeypatch):
    # The blocks of one page run in order in one namespace (later ones build on earlier ones),
    # in an empty working directory, so "out/model" and friends land in tmp_path.
    monkeypatch.setenv("PRUNEKIT_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for line, code in blocks(page, "python"):
        exec(compile(code, f"{_name(page)}:{line}", "exec"), namespace)


def shell_commands(page: Path) -> list[tuple[int, list[str]]]:
    """Each ``prunekit …`` command of the page's bash blocks, as words (comments dropped,
    continuation lines joined)."""
    found = []
    for line, code in blocks(page, "bash"):
        joined = re.sub(r"\\\n", " ", code)
        for offset, command in enumerate(joined.splitlines()):
            words = shlex.split(command, comments=True)
            if words[:1] == ["prunekit"]:
                found.append((line + offset, words))
    return found


def test_shown_commands_exist():
    known = _gendocs().subcommands()
    shown = [(p, line, words) for p in PAGES for line, words in shell_commands(p)]
    assert shown, "no prunekit command found in any bash block"
    bad = []
    for page, line, words in shown:
        where = f"{_name(page)}:{line}"
        if len(words) < 2 or words[1] not in known:
            bad.append(f"{where}: {' '.join(words[:2])} is no subcommand ({sorted(known)})")
            continue
        options = {w.split("=")[0] for w in words[2:] if w.startswith("--")}
        unknown = sorted(options - known[words[1]])
        bad += [f"{where}: prunekit {words[1]} has no option {o}" for o in unknown]
    assert not bad, "\n".join(bad)


def test_readme_generated_blocks_are_current():
    stale = _gendocs().stale()
    assert not stale, f"stale: {stale}; run python scripts/gendocs.py"


def test_every_public_name_has_an_api_entry():
    import prunekit

    documented = set(re.findall(r"^::: prunekit\.(\w+)", (DOCS / "api.md").read_text(), re.M))
    modules_and_constants = {"data", "models", "__version__"}
    missing = set(prunekit.__all__) - modules_and_constants - documented
    assert not missing, f"docs/api.md lacks ::: prunekit.NAME for {sorted(missing)}"
    assert not documented - set(prunekit.__all__), "docs/api.md documents names not exported"


def test_cli_reference_covers_every_subcommand():
    gendocs = _gendocs()
    reference = gendocs.cli_reference()
    for name in gendocs.subcommands():
        assert f"## prunekit {name}\n" in reference
    assert "<!-- generated:cli -->" in (DOCS / "cli.md").read_text()
    assert "<!-- generated:methods -->" in (DOCS / "methods.md").read_text()


def test_mkdocs_build_strict(tmp_path):
    import mkdocs  # noqa: F401  - installed by `make test`: missing means a broken install
    import mkdocstrings  # noqa: F401

    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    methods = (site / "methods" / "index.html").read_text()
    import prunekit

    for m in prunekit.methods():
        assert f"<code>{m.name}</code>" in methods
    assert "prunekit prune" in (site / "cli" / "index.html").read_text()
    assert (site / "results" / "structured" / "index.html").is_file()
