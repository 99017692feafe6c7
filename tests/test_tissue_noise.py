"""The noise measured where the signal is: a g-factor map makes the tissue noisier than
the background, and a scanner-masked background leaves nothing to fit."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mrisr.imageio.noise_estimates import background_mask, rayleigh_sigma, tissue_sigma
from mrisr.preprocessing.preprocessor import measure_lr_noise


def _phantom(masked: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Magnitude slices of a smooth disk (tissue) whose noise follows a g-factor map that
    is 2x higher at the centre than at the edges; returns (image, tissue mask, the mean
    per-channel sigma over the tissue)."""
    rng = np.random.default_rng(0)
    n, z = 128, 8
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    r2 = (yy**2 + xx**2) / n**2
    disk = r2 < 0.3**2
    obj = np.where(disk, 100 + 20 * np.sin(xx / 9.0) * np.cos(yy / 13.0), 0.0)
    obj = ndimage.gaussian_filter(obj, 1.0)
    sigma_map = 3.0 * (1.0 + np.exp(-r2 / (2 * 0.25**2)))
    noise = rng.standard_normal((2, z, n, n)) * sigma_map
    img = np.hypot(obj + noise[0], noise[1]).astype(np.float32)
    mask = np.broadcast_to(ndimage.binary_dilation(disk, iterations=1), img.shape)
    if masked:
        img = img * ndimage.binary_dilation(mask, iterations=2)
    return img, mask, float(sigma_map[disk].mean())


def test_tissue_estimate_follows_the_tissue_not_the_background() -> None:
    img, mask, truth = _phantom()
    in_tissue = tissue_sigma(img, mask)
    background = rayleigh_sigma(img, background_mask(img, mask))
    assert abs(in_tissue / truth - 1) < 0.2
    assert background < 0.8 * truth  # the background fit reads the quieter edges


def test_masked_background_measured_in_tissue_and_cross_checked_otherwise() -> None:
    img, mask, truth = _phantom(masked=True)
    valid = np.ones(img.shape, bool)
    noise = measure_lr_noise(img, mask, valid)
    assert noise["method"].startswith("in-tissue") and abs(noise["sigma"] / truth - 1) < 0.2
    img, mask, truth = _phantom()
    noise = measure_lr_noise(img, mask, valid)
    assert noise["method"].startswith("background")
    assert noise["tissue_to_background"] > 1.2  # the disagreement is recorded


def test_resampled_masked_background_is_not_taken_for_the_noise() -> None:
    """A masked background after resampling (or a filtered one) is not zero but a faint
    residue: the fit on it would train the network on almost no noise."""
    img, mask, truth = _phantom(masked=True)
    residue = np.random.default_rng(5).rayleigh(0.05, img.shape).astype(np.float32)
    img = np.where(img == 0, residue, img)
    noise = measure_lr_noise(img, mask, np.ones(img.shape, bool))
    assert noise["method"].startswith("in-tissue") and "masked or processed" in noise["method"]
    assert abs(noise["sigma"] / truth - 1) < 0.2
