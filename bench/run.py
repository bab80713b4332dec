"""Every benchmark, one command: ``make bench`` (or ``python -m bench.run``).

Writes bench/results/*.md and *.json; the README quotes them. The auto-compression benchmark
compares against the Deep Compression results, so it runs after them.
"""

from __future__ import annotations

from bench import (
    accelerate,
    auto,
    deep_compression,
    deploy,
    distill,
    executorch,
    finetune_defaults,
    fuzz,
    hidden_zoo,
    int8_repairs,
    llm_memory,
    lowrank,
    minilm_structured,
    oneshot,
    oneshot_recover,
    onnx,
    precision,
    quantize,
    recipes,
    reconstruct,
    record,
    smoothquant,
    structured,
    unstructured,
)

if __name__ == "__main__":
    unstructured.main([])
    structured.main([])
    reconstruct.main([])
    lowrank.main([])
    minilm_structured.main([])
    hidden_zoo.main([])
    oneshot.main([])
    oneshot_recover.main([])
    llm_memory.main([])
    deep_compression.main([])
    quantize.main([])
    int8_repairs.main([])
    smoothquant.main([])
    onnx.main([])
    executorch.main([])
    deploy.main([])
    accelerate.main([])
    distill.main([])
    finetune_defaults.main([])
    precision.main([])
    recipes.main([])
    auto.main([])
    record.main([])
    fuzz.main([])
