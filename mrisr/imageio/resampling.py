"""Physical-space geometry: through-plane axes, working grids and resampling.

The method is 2D in-plane. Every scan is brought onto a *working grid* whose third index
axis (numpy axis 0) is the through-plane axis, so that preprocessed arrays are
``(slices, rows, cols)``. HR working grids have the planned HR in-plane spacing ``h``.
LR working grids have spacing ``s * h`` and, for a pair, are aligned with the HR partner's
grid so that LR pixel ``i`` covers HR pixels ``s*i .. s*i+s-1``: its centre sits at HR
position ``s*i + (s-1)/2``, which is the pixel-shuffle convention of EDSR.
"""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from mrisr.imageio.sitk_io import Geometry


def through_plane_axis_of_pair(hr: Geometry, lr: Geometry) -> tuple[int, int]:
    """(HR axis, LR axis) of the through-plane direction: the axis whose spacing LR and HR share.

    For each HR index axis, the LR axis most parallel to it in physical space is paired
    with it; the through-plane axis is the pair with the closest spacings. One-slice images
    (2D scans) have their single slice as the through-plane axis.
    """
    d_hr, d_lr = hr.direction_matrix, lr.direction_matrix
    best, best_score = (2, 2), np.inf
    for a in range(3):
        b = int(np.argmax(np.abs(d_lr.T @ d_hr[:, a])))
        if hr.size[a] == 1 and lr.size[b] == 1:
            return a, b
        score = abs(np.log(lr.spacing[b] / hr.spacing[a]))
        # ties (e.g. isotropic data) go to the axis with the largest HR spacing, then to z
        score -= 1e-6 * hr.spacing[a] + 1e-9 * a
        if score < best_score:
            best, best_score = (a, b), score
    return best


def through_plane_axis_single(geom: Geometry, normal: np.ndarray | None = None) -> int:
    """Through-plane axis of a scan without partner.

    With ``normal`` (the dataset's through-plane direction in physical space) the most
    parallel axis; otherwise a one-slice axis, else the axis of largest spacing, else z.
    """
    if normal is not None:
        return int(np.argmax(np.abs(geom.direction_matrix.T @ np.asarray(normal))))
    for a in range(3):
        if geom.size[a] == 1:
            return a
    sp = np.asarray(geom.spacing)
    if sp.max() > 1.05 * np.median(sp):
        return int(np.argmax(sp))
    return 2


def inplane_axes(tp_axis: int) -> tuple[int, int]:
    a, b = [i for i in range(3) if i != tp_axis]
    return a, b


def working_grid(
    geom: Geometry, tp_axis: int, inplane_spacing: float, multiple_of: int = 1
) -> Geometry:
    """A grid covering ``geom``'s field of view with the through-plane axis last (sitk order).

    In-plane spacing becomes ``inplane_spacing``; the outer edge of the field of view is
    kept, the in-plane size is the largest that fits, rounded down to ``multiple_of``.
    Through-plane spacing and slice positions are unchanged.
    """
    a, b = inplane_axes(tp_axis)
    order = (a, b, tp_axis)
    d = geom.direction_matrix
    direction = d[:, order]
    size, spacing = [], []
    for ax in (a, b):
        extent = geom.size[ax] * geom.spacing[ax]
        n = int(np.floor(extent / inplane_spacing + 1e-6))
        n = max(multiple_of, n - n % multiple_of)
        size.append(n)
        spacing.append(inplane_spacing)
    size.append(geom.size[tp_axis])
    spacing.append(geom.spacing[tp_axis])
    # keep the FOV edge: first centre = old edge + new half spacing (in-plane only)
    edge_offset = np.zeros(3)
    for k, ax in enumerate((a, b)):
        edge_offset[k] = -0.5 * geom.spacing[ax] + 0.5 * spacing[k]
    origin = np.asarray(geom.origin) + direction @ edge_offset
    return Geometry(
        size=tuple(int(v) for v in size),
        spacing=tuple(float(v) for v in spacing),
        origin=tuple(float(v) for v in origin),
        direction=tuple(float(v) for v in direction.ravel()),
    )


def lr_grid_for_hr(hr_work: Geometry, scale: int) -> Geometry:
    """The LR working grid aligned with an HR working grid (pixel-shuffle convention)."""
    d = hr_work.direction_matrix
    h = np.asarray(hr_work.spacing)
    shift = np.array([(scale - 1) / 2 * h[0], (scale - 1) / 2 * h[1], 0.0])
    origin = np.asarray(hr_work.origin) + d @ shift
    return Geometry(
        size=(hr_work.size[0] // scale, hr_work.size[1] // scale, hr_work.size[2]),
        spacing=(h[0] * scale, h[1] * scale, h[2]),
        origin=tuple(float(v) for v in origin),
        direction=hr_work.direction,
    )


def hr_grid_for_lr(lr_work: Geometry, scale: int) -> Geometry:
    """The HR grid that an SR network's output on ``lr_work`` lives on (inverse of lr_grid_for_hr)."""
    d = lr_work.direction_matrix
    h = np.asarray(lr_work.spacing) / np.array([scale, scale, 1.0])
    shift = np.array([(scale - 1) / 2 * h[0], (scale - 1) / 2 * h[1], 0.0])
    origin = np.asarray(lr_work.origin) - d @ shift
    return Geometry(
        size=(lr_work.size[0] * scale, lr_work.size[1] * scale, lr_work.size[2]),
        spacing=tuple(float(v) for v in h),
        origin=tuple(float(v) for v in origin),
        direction=lr_work.direction,
    )


def resample_to(
    image: sitk.Image,
    grid: Geometry,
    interpolator: int = sitk.sitkBSpline,
    default: float = 0.0,
    antialias: bool = True,
    transform: sitk.Transform | None = None,
) -> sitk.Image:
    """Resample ``image`` onto ``grid`` in physical space (float32).

    ``transform`` (optional) maps grid points to ``image`` points (e.g. a rigid
    registration); the identity by default.

    When the grid is coarser than the image along an axis, the image is first smoothed
    with a Gaussian (sigma = 0.5 * sqrt(r^2 - 1) source voxels for a spacing ratio r), so
    that downsampling does not alias.
    """
    src = Geometry.of(image)
    if antialias and interpolator != sitk.sitkNearestNeighbor:
        # physical spacing of the target along each source axis
        d_src, d_dst = src.direction_matrix, grid.direction_matrix
        sigmas = []
        for ax in range(3):
            k = int(np.argmax(np.abs(d_dst.T @ d_src[:, ax])))
            r = grid.spacing[k] / src.spacing[ax]
            sigmas.append(0.5 * np.sqrt(r * r - 1) * src.spacing[ax] if r > 1.01 else 0.0)
        if any(s > 0 for s in sigmas):
            sig = [max(s, 1e-6) for s in sigmas]
            image = (
                sitk.SmoothingRecursiveGaussian(image, sig)
                if min(image.GetSize()) >= 4
                else sitk.DiscreteGaussian(image, [s * s for s in sig])
            )
    out = sitk.Resample(
        image,
        list(grid.size),
        transform if transform is not None else sitk.Transform(),
        interpolator,
        grid.origin,
        grid.spacing,
        grid.direction,
        default,
        sitk.sitkFloat32,
    )
    return out


def resample_mask_to(
    image: sitk.Image, grid: Geometry, transform: sitk.Transform | None = None
) -> np.ndarray:
    """Boolean (z, y, x) mask of the grid voxels that lie inside ``image``'s field of view
    (through ``transform``, grid point -> image point, if given)."""
    ones = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    ones.CopyInformation(image)
    ones = ones + 1
    out = sitk.Resample(
        ones,
        list(grid.size),
        transform if transform is not None else sitk.Transform(),
        sitk.sitkNearestNeighbor,
        grid.origin,
        grid.spacing,
        grid.direction,
        0,
        sitk.sitkUInt8,
    )
    return sitk.GetArrayFromImage(out).astype(bool)


def overlap_fraction(a: Geometry, b: Geometry) -> float:
    """Fraction of ``a``'s physical bounding box covered by ``b``'s bounding box."""
    ca, cb = a.corners(), b.corners()
    lo_a, hi_a = ca.min(0), ca.max(0)
    lo_b, hi_b = cb.min(0), cb.max(0)
    inter = np.clip(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b), 0, None)
    vol_a = np.prod(np.maximum(hi_a - lo_a, 1e-9))
    return float(np.prod(inter) / vol_a)


def output_slices(n: int, ratio: float) -> int:
    """Output samples from the first slice centre to the last, one in-plane pixel apart
    (spacings stored in float32 may fall a hair short of the stated ratio)."""
    return int(math.floor((n - 1) * ratio + 1e-3)) + 1


#: a scan is thick-slice when its slice spacing is at least this many in-plane spacings
THICK_RATIO = 1.5
#: a thick-slice LR scan whose in-plane spacing is within this factor of its HR partner's
#: has nothing to super-resolve in-plane: through-plane SR alone
INPLANE_SAME = 1.25


def thick_axis_of(spacing) -> int | None:
    """The index axis (x, y, z) whose spacing is >= THICK_RATIO x the others' (None: the
    scan is not thick-slice): what through-plane SR (:mod:`mrisr.throughplane`) works on."""
    sp = np.asarray(spacing, float)
    a = int(np.argmax(sp))
    others = np.delete(sp, a)
    return a if sp[a] >= THICK_RATIO * float(others.max()) else None


def through_plane_pair(hr_spacing, lr_spacing) -> bool:
    """A thick-slice LR scan with an isotropic HR partner at its in-plane spacing (within
    INPLANE_SAME): a pair for through-plane SR, not in-plane SR."""
    if thick_axis_of(lr_spacing) is None or thick_axis_of(hr_spacing) is not None:
        return False
    return max(sorted(lr_spacing)[:2]) / max(hr_spacing) < INPLANE_SAME
