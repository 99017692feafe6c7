"""BRISQUE (Mittal et al. 2012), no-reference quality: lower is better.

Uses the ``brisque`` package, which ships its SVR model (no download at run time). Scans
are scored per in-plane slice, each slice mapped to 8 bits by its foreground 99.5th
percentile (BRISQUE's model was trained on 8-bit images) and cropped to the bounding box
of its foreground plus a margin: the empty field of view around the anatomy is no natural
scene, and its statistics (flat after denoising, pure noise after interpolation) swung the
score by 30 points between visually identical outputs. Slices with little foreground are
skipped; the scan's score is the mean over scored slices.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
from acvl_utils.cropping_and_padding.bounding_boxes import (
    bounding_box_to_slice,
    get_bbox_from_mask_npwhere,
    pad_bbox,
)
from scipy import special

from mrisr.metrics.registry import Metric, register_metric
from mrisr.preprocessing.normalization import foreground_percentile
from mrisr.utilities.errors import MrisrError

logger = logging.getLogger(__name__)

MIN_FOREGROUND = 0.05  # fraction of a slice
MIN_SIZE = 32  # pixels per side: BRISQUE works at two scales
MARGIN = 4  # pixels of background kept around the foreground's bounding box


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

        # brisque 0.2 solves for the (A)GGD shape with an unbounded root finder started
        # at 0.2, which runs away on peaked coefficient distributions (a smooth, flat
        # background: shape 3e5, every score then saturates at 155.8); the reference
        # implementation (Mittal et al.'s estimateaggdparam) searches 0.2:0.001:10.
        def asymmetric_generalized_gaussian_fit(self, x):
            return aggd_fit(x)

    return _Brisque(url=False)


#: the reference's grid of (A)GGD shapes, and the moment ratio of each
_SHAPES = np.arange(0.2, 10.0 + 1e-9, 0.001)
_RATIOS = special.gamma(2 / _SHAPES) ** 2 / (
    special.gamma(1 / _SHAPES) * special.gamma(3 / _SHAPES)
)


def aggd_fit(coefficients: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric generalised Gaussian fit by moment matching over the reference's shape
    grid (Mittal et al. 2012, ``estimateaggdparam``): ``(shape, mean, sigma_l, sigma_r)``."""
    x = np.asarray(coefficients, dtype=np.float64).ravel()
    left, right = x[x < 0], x[x >= 0]
    sigma_l = float(np.sqrt(np.mean(left**2))) if left.size else 0.0
    sigma_r = float(np.sqrt(np.mean(right**2))) if right.size else 0.0
    gamma_hat = sigma_l / max(sigma_r, 1e-12)
    r_hat = np.mean(np.abs(x)) ** 2 / max(float(np.mean(x**2)), 1e-24)
    big_r = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    shape = float(_SHAPES[np.argmin((_RATIOS - big_r) ** 2)])
    scale = np.sqrt(special.gamma(1 / shape) / special.gamma(3 / shape))
    mean = (sigma_r - sigma_l) * scale * special.gamma(2 / shape) / special.gamma(1 / shape)
    return shape, float(mean), sigma_l, sigma_r


def brisque_slice(image_u8: np.ndarray) -> float:
    """BRISQUE score of one 8-bit grayscale slice."""
    rgb = np.repeat(np.asarray(image_u8, dtype=np.uint8)[..., None], 3, axis=-1)
    return float(_model().score(rgb))


def foreground_crop(image: np.ndarray, mask: np.ndarray, margin: int = MARGIN) -> np.ndarray:
    """``image`` cut to the bounding box of ``mask`` grown by ``margin`` pixels."""
    bbox = pad_bbox(get_bbox_from_mask_npwhere(mask), margin, image.shape)
    return image[bounding_box_to_slice(bbox)]


def brisque_volume(volume: np.ndarray, mask: np.ndarray) -> float:
    """Mean BRISQUE over the foreground crops of the slices of a ``(z, y, x)`` volume with
    enough foreground."""
    top = foreground_percentile(volume, mask)
    scores = []
    for sl, m in zip(volume, mask):
        if m.mean() < MIN_FOREGROUND:
            continue
        sl = foreground_crop(sl, m)
        if min(sl.shape) < MIN_SIZE:
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
