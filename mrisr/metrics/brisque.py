"""BRISQUE (Mittal et al. 2012), no-reference quality: lower is better.

Uses the ``brisque`` package, which ships its SVR model (no download at run time). Scans
are scored per in-plane slice, each slice mapped to 8 bits by its foreground 99.5th
percentile (BRISQUE's model was trained on 8-bit images); slices with little foreground
are skipped; the scan's score is the mean over scored slices.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np

from mrisr.metrics.registry import Metric, register_metric
from mrisr.preprocessing.normalization import foreground_percentile
from mrisr.utilities.errors import MrisrError

logger = logging.getLogger(__name__)

MIN_FOREGROUND = 0.05  # fraction of a slice
MIN_SIZE = 32  # pixels per side: BRISQUE works at two scales


@lru_cache(maxsize=1)
def _model():
    try:
        from brisque import BRISQUE
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MrisrError(
            f"BRISQUE needs the 'brisque' package and OpenCV ({e}); "
            "pip install brisque opencv-python-headless"
        ) from None

    class _Brisque(BRISQUE):
        # brisque 0.2 turns one-element arrays into floats with float(), which numpy >= 2
        # refuses for arrays of ndim > 0: flatten the features first.
        def scale_features(self, features):
            flat = np.array([np.asarray(f, dtype=np.float64).ravel()[0] for f in features])
            return super().scale_features(flat)

    return _Brisque(url=False)


def brisque_slice(image_u8: np.ndarray) -> float:
    """BRISQUE score of one 8-bit grayscale slice."""
    rgb = np.repeat(np.asarray(image_u8, dtype=np.uint8)[..., None], 3, axis=-1)
    return float(_model().score(rgb))


def brisque_volume(volume: np.ndarray, mask: np.ndarray) -> float:
    """Mean BRISQUE over the slices of a ``(z, y, x)`` volume with enough foreground."""
    top = foreground_percentile(volume, mask)
    scores = []
    for sl, m in zip(volume, mask):
        if min(sl.shape) < MIN_SIZE or m.mean() < MIN_FOREGROUND:
            continue
        u8 = np.clip(sl / top * 255.0, 0, 255).astype(np.uint8)
        try:
            s = brisque_slice(u8)
        except (ValueError, FloatingPointError) as e:
            logger.debug("BRISQUE failed on a slice: %s", e)
            continue
        if np.isfinite(s):
            scores.append(s)
    return float(np.mean(scores)) if scores else float("nan")


register_metric(
    Metric(
        name="brisque",
        label="BRISQUE",
        higher_is_better=False,
        width=8,
        fmt=".2f",
        mean_fmt="{:.2f}+-{:.2f}",
        table_fmt="{:.1f} ± {:.1f}",
        reference=False,
        compute=brisque_volume,
        order=2,
    )
)
