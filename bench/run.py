"""Every benchmark, one command: ``make bench`` (or ``python -m bench.run``).

Writes bench/results/*.md and *.json; the README quotes them.
"""

from __future__ import annotations

from bench import deep_compression, minilm_structured, oneshot, quantize, structured, unstructured

if __name__ == "__main__":
    unstructured.main([])
    structured.main([])
    minilm_structured.main([])
    oneshot.main([])
    deep_compression.main([])
    quantize.main([])
