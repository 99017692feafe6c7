"""The integrity check that runs before anything is written.

Every problem is reported as one line naming the file and the fix. ``verify_dataset``
collects them all (``--verify-only`` lists them); the first one is raised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mrisr.dataset.cases import Case, find_cases
from mrisr.dataset.dataset_json import HR_FOLDER, LR_FOLDER, DatasetInfo, load_dataset_json
from mrisr.imageio.resampling import (
    inplane_axes,
    overlap_fraction,
    through_plane_axis_of_pair,
    through_plane_pair,
)
from mrisr.imageio.sitk_io import Geometry, read_scan
from mrisr.utilities.errors import IntegrityError
from mrisr.utilities.parallel import map_progress

logger = logging.getLogger(__name__)

MAX_THROUGH_PLANE_MISMATCH = 0.10
MIN_INPLANE_RATIO = 1.5  # the integer scale round(ratio) must be at least 2
MIN_OVERLAP = 0.05


@dataclass
class VerifiedDataset:
    dataset_dir: Path
    info: DatasetInfo
    cases: list[Case]
    geometries: dict[str, dict[str, Geometry]]  # case -> {"hr": Geometry, "lr": Geometry}


MAX_SPACING_MM = 50.0  # MR voxels are a few mm: larger is a unit mistake (m vs mm)
MAX_SIZE = 4096  # voxels per axis


def _check_scan(path: Path) -> tuple[Geometry, str | None]:
    """The scan's geometry (IntegrityError on a problem) and an optional warning."""
    image = read_scan(path, check=True)
    g = Geometry.of(image)
    check_geometry(path, g)
    lo = float(sitk.GetArrayViewFromImage(image).min())
    warning = None
    if lo < 0:
        warning = (
            f"{path}: negative intensities (min {lo:.3g}); MR magnitude images are >= 0: is "
            "this a phase or a rescaled image? (processing it anyway)"
        )
    return g, warning


def check_geometry(path: Path, g: Geometry) -> None:
    """Spacing in a plausible range, an orthonormal direction, a bounded grid."""
    sp = np.asarray(g.spacing)
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise IntegrityError(f"{path}: voxel spacing {g.spacing} must be positive; fix the header")
    if sp.max() > MAX_SPACING_MM:
        raise IntegrityError(
            f"{path}: voxel spacing {tuple(round(float(s), 4) for s in sp)} mm exceeds "
            f"{MAX_SPACING_MM:g} mm; the header's units are probably wrong (m vs mm): fix them"
        )
    if max(g.size) > MAX_SIZE:
        raise IntegrityError(f"{path}: {g.size} voxels; at most {MAX_SIZE} per axis supported")
    d = g.direction_matrix
    if np.abs(d.T @ d - np.eye(3)).max() > 1e-3:
        raise IntegrityError(
            f"{path}: sheared (non-orthogonal) direction matrix; resample the scan onto an "
            "orthogonal grid"
        )


def check_pair(case: str, hr_path: Path, lr_path: Path, hr: Geometry, lr: Geometry) -> None:
    """The geometric checks of a pair; IntegrityError naming the files on failure. A
    thick-slice LR scan with an isotropic HR partner at its in-plane spacing is a
    through-plane pair: only their overlap is checked."""
    if through_plane_pair(hr.spacing, lr.spacing):
        _check_overlap(case, lr_path, hr, lr)
        return
    a, b = through_plane_axis_of_pair(hr, lr)
    ratio_tp = lr.spacing[b] / hr.spacing[a]
    if abs(ratio_tp - 1) > MAX_THROUGH_PLANE_MISMATCH:
        raise IntegrityError(
            f"{lr_path}: through-plane spacing {lr.spacing[b]:.3g} mm differs from its HR "
            f"partner's {hr.spacing[a]:.3g} mm by {abs(ratio_tp - 1):.0%} (> 10%); mrisr "
            "super-resolves in-plane, slice by slice (2D), which needs LR and HR slices of "
            "equal thickness: resample or re-acquire with matching slice thickness"
        )
    ia = inplane_axes(a)
    d_hr, d_lr = hr.direction_matrix, lr.direction_matrix
    ratios = []
    for ax in ia:
        bx = int(np.argmax(np.abs(d_lr.T @ d_hr[:, ax])))
        ratios.append(lr.spacing[bx] / hr.spacing[ax])
    if min(ratios) < MIN_INPLANE_RATIO:
        raise IntegrityError(
            f"{lr_path}: LR in-plane spacing is not coarser than its HR partner {hr_path.name} "
            f"(LR/HR ratio {min(ratios):.2f}; needs >= {MIN_INPLANE_RATIO} for an integer "
            "scale >= 2): check that the scans are in the right folders (imagesLR/ vs imagesHR/)"
        )
    _check_overlap(case, lr_path, hr, lr)


def _check_overlap(case: str, lr_path: Path, hr: Geometry, lr: Geometry) -> None:
    ov = overlap_fraction(hr, lr)
    if ov < MIN_OVERLAP:
        raise IntegrityError(
            f"{lr_path}: LR and HR of case '{case}' do not overlap in physical space "
            f"(LR covers {ov:.0%} of the HR field of view); check origin and direction in "
            "the headers of both scans (physical space is how mrisr aligns them)"
        )


def verify_dataset(dataset_dir: str | Path, num_processes: int = 1) -> VerifiedDataset:
    """Run every integrity check; raise IntegrityError (one line) on the first problem.

    All problems found are logged, one line each.
    """
    dataset_dir = Path(dataset_dir)
    info = load_dataset_json(dataset_dir)
    cases = find_cases(dataset_dir, info)
    if not any(c.lr for c in cases):
        raise IntegrityError(
            f"{dataset_dir / LR_FOLDER}: no LR scans; mrisr learns the real degradation from "
            f"real LR scans: put them in {LR_FOLDER}/ named <case>{info.file_ending}"
        )
    if not any(c.hr for c in cases):
        raise IntegrityError(
            f"{dataset_dir / HR_FOLDER}: no HR scans; put the high-resolution scans in "
            f"{HR_FOLDER}/ named <case>{info.file_ending}"
        )
    paths = [p for c in cases for p in (c.hr, c.lr) if p is not None]
    results = map_progress(_safe_check, paths, num_processes, desc="verifying scans")
    problems: list[str] = []
    geoms: dict[Path, Geometry] = {}
    for p, (g, err, warning) in zip(paths, results):
        if warning:
            logger.warning(warning)
        if err:
            problems.append(err)
        else:
            geoms[p] = g
    for c in cases:
        if c.is_pair and c.hr in geoms and c.lr in geoms:
            try:
                check_pair(c.name, c.hr, c.lr, geoms[c.hr], geoms[c.lr])
            except IntegrityError as e:
                problems.append(str(e))
    if problems:
        for msg in problems:
            logger.error(msg)
        more = f" (+{len(problems) - 1} more problem(s) listed above)" if len(problems) > 1 else ""
        raise IntegrityError(problems[0] + more)
    geometries = {
        c.name: {k: geoms[p] for k, p in (("hr", c.hr), ("lr", c.lr)) if p is not None}
        for c in cases
    }
    return VerifiedDataset(dataset_dir, info, cases, geometries)


def _safe_check(path: Path) -> tuple[Geometry | None, str | None, str | None]:
    try:
        g, warning = _check_scan(path)
        return g, None, warning
    except IntegrityError as e:
        return None, str(e), None
