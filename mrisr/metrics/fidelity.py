"""Image-quality metrics, one function each, with one documented convention.

Convention: a prediction is compared with its reference *in physical space*, after the
reference has been rigidly registered to the prediction (the head moves between the LR and
the HR series of a session; :mod:`mrisr.imageio.registration`) and resampled onto the
prediction's grid. LR and HR series of a session have
different intensity scales, so both images are first divided by their own foreground 99.5th
percentile (the normalisation mrisr trains with); PSNR and SSIM then use ``data_range = 1``
and are computed over the reference's foreground mask only (no border crop: the mask
excludes the background). SSIM is 2D, per slice (the method is in-plane), with
scikit-image's Gaussian-weighted variant (sigma 1.5, as Wang et al.), averaged over the
masked pixels of all slices.
"""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk
from skimage.metrics import structural_similarity

from mrisr.imageio.registration import rigid_register
from mrisr.imageio.resampling import resample_mask_to, resample_to
from mrisr.imageio.sitk_io import Geometry
from mrisr.metrics.registry import Metric, metrics, register_metric
from mrisr.preprocessing.foreground import foreground_mask
from mrisr.preprocessing.normalization import foreground_percentile


def normalise(volume: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``volume`` divided by its foreground 99.5th percentile."""
    return volume / foreground_percentile(volume, mask)


def psnr(
    reference: np.ndarray, prediction: np.ndarray, mask: np.ndarray, data_range: float = 1.0
) -> float:
    """Peak signal-to-noise ratio (dB) over ``mask``."""
    err = (reference[mask].astype(np.float64) - prediction[mask]) ** 2
    mse = float(err.mean()) if err.size else float("nan")
    return float(10 * np.log10(data_range**2 / mse)) if mse > 0 else float("inf")


def ssim(
    reference: np.ndarray, prediction: np.ndarray, mask: np.ndarray, data_range: float = 1.0
) -> float:
    """Mean SSIM over ``mask``; 2D per slice for (z, y, x) volumes."""
    ref = np.asarray(reference, dtype=np.float64)
    pred = np.asarray(prediction, dtype=np.float64)
    if ref.ndim == 2:
        ref, pred, mask = ref[None], pred[None], mask[None]
    _, smap = structural_similarity(
        ref,
        pred,
        channel_axis=0,
        data_range=data_range,
        full=True,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    return float(smap[mask].mean()) if mask.any() else float("nan")


register_metric(
    Metric(
        name="psnr",
        label="PSNR",
        higher_is_better=True,
        width=8,
        fmt=".2f",
        mean_fmt="{:>5.2f}+-{:<5.2f}",
        table_fmt="{:.2f} ± {:.2f}",
        reference=True,
        compute=psnr,
        unit="dB",
        order=0,
    )
)
register_metric(
    Metric(
        name="ssim",
        label="SSIM",
        higher_is_better=True,
        width=7,
        fmt=".4f",
        mean_fmt="{:.4f}+-{:.4f}",
        table_fmt="{:.3f} ± {:.3f}",
        reference=True,
        compute=ssim,
        order=1,
    )
)


def reference_metrics(ref_n: np.ndarray, pred_n: np.ndarray, mask: np.ndarray) -> dict:
    """Every registered full-reference metric of normalised images on ``mask``."""
    return {m.name: m.compute(ref_n, pred_n, mask) for m in metrics(reference=True)}


def aligned_in_physical_space(
    reference: sitk.Image,
    prediction: sitk.Image,
    register: bool | sitk.Transform = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, sitk.Transform | None]:
    """``(ref_n, pred_n, mask, transform)``: ``reference`` resampled onto ``prediction``'s
    grid, both normalised by the convention above, and the foreground mask the metrics are
    taken over. The alignment :func:`compare_in_physical_space` scores, exposed for analyses
    that need the aligned arrays themselves.

    ``register``: True aligns the reference to the prediction first with a rigid
    registration (:func:`mrisr.imageio.registration.rigid_register`: the two series of a
    session differ by the head's motion between them); a transform (prediction point ->
    reference point) uses that one; False trusts the headers.
    """
    grid = Geometry.of(prediction)
    tf = None
    if register is True:
        tf = rigid_register(prediction, reference)
    elif isinstance(register, sitk.Transform):
        tf = register
    ref = sitk.GetArrayFromImage(resample_to(reference, grid, sitk.sitkBSpline, transform=tf))
    valid = resample_mask_to(reference, grid, tf)
    pred = sitk.GetArrayFromImage(prediction).astype(np.float32)
    mask = foreground_mask(ref, valid)
    return normalise(ref, mask), normalise(pred, mask), mask, tf


def compare_in_physical_space(
    reference: sitk.Image,
    prediction: sitk.Image,
    register: bool | sitk.Transform = True,
) -> dict:
    """PSNR and SSIM of ``prediction`` against ``reference`` resampled onto its grid
    (alignment and ``register`` as in :func:`aligned_in_physical_space`)."""
    ref_n, pred_n, mask, tf = aligned_in_physical_space(reference, prediction, register)
    return {
        **reference_metrics(ref_n, pred_n, mask),
        "foreground_voxels": int(mask.sum()),
        "registration": list(tf.GetParameters()) if tf is not None else None,
    }


def through_plane_metrics(reference: np.ndarray, prediction: np.ndarray, axis: int) -> dict:
    """PSNR and SSIM of a through-plane prediction against an isotropic reference on the
    same (z, y, x) grid, by the convention above (each normalised by its own foreground
    99.5th percentile, the reference's foreground mask); SSIM over the slices that hold the
    thick numpy ``axis`` (the views where through-plane errors show; the in-plane slices
    would score what the scan already had)."""
    mask = foreground_mask(reference)
    ref_n, pred_n = normalise(reference, mask), normalise(prediction, mask)
    across = next(a for a in range(3) if a != axis)
    r, p, m = (np.moveaxis(v, across, 0) for v in (ref_n, pred_n, mask))
    return {"psnr": psnr(ref_n, pred_n, mask), "ssim": ssim(r, p, m)}


def through_plane_in_physical_space(
    reference: sitk.Image, prediction: sitk.Image, axis: int, transform: sitk.Transform | None
) -> dict:
    """:func:`through_plane_metrics` of ``prediction`` against ``reference`` resampled onto
    its grid (``transform``: prediction point -> reference point; None trusts the headers),
    within the voxels the reference covers."""
    grid = Geometry.of(prediction)
    ref = sitk.GetArrayFromImage(
        resample_to(reference, grid, sitk.sitkBSpline, transform=transform)
    )
    valid = resample_mask_to(reference, grid, transform)
    pred = sitk.GetArrayFromImage(prediction).astype(np.float32)
    m = through_plane_metrics(
        np.where(valid, ref, 0).astype(np.float32), np.where(valid, pred, 0), axis
    )
    m["registration"] = list(transform.GetParameters()) if transform is not None else None
    return m


def mean_sd(values: list[float]) -> dict[str, float]:
    """Mean, sample sd and count of the finite values (a summary's cell)."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    return {
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "n": int(v.size),
    }


def validation_summary(
    configuration: str,
    per_case: dict[str, dict[str, dict]],
    methods: list[str],
    keys: list[str],
    convention: str,
    header: dict,
) -> dict:
    """A fold's ``validation/summary.json``: ``header`` (what was validated, how), the
    metric convention, then mean +- sd of each method's ``keys`` over the cases and the
    per-case values (the layout ``mrisr_find_best_configuration`` reads)."""
    mean = {m: {k: mean_sd([v[m][k] for v in per_case.values()]) for k in keys} for m in methods}
    return {
        "configuration": configuration,
        **header,
        "metric_convention": convention,
        "num_cases": len(per_case),
        "mean": mean,
        "cases": per_case,
    }
