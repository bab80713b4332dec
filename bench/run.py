"""Every benchmark, one command: ``make bench`` (or ``python -m bench.run``).

Writes bench/results/*.md and *.json; the README quotes them.
"""

from __future__ import annotations

from bench import oneshot, unstructured

if __name__ == "__main__":
    unstructured.main([])
    oneshot.main([])
