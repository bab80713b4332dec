"""Every benchmark, one command: ``make bench`` (or ``python -m bench.run``)."""

from __future__ import annotations

from bench import unstructured

if __name__ == "__main__":
    unstructured.main([])
