"""Quantization: int8 post-training (dynamic, static), weight-only low-bit (RTN, GPTQ), QAT."""
