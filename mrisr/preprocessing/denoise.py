"""Non-local-means denoising of real LR (the paper denoises LR before DSGAN training)."""

from __future__ import annotations

import numpy as np
from skimage.restoration import denoise_nl_means


def denoise_lr(volume: np.ndarray, params: dict) -> np.ndarray:
    """NLM per in-plane slice with the planned strength; identity when method is 'none'."""
    vol = np.asarray(volume, dtype=np.float32)
    if params.get("method", "none") == "none" or params.get("h", 0) <= 0:
        return vol.copy()
    out = np.empty_like(vol)
    for i, sl in enumerate(vol):
        out[i] = denoise_nl_means(
            sl,
            h=params["h"],
            sigma=params.get("sigma", 0.0),
            patch_size=params.get("patch_size", 5),
            patch_distance=params.get("patch_distance", 6),
            fast_mode=params.get("fast_mode", True),
        )
    return out
