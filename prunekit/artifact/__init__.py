"""Encodings that make the artifact small and load back bit for bit.

A tensor is stored as a layout plus symbol streams (``tensors``): ``dense``, ``bitmask`` (a
1-bit mask, then the non-zero values) or ``relative`` (Deep Compression's 4/5/8-bit gaps with
zero fillers, then the values). Integer values (codebook indices, int8 weights, packed codes)
are offset by their minimum and bit-packed at the width their range needs; float values are
split into byte planes. Every stream is then kept as packed bits, zstd, or a canonical Huffman
code, whichever is smallest (``streams``). The streams of a tensor are one uint8 tensor in a
safetensors file (``container``); ``manifest.json`` records the chain per tensor and stream
(``manifest``), and every step of decoding checks sizes, widths and code tables against it.
"""
