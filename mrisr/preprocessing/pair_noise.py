"""The real LR's noise measured against its registered HR partner: in the tissue, whatever
its colour.

The background's Rayleigh fit reads the noise where there is no signal; under a g-factor
map, or where the scanner masked the background, that is not the tissue's noise. A local
estimate inside the tissue cannot tell noise from anatomy once the noise is coloured (a
raw-data filter, a grid finer than acquired: the noise then shares the anatomy's
frequencies). A registered HR scan of the same anatomy removes the anatomy instead:

1. the HR, degraded in-plane by each candidate response (:data:`GAUSSIAN_MM`; band limits
   at :data:`BAND_SHARES` of the LR's band per axis, rectangular or Hamming), is resampled
   onto the LR's native grid through the registration;
2. a monotone map by quantiles takes it to the LR's intensities (another contrast);
3. it is subtracted from the LR; the residual's smooth part (bias fields that differ between
   the series) is removed;
4. sigma is 1.4826 x the MAD of the residual over the flattest :data:`FLAT_QUANTILE` of the
   eroded tissue (the model's errors sit on edges), for the candidate that leaves least.

The MAD of the residual's marginal distribution does not depend on the noise's colour.
``benchmarks/bench_quality.py`` reports it against the simulator's in-tissue truth.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from mrisr.preprocessing.foreground import foreground_mask

#: widths (sigma, mm) of the Gaussian in-plane responses tried
GAUSSIAN_MM = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
#: band limits tried, as shares of the LR's band (its headers' Nyquist) along each in-plane
#: axis: reduced phase resolution, and grids finer than acquired, make it narrower
BAND_SHARES = (1.0, 0.85, 0.7)
#: share of the tissue, the flattest, whose residual is measured
FLAT_QUANTILE = 0.25
#: the residual's smooth part (bias fields) is its Gaussian mean over this many LR pixels
DETREND_PX = 8.0
#: at most this many central LR slices are measured (time on large scans)
MAX_SLICES = 24
#: fewest flat tissue pixels for an estimate
MIN_PIXELS = 1000


def residual_noise_sigma(
    hr: sitk.Image, lr: sitk.Image, lr_to_hr: sitk.Transform, hr_axis: int, lr_axis: int
) -> dict | None:
    """Per-channel noise sigma of ``lr`` (its raw units, native grid) from its residual
    against ``hr`` (``lr_to_hr``: LR point -> HR point; ``hr_axis``, ``lr_axis``: the
    through-plane SimpleITK axes). ``{"sigma", "model", "pixels"}``, or None where too little
    tissue is shared."""
    lr = _central_slices(lr, lr_axis)
    lr_arr = np.moveaxis(sitk.GetArrayFromImage(lr).astype(np.float64), 2 - lr_axis, 0)
    ones = sitk.Image(hr.GetSize(), sitk.sitkFloat32) + 1.0
    ones.CopyInformation(hr)
    covered = _on_lr(ones, lr, lr_to_hr, lr_axis) > 0.999
    tissue = ndimage.binary_erosion(
        foreground_mask(lr_arr), structure=np.ones((1, 7, 7), bool)
    ) & ndimage.binary_erosion(covered, structure=np.ones((1, 3, 3), bool))
    if tissue.sum() < MIN_PIXELS / FLAT_QUANTILE:
        return None
    hr = _slab_under(hr, lr, lr_to_hr, hr_axis)
    hr_arr = sitk.GetArrayFromImage(hr).astype(np.float64)
    inplane = [ax for ax in range(3) if ax != hr_axis]  # SimpleITK axes
    lr_spacing = _lr_spacing_along(hr, lr, inplane)
    best = None
    for model, degraded in _candidates(hr_arr, hr, inplane, lr_spacing):
        img = sitk.GetImageFromArray(degraded.astype(np.float32))
        img.CopyInformation(hr)
        synthetic = _on_lr(img, lr, lr_to_hr, lr_axis)
        mapped = np.interp(synthetic, *_monotone_map(synthetic[tissue], lr_arr[tissue]))
        sigma, n = _residual_mad(lr_arr - mapped, mapped, tissue)
        if n >= MIN_PIXELS and (best is None or sigma < best["sigma"]):
            best = {"sigma": sigma, "model": model, "pixels": n}
    return best


def _central_slices(lr: sitk.Image, axis: int) -> sitk.Image:
    n = lr.GetSize()[axis]
    if n <= MAX_SLICES:
        return lr
    start = (n - MAX_SLICES) // 2
    index = [slice(None)] * 3
    index[axis] = slice(start, start + MAX_SLICES)
    return lr[tuple(index)]


def _slab_under(hr: sitk.Image, lr: sitk.Image, lr_to_hr: sitk.Transform, axis: int) -> sitk.Image:
    """The HR's slices (along its through-plane ``axis``) that the LR's field of view
    covers, and two more on each side: the in-plane filters need no more."""
    size = np.array(lr.GetSize()) - 1
    corners = [
        lr_to_hr.TransformPoint(lr.TransformContinuousIndexToPhysicalPoint([float(v) for v in c]))
        for c in np.stack(np.meshgrid(*[[0, n] for n in size], indexing="ij"), -1).reshape(-1, 3)
    ]
    k = [hr.TransformPhysicalPointToContinuousIndex(c)[axis] for c in corners]
    n = hr.GetSize()[axis]
    lo, hi = max(0, int(np.floor(min(k))) - 2), min(n, int(np.ceil(max(k))) + 3)
    if hi - lo < 1 or (lo == 0 and hi == n):
        return hr
    index = [slice(None)] * 3
    index[axis] = slice(lo, hi)
    return hr[tuple(index)]


def _on_lr(img: sitk.Image, lr: sitk.Image, lr_to_hr: sitk.Transform, lr_axis: int) -> np.ndarray:
    out = sitk.Resample(img, lr, lr_to_hr, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return np.moveaxis(sitk.GetArrayFromImage(out).astype(np.float64), 2 - lr_axis, 0)


def _lr_spacing_along(hr: sitk.Image, lr: sitk.Image, axes: list[int]) -> dict[int, float]:
    """The LR's spacing along each of the HR's ``axes`` (the LR axis most parallel to it)."""
    d_hr = np.array(hr.GetDirection()).reshape(3, 3)
    d_lr = np.array(lr.GetDirection()).reshape(3, 3)
    return {ax: float(lr.GetSpacing()[int(np.argmax(np.abs(d_lr.T @ d_hr[:, ax])))]) for ax in axes}


def _candidates(hr_arr: np.ndarray, hr: sitk.Image, inplane: list[int], lr_spacing: dict):
    """(label, the HR degraded by one candidate in-plane response)."""
    spacing = hr.GetSpacing()
    for s in GAUSSIAN_MM:
        sigmas = [0.0, 0.0, 0.0]
        for ax in inplane:
            sigmas[2 - ax] = s / spacing[ax]
        yield f"gaussian {s:g} mm", ndimage.gaussian_filter(hr_arr, sigmas)
    axes = [2 - ax for ax in inplane]  # numpy axes
    spectrum = np.fft.fftn(hr_arr, axes=axes)
    freqs = {
        ax: np.abs(np.fft.fftfreq(hr_arr.shape[2 - ax], spacing[ax])) * 2 * lr_spacing[ax]
        for ax in inplane
    }
    for window in ("rect", "hamming"):
        for a in BAND_SHARES:
            for b in BAND_SHARES:
                response = np.ones((1, 1, 1))  # separable: broadcast from two 1D windows
                for ax, share in zip(inplane, (a, b)):
                    f = freqs[ax] / share  # 1 at the candidate's band edge
                    w = (f <= 1) * (
                        1.0 if window == "rect" else 0.54 + 0.46 * np.cos(np.pi * np.minimum(f, 1))
                    )
                    shape = [1, 1, 1]
                    shape[2 - ax] = -1
                    response = response * w.reshape(shape)
                label = f"band {a:g} x {b:g} of the LR's, {window}"
                yield label, np.fft.ifftn(spectrum * response, axes=axes).real


def _residual_mad(residual: np.ndarray, mapped: np.ndarray, tissue: np.ndarray):
    """1.4826 MAD of ``residual`` (the LR minus its model ``mapped``), its smooth part
    removed, over the flattest tissue of the model; and the number of pixels measured."""
    r = np.where(tissue, residual, 0.0)
    sigmas = (0, DETREND_PX, DETREND_PX)
    weight = ndimage.gaussian_filter(tissue.astype(np.float64), sigmas)
    r = r - ndimage.gaussian_filter(r, sigmas) / np.maximum(weight, 1e-6)
    grad = np.hypot(*np.gradient(ndimage.gaussian_filter(mapped, (0, 1, 1)), axis=(1, 2)))
    flat = tissue & (grad <= np.quantile(grad[tissue], FLAT_QUANTILE))
    rr = r[flat]
    return 1.4826 * float(np.median(np.abs(rr - np.median(rr)))), int(flat.sum())


def _monotone_map(x: np.ndarray, y: np.ndarray, bins: int = 64):
    """Knots of the map synthetic -> LR intensity: medians in quantile bins of ``x``, made
    monotone in the direction of the relation."""
    edges = np.quantile(x, np.linspace(0, 1, bins + 1))
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1)
    counts = np.bincount(idx, minlength=bins)
    keep = counts > 0
    cx = np.array([np.median(x[idx == i]) for i in np.flatnonzero(keep)])
    cy = np.array([np.median(y[idx == i]) for i in np.flatnonzero(keep)])
    increasing = np.corrcoef(x, y)[0, 1] >= 0 if x.std() > 0 and y.std() > 0 else True
    cy = np.maximum.accumulate(cy) if increasing else np.minimum.accumulate(cy)
    order = np.argsort(cx, kind="stable")
    return cx[order], cy[order]
