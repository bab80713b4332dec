"""What every benchmark shares: the machine it ran on and how results are written."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    """The facts a reader needs to judge the numbers."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


def write(
    name: str, payload: dict[str, Any], markdown: str, folder: Path = RESULTS
) -> tuple[Path, Path]:
    """``results/NAME.json`` and ``results/NAME.md`` (or in ``folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    js, md = folder / f"{name}.json", folder / f"{name}.md"
    js.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    md.write_text(markdown.rstrip() + "\n")
    return js, md
