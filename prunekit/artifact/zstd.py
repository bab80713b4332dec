"""zstd frames for the packed streams, decompressed only up to the size the manifest declares."""

from __future__ import annotations

import zstandard

from prunekit.errors import PrunekitError

FAST, STRONG = 3, 19
# Level 19 wins ~10% over the fast levels on weight streams for a few ms per 100 KB; past 1 MB its
# time grows faster than its gain, so large streams stop at a middle level.
_STRONG_LIMIT, _MIDDLE = 1 << 20, 9


def compress(data: bytes, *, strong: bool = True) -> bytes:
    """One zstd frame holding ``data``, with its size in the frame header. ``strong=False``: a
    fast level, for estimating which codec wins."""
    level = FAST if not strong else STRONG if len(data) <= _STRONG_LIMIT else _MIDDLE
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(data)


def decompress(frame: bytes, size: int) -> bytes:
    """The ``size`` bytes in ``frame``; a PrunekitError for a damaged frame or any other size.

    The frame header's content size is checked first: zstandard allocates what the header
    claims, whatever ``max_output_size`` says, so a forged header could ask for terabytes."""
    try:
        claimed = zstandard.get_frame_parameters(frame).content_size
        if claimed != size:
            raise PrunekitError(f"zstd frame declares {claimed} bytes, not the {size} expected")
        data = zstandard.ZstdDecompressor().decompress(frame, max_output_size=max(size, 1))
    except zstandard.ZstdError as e:
        raise PrunekitError(f"zstd frame cannot be decoded ({e})") from None
    if len(data) != size:
        raise PrunekitError(f"zstd frame holds {len(data)} bytes, not the {size} declared")
    return data
