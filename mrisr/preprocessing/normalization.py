"""Intensity normalisation (per scan; HR and LR separately)."""

from __future__ import annotations

import numpy as np

#: the foreground percentile every scan is divided by (the paper's normalisation)
PERCENTILE = 99.5


def foreground_percentile(
    volume: np.ndarray, mask: np.ndarray | None = None, percentile: float = PERCENTILE
) -> float:
    """The ``percentile`` of the foreground (all voxels without one), > 0: the one
    intensity normalisation of mrisr (preprocessing, metrics, BRISQUE, figures)."""
    vals = volume[mask] if mask is not None and mask.any() else volume.ravel()
    s = float(np.percentile(vals, percentile))
    if not np.isfinite(s) or s <= 0:
        s = float(np.abs(vals).max()) or 1.0
    return s


def normalization_scale(volume: np.ndarray, mask: np.ndarray, params: dict) -> float:
    """The factor a scan is divided by: its foreground ``percentile`` (99.5 by default).

    MR magnitude images have a physical zero, so scaling alone keeps background at 0 and
    is inverted exactly when SR output is written back in the scan's own units.
    """
    scheme = params.get("scheme", "percentile_scale")
    if scheme != "percentile_scale":
        raise ValueError(f"unknown normalisation scheme '{scheme}'")
    return foreground_percentile(volume, mask, params.get("percentile", PERCENTILE))
