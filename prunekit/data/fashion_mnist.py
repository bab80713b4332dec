"""Fashion-MNIST read from its four IDX files (Debian's ``dataset-fashion-mnist``, or a folder).

IDX layout (big-endian): two zero bytes, a dtype code, the number of dimensions, one uint32 per
dimension, then the values in row-major order.
"""

from __future__ import annotations

import functools
import gzip
import logging
import struct
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from prunekit.data.splits import DataSplits
from prunekit.errors import DataNotFoundError, PrunekitError

logger = logging.getLogger(__name__)

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MEAN, STD = 0.2860, 0.3530  # of the train images scaled to [0, 1]
NUM_CLASSES = 10

# IDX dtype code -> numpy dtype; multi-byte values are big-endian.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of one IDX file into an array of its declared shape and dtype.

    Raises PrunekitError naming ``source`` when the header is malformed or the payload size does
    not match the dimensions.
    """
    if len(raw) < 4:
        raise PrunekitError(f"{source}: not an IDX file (only {len(raw)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise PrunekitError(
            f"{source}: not an IDX file (magic {raw[:4].hex()}); expected 0000 + dtype code "
            f"{{08,09,0b,0c,0d,0e}} + ndim; re-download or reinstall the file"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise PrunekitError(f"{source}: IDX header truncated ({len(raw)} bytes, need {header})")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise PrunekitError(
            f"{source}: IDX payload is {len(raw) - header} bytes but shape {tuple(shape)} of "
            f"{dtype} needs {expected}; the file is truncated or corrupt"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzip-compressed (``.gz``) or not, into a native-endian array."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":  # the gzip magic: trust the content, not the file name
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as err:
        raise PrunekitError(f"{path}: cannot read IDX file ({err})") from err
    return parse_idx(raw, source=str(path))


def _find(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=4)
def _arrays(directory: Path) -> dict[str, np.ndarray]:
    # Cached: decoding 60k gzipped images takes about a second and callers load data repeatedly.
    paths = {key: _find(directory, stem) for key, stem in FILES.items()}
    missing = [FILES[key] for key, path in paths.items() if path is None]
    if missing:
        what = (
            f"folder {directory} does not exist"
            if not directory.is_dir()
            else f"{directory} lacks {', '.join(missing)} (plain or .gz)"
        )
        raise DataNotFoundError(
            f"fashion-mnist: {what}; install the data with `apt-get install "
            f"dataset-fashion-mnist`, or pass `fashion-mnist:DIR` with a folder holding the four "
            f"IDX files"
        )
    logger.info("decoding Fashion-MNIST from %s", directory)
    arrays = {key: read_idx(path) for key, path in paths.items()}  # type: ignore[arg-type]
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise PrunekitError(
                f"fashion-mnist: {split} images {images.shape} and labels {labels.shape} do not "
                f"match; expected [N, 28, 28] and [N] from {directory}"
            )
    return arrays


def load_fashion_mnist(directory: str | Path | None = None) -> DataSplits:
    """Fashion-MNIST as ``[N, 1, 28, 28]`` float inputs and int64 labels (60k train, 10k test).

    ``directory`` holds the four IDX files (gzipped or not); default the Debian package's folder.
    Inputs are scaled to [0, 1] then normalised with the usual mean 0.2860 and std 0.3530.
    """
    directory = Path(directory).expanduser().resolve() if directory else DEFAULT_DIR
    arrays = _arrays(directory)

    def tensors(split: str) -> TensorDataset:
        images = torch.from_numpy(arrays[f"{split}_images"]).unsqueeze(1)
        inputs = (images.float() / 255.0 - MEAN) / STD
        return TensorDataset(inputs, torch.from_numpy(arrays[f"{split}_labels"]).long())

    train, test = tensors("train"), tensors("test")
    return DataSplits(
        name="fashion-mnist",
        train=train,
        test=test,
        num_classes=NUM_CLASSES,
        input_shape=tuple(train.tensors[0].shape[1:]),
    )
