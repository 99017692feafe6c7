"""Preprocessed arrays on disk: blosc2 (compressed, chunked per slice, fast to crop from).

Each array is stored with one chunk per slice and small blocks, so that cropping a patch
decompresses only the blocks it touches (a 48x48 LR + 96x96 HR crop takes well under 1 ms).
"""

from __future__ import annotations

import os
from pathlib import Path

import blosc2
import numpy as np

from mrisr.utilities.file_io import atomic_path

SUFFIX = ".b2nd"


def _blocks(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    b = 64 if np.dtype(dtype).itemsize >= 4 else 96
    return (1, min(b, shape[1]), min(b, shape[2]))


def save_array(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a (z, y, x) array atomically as a compressed blosc2 file."""
    arr = np.ascontiguousarray(array)
    if arr.ndim != 3:
        raise ValueError(f"expected a (z, y, x) array, got shape {arr.shape}")
    with atomic_path(path, suffix=SUFFIX) as tmp:
        os.unlink(tmp)  # blosc2 creates the file itself
        blosc2.asarray(
            arr,
            urlpath=str(tmp),
            mode="w",
            chunks=(1, arr.shape[1], arr.shape[2]),
            blocks=_blocks(arr.shape, arr.dtype),
            cparams={"codec": blosc2.Codec.ZSTD, "clevel": 3, "nthreads": 1},
        )


def open_array(path: str | os.PathLike):
    """Open for reading; slicing the result returns numpy arrays (only touched blocks decoded)."""
    return blosc2.open(str(path), mode="r", mmap_mode="r")


def load_array(path: str | os.PathLike) -> np.ndarray:
    return open_array(path)[...]


def exists(path: str | os.PathLike) -> bool:
    return Path(path).is_file()
