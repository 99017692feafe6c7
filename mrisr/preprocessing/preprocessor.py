"""Preprocessing per the plans: working grids, normalisation, NLM, masks, sampling maps.

Output per case in ``$mrisr_preprocessed/DatasetNNN_Name/<plans>_preprocessed/``:
``<case>_hr.b2nd`` (float32), ``<case>_hr_mask.b2nd`` (uint8), ``<case>_hr_weight.b2nd``
(float16 gradient sampling weights), the same three for ``_lr`` (LR on the working grid,
normalised and NLM-denoised), and ``<case>.json`` (properties, written last: a case is done
when its JSON exists with the current plans identity).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mrisr.dataset.cases import Case
from mrisr.imageio.noise_estimates import (
    background_mask,
    noise_correlation,
    rayleigh_sigma,
    tissue_sigma,
    wavelet_sigma,
)
from mrisr.imageio.registration import rigid_register, transform_from_json
from mrisr.imageio.resampling import (
    lr_grid_for_hr,
    resample_mask_to,
    resample_to,
    through_plane_axis_of_pair,
    through_plane_axis_single,
    working_grid,
)
from mrisr.imageio.sitk_io import Geometry, read_scan
from mrisr.plans import Plans
from mrisr.preprocessing import storage
from mrisr.preprocessing.denoise import denoise_lr
from mrisr.preprocessing.foreground import foreground_mask
from mrisr.preprocessing.normalization import normalization_scale
from mrisr.preprocessing.pair_check import check_pair
from mrisr.preprocessing.pair_noise import residual_noise_sigma
from mrisr.preprocessing.sampling import gradient_weight_map
from mrisr.utilities.file_io import load_json, save_json
from mrisr.utilities.parallel import map_progress
from mrisr.utilities.safety import content_hash

logger = logging.getLogger(__name__)

INTERPOLATORS = {"bspline": sitk.sitkBSpline, "linear": sitk.sitkLinear}


@dataclass
class PreparedScan:
    """A scan on its working grid: normalised intensities, masks, and how to undo it all."""

    array: np.ndarray  # (z, y, x) float32, normalised (LR: also denoised)
    mask: np.ndarray  # foreground, bool
    valid: np.ndarray  # inside the source field of view, bool
    grid: Geometry  # working grid (through-plane axis last in SimpleITK order)
    intensity_scale: float  # original = normalised * intensity_scale
    source_geometry: Geometry
    raw: np.ndarray | None = None  # LR: normalised, before denoising
    noise: dict | None = None  # LR: noise measured on the working grid, before denoising


def resample_normalised(
    image: sitk.Image,
    grid: Geometry,
    interpolator: int,
    normalization: dict,
    transform: sitk.Transform | None = None,
    zero_outside: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """``image`` on ``grid`` (through ``transform``), divided by its foreground percentile:
    (array, foreground mask, valid mask, the factor); ``zero_outside``: 0 outside the scan."""
    arr = sitk.GetArrayFromImage(resample_to(image, grid, interpolator, transform=transform))
    valid = resample_mask_to(image, grid, transform)
    if zero_outside:
        arr[~valid] = 0.0
    mask = foreground_mask(arr, valid)
    s = normalization_scale(arr, mask, normalization)
    return arr / np.float32(s), mask, valid, s


def prepare_hr(image: sitk.Image, tp_axis: int, plans: Plans) -> PreparedScan:
    grid = working_grid(Geometry.of(image), tp_axis, plans.hr_spacing, multiple_of=plans.scale)
    interp = INTERPOLATORS[plans.preprocessing.get("hr_interpolator", "bspline")]
    arr, mask, valid, s = resample_normalised(image, grid, interp, plans.normalization)
    return PreparedScan(arr, mask, valid, grid, s, Geometry.of(image))


def lr_working_grid(image: sitk.Image, plans: Plans, hr_grid: Geometry | None) -> Geometry:
    """The partner-aligned grid for a pair, else a grid on the scan's own field of view."""
    if hr_grid is not None:
        return lr_grid_for_hr(hr_grid, plans.scale)
    g = Geometry.of(image)
    tp = through_plane_axis_single(g, np.asarray(plans.through_plane_normal))
    return working_grid(g, tp, plans.lr_spacing)


def prepare_lr(
    image: sitk.Image,
    plans: Plans,
    hr_grid: Geometry | None = None,
    transform: sitk.Transform | None = None,
    denoise: bool = True,
    measure_noise: bool = False,
) -> PreparedScan:
    """Exactly the LR preprocessing of training and inference: grid, normalisation, NLM.

    ``transform`` (pairs only): the rigid alignment of the LR scan to its HR partner (HR
    point -> LR point), applied while resampling onto the HR-aligned working grid.
    ``denoise=False``: no NLM (configurations whose network learns to denoise; ``array``
    is then the raw normalised LR). ``measure_noise``: also measure the noise level and
    colour on the working grid, before denoising (:mod:`mrisr.imageio.noise_estimates`).
    """
    grid = lr_working_grid(image, plans, hr_grid)
    interp = INTERPOLATORS[plans.preprocessing.get("lr_interpolator", "bspline")]
    raw, mask, valid, s = resample_normalised(
        image, grid, interp, plans.normalization, transform, zero_outside=True
    )
    noise = measure_lr_noise(raw, mask, valid) if measure_noise else None
    out = denoise_lr(raw, plans.denoising) if denoise else raw
    return PreparedScan(out, mask, valid, grid, s, Geometry.of(image), raw=raw, noise=noise)


#: a background whose noise reads this many times less than the tissue's is not trusted
#: (a g-factor map makes the tissue at most ~2x noisier; masked backgrounds read 100x+)
BACKGROUND_TRUST = 3.0


def measure_lr_noise(raw: np.ndarray, mask: np.ndarray, valid: np.ndarray) -> dict | None:
    """Noise sigma (per channel, normalised units) and correlation of a working-grid LR."""
    bg = background_mask(raw, mask, valid)
    sigma = rayleigh_sigma(raw, bg)
    if sigma is None:
        # no usable background (masked by the scanner, or a tight field of view): the
        # local estimate inside the tissue (white noise assumed: it under-reads coloured
        # noise), else the wavelet estimate of the finest scale
        in_tissue = tissue_sigma(raw, mask)
        return {
            "sigma": in_tissue if in_tissue is not None else wavelet_sigma(raw),
            "rho": None,
            "background_pixels": int(bg.sum()),
            "method": "in-tissue local estimate (no background)"
            if in_tissue is not None
            else "wavelet MAD (no background)",
        }
    rho = noise_correlation(raw, bg)
    in_tissue = tissue_sigma(raw, mask, rho)
    if in_tissue is not None and in_tissue > BACKGROUND_TRUST * sigma:
        # the background is far quieter than the tissue: it is not the scan's noise
        # (a masked background after resampling, a zero-filled or filtered one)
        white = tissue_sigma(raw, mask)
        return {
            "sigma": white,
            "rho": None,
            "background_pixels": int(bg.sum()),
            "method": f"in-tissue local estimate (the background reads {in_tissue / sigma:.0f}x "
            "less: masked or processed)",
        }
    return {
        "sigma": sigma,
        "rho": rho.round(4).tolist() if rho is not None else None,
        "background_pixels": int(bg.sum()),
        "method": "background Rayleigh fit (median of M^2)",
        # the cross-check inside the tissue (recorded; the background fit is used)
        "sigma_tissue": in_tissue,
        "tissue_to_background": round(in_tissue / sigma, 3) if in_tissue else None,
    }


def case_files(folder: Path, case: str) -> dict[str, Path]:
    names = {
        f"{k}{suffix}": folder / f"{case}_{k}{suffix}{storage.SUFFIX}"
        for k in ("hr", "lr")
        for suffix in ("", "_mask", "_weight")
    }
    names["lr_raw"] = folder / f"{case}_lr_raw{storage.SUFFIX}"
    names["properties"] = folder / f"{case}.json"
    return names


def is_case_done(folder: Path, case: str, identity: str) -> bool:
    f = case_files(folder, case)
    if not f["properties"].is_file():
        return False
    try:
        props = load_json(f["properties"])
    except (ValueError, OSError):
        logger.info("%s: %s is damaged: redoing the case", case, f["properties"].name)
        return False
    if not isinstance(props, dict):
        logger.info("%s: %s is not a case file: redoing the case", case, f["properties"].name)
        return False
    if props.get("plans_identity") != identity:
        return False
    needed = [k for k in ("hr", "lr") if props.get(f"has_{k}")]
    arrays = [f[f"{k}{s}"] for k in needed for s in ("", "_mask", "_weight")]
    if props.get("has_lr"):
        arrays.append(f["lr_raw"])
    for a in arrays:
        if not storage.intact(a):
            logger.info("%s: %s is missing or damaged: redoing the case", case, a.name)
            return False
    return True


def source_hashes(case: Case) -> dict[str, str | None]:
    """Content hashes of a case's raw files (a case is stale when they change)."""
    return {k: content_hash(p) if p else None for k, p in (("hr", case.hr), ("lr", case.lr))}


def sources_changed(folder: Path, case: Case) -> bool:
    """Whether the raw files of a preprocessed ``case`` changed (or were not recorded)."""
    try:
        recorded = load_json(case_files(folder, case.name)["properties"]).get("source_hashes")
    except (OSError, ValueError, AttributeError):
        return True
    if recorded != source_hashes(case):
        logger.info("%s: raw scan(s) changed since preprocessing: redoing the case", case.name)
        return True
    return False


def _save_scan(files: dict[str, Path], key: str, scan: PreparedScan, sampling: dict) -> dict:
    storage.save_array(files[key], scan.array.astype(np.float32))
    storage.save_array(files[f"{key}_mask"], scan.mask.astype(np.uint8))
    weight = gradient_weight_map(
        scan.array, sampling.get("clip_percentile", 97.0), sampling.get("window", 5)
    )
    weight[~scan.valid] = 0.0
    storage.save_array(files[f"{key}_weight"], weight.astype(np.float16))
    return {
        "shape_zyx": list(scan.array.shape),
        "working_geometry": scan.grid.to_json(),
        "source_geometry": scan.source_geometry.to_json(),
        "intensity_scale": scan.intensity_scale,
        "foreground_fraction": float(scan.mask.mean()),
    }


def preprocess_case(args: tuple[Case, dict, str, dict | None]) -> str:
    """Preprocess one case into ``out_dir`` (runs in a worker process); ``registration``:
    the pair's alignment from the fingerprint (None: registered here). Returns the name."""
    case, plans_data, out_dir, registration = args
    plans = Plans(plans_data)
    folder = Path(out_dir)
    files = case_files(folder, case.name)
    hr_img = read_scan(case.hr, check=False) if case.hr else None
    lr_img = read_scan(case.lr, check=False) if case.lr else None
    props: dict = {
        "case": case.name,
        "plans_identity": plans.preprocessing_identity(),
        "scale": plans.scale,
        "has_hr": hr_img is not None,
        "has_lr": lr_img is not None,
        "is_pair": hr_img is not None and lr_img is not None,
        "source_files": {
            "hr": str(case.hr) if case.hr else None,
            "lr": str(case.lr) if case.lr else None,
        },
        "source_hashes": source_hashes(case),
    }
    sampling = plans.preprocessing.get("sampling", {})
    hr_grid = None
    if hr_img is not None:
        hg = Geometry.of(hr_img)
        if lr_img is not None:
            tp = through_plane_axis_of_pair(hg, Geometry.of(lr_img))[0]
        else:
            tp = through_plane_axis_single(hg, np.asarray(plans.through_plane_normal))
        hr = prepare_hr(hr_img, tp, plans)
        hr_grid = hr.grid
        props["hr"] = _save_scan(files, "hr", hr, sampling)
    if lr_img is not None:
        tf = None
        if hr_img is not None and plans.preprocessing.get("register_pairs", False):
            tf = (
                transform_from_json(registration)
                if registration
                else rigid_register(hr_img, lr_img)
            )
        lr = prepare_lr(lr_img, plans, hr_grid, tf, measure_noise=True)
        props["lr"] = _save_scan(files, "lr", lr, sampling)
        storage.save_array(files["lr_raw"], lr.raw.astype(np.float32))
        props["lr"]["noise"] = lr.noise
        if tf is not None:
            props["lr"]["registration_to_hr"] = {
                "transform": "Euler3D (HR point -> LR point)",
                "center": list(tf.GetCenter()),
                "parameters": list(tf.GetParameters()),
            }
        props["lr"]["denoising"] = plans.denoising.get("method", "none")
        if hr_img is not None:
            props["pair_check"] = check_pair(lr.raw, lr.mask, hr.array, hr.mask, plans.scale)
            if not props["pair_check"]["shares_structure"]:
                logger.warning(
                    "%s: %s; left out of validation and fidelity",
                    case.name,
                    props["pair_check"]["reason"],
                )
            elif tf is not None and lr.noise is not None:
                # the noise where the signal is: the working-grid LR against its registered
                # HR (the grid is HR-aligned: the identity maps one onto the other)
                work = lr.grid.apply_to(sitk.GetImageFromArray(lr.raw.astype(np.float32)))
                residual = residual_noise_sigma(
                    sitk.Cast(hr_img, sitk.sitkFloat32), work, sitk.Euler3DTransform(), tp, 2
                )
                if residual is not None:
                    lr.noise["sigma_residual"] = residual["sigma"]
                    lr.noise["residual_model"] = residual["model"]
    save_json(props, files["properties"])  # last: marks the case as done
    return case.name


def preprocess_dataset(
    cases: list[Case],
    plans: Plans,
    out_dir: Path,
    num_processes: int = 1,
    registrations: dict[str, dict] | None = None,
) -> list[str]:
    """Preprocess every case not already done with these plans; returns the cases processed.
    ``registrations``: case -> the pair's alignment the fingerprint computed (reused)."""
    registrations = registrations or {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ident = plans.preprocessing_identity()
    todo = [
        c for c in cases if not is_case_done(out_dir, c.name, ident) or sources_changed(out_dir, c)
    ]
    if len(todo) < len(cases):
        logger.info(
            "%d of %d cases already preprocessed with these plans: skipped",
            len(cases) - len(todo),
            len(cases),
        )
    map_progress(
        preprocess_case,
        [(c, plans.data, str(out_dir), registrations.get(c.name)) for c in todo],
        num_processes,
        desc="preprocessing",
    )
    return [c.name for c in todo]
