"""mkdocs hooks (see mkdocs.yml): fill the generated blocks of each page, and publish the
benchmark results of bench/results/ under results/ so the benchmark page can link them."""

from __future__ import annotations

import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gendocs  # scripts/ is no package: the line above makes it importable

RESULTS = gendocs.ROOT / "bench" / "results"
PUBLISHED = (".md", ".png")


def on_files(files: Files, config) -> Files:
    for path in sorted(RESULTS.iterdir()):
        if path.suffix in PUBLISHED:
            files.append(File.generated(config, f"results/{path.name}", abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    return gendocs.fill(markdown)
