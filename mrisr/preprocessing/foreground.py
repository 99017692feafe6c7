"""Foreground masks of MR magnitude images (Otsu threshold, holes filled per slice)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu


def foreground_mask(volume: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Boolean (z, y, x) foreground of a magnitude volume.

    Otsu's threshold on the (valid) voxels separates tissue from the noise background; the
    mask is closed and its holes filled slice by slice, so dark tissue inside the body
    (CSF, vessels, bowel gas) counts as foreground.
    """
    vol = np.asarray(volume, dtype=np.float32)
    vals = vol[valid] if valid is not None else vol.ravel()
    if vals.size == 0 or vals.max() == vals.min():
        return np.zeros(vol.shape, dtype=bool)
    sample = vals[:: max(1, vals.size // 200_000)]
    t = threshold_otsu(sample)
    mask = vol > 0.5 * t + 0.5 * float(np.percentile(sample, 1))
    if valid is not None:
        mask &= valid
    struct = np.zeros((1, 3, 3), dtype=bool)
    struct[0] = ndimage.generate_binary_structure(2, 1)
    mask = ndimage.binary_closing(mask, structure=struct, iterations=2, border_value=0)
    mask = np.stack([ndimage.binary_fill_holes(s) for s in mask]) if mask.size else mask
    if valid is not None:
        mask &= valid
    return mask
