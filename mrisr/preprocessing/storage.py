"""Preprocessed arrays on disk: blosc2 (compressed, chunked per slice, fast to crop from).

Each array is stored with one chunk per slice and small blocks, so that cropping a patch
decompresses only the blocks it touches (``benchmarks/bench_crop.py`` times a crop).
"""

from __future__ import annotations

import os
from pathlib import Path

import blosc2
import numpy as np

from mrisr.utilities.errors import MrisrError
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


def _damaged(path: str | os.PathLike, why: str) -> MrisrError:
    return MrisrError(
        f"{path}: damaged preprocessed array ({why}); re-run mrisr_plan_and_preprocess "
        "(it redoes the case; --clean redoes all)"
    )


def open_array(path: str | os.PathLike):
    """Open for reading; slicing the result returns numpy arrays (only touched blocks decoded).

    Only a blosc2 frame holding a numeric n-d array is accepted (never a pickle or another
    object): anything else is a one-line MrisrError naming the file and the fix.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise _damaged(path, e.strerror or str(e)) from None
    if b"b2frame" not in head:
        raise _damaged(path, "not a blosc2 frame")
    try:
        arr = blosc2.open(str(path), mode="r", mmap_mode="r")
    except Exception as e:  # blosc2 raises RuntimeError/ValueError/... for damaged frames
        raise _damaged(path, type(e).__name__) from None
    if not isinstance(arr, blosc2.NDArray) or np.dtype(arr.dtype).kind not in "biuf":
        raise _damaged(path, f"holds {type(arr).__name__}, not a numeric array")
    return arr


def load_array(path: str | os.PathLike) -> np.ndarray:
    arr = open_array(path)
    try:
        return arr[...]
    except Exception as e:  # a frame damaged after its header
        raise _damaged(path, type(e).__name__) from None


def intact(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a whole, decodable array (a re-run of preprocessing redoes a case
    with a damaged one, not only one whose raw scan changed)."""
    try:
        load_array(path)
    except MrisrError:
        return False
    return True


def exists(path: str | os.PathLike) -> bool:
    return Path(path).is_file()
