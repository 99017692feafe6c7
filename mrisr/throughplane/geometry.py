"""Thick-slice geometry: which axis is thick, how thick the slices are, and the output grid.

A 2D multi-slice scan stores its slice *spacing* (centre to centre); its slice *thickness*
(the width of the excited slab) is what blurs it, and differs from the spacing when there
are gaps. NIfTI keeps only the spacing, so the thickness comes from, in this order: the
caller (``--slice-thickness``), DICOM SliceThickness (0018,0050) checked against the
positions' spacing, the dataset's ``dataset.json`` (``"slice_thickness"``); otherwise it is
taken equal to the spacing, and the record says so (``thickness_source = "assumed"``).

The output grid keeps the direction and the first slice centre, and samples the thick axis
at the in-plane spacing from the first slice centre to the last (``floor((n - 1) * r) + 1``
samples for the ratio ``r = spacing / in-plane spacing``, integer or not).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk

from mrisr.imageio.resampling import THICK_RATIO, output_slices, thick_axis_of
from mrisr.imageio.sitk_io import Geometry
from mrisr.utilities.errors import IntegrityError

#: in-plane pixels must be square within this fraction (the two views are fused)
SQUARE_TOLERANCE = 0.05
#: DICOM SliceThickness (0018,0050)
SLICE_THICKNESS_TAG = "0018|0050"


@dataclass(frozen=True)
class ThickSliceGeometry:
    """The thick axis of one scan and its slab: all lengths in mm."""

    axis: int  # SimpleITK index axis (0=x, 1=y, 2=z) that is thick
    inplane_spacing: float
    slice_spacing: float
    slice_thickness: float
    thickness_source: str  # "argument", "dicom", "dataset.json", "model" or "assumed"

    @property
    def ratio(self) -> float:
        """Slice spacing in in-plane pixels (the exact, possibly non-integer, factor)."""
        return self.slice_spacing / self.inplane_spacing

    @property
    def thickness_px(self) -> float:
        return self.slice_thickness / self.inplane_spacing

    @property
    def gap(self) -> float:
        """Slice gap in mm (negative: overlapping slices)."""
        return self.slice_spacing - self.slice_thickness

    @property
    def numpy_axis(self) -> int:
        return 2 - self.axis

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(ratio=self.ratio, gap=self.gap)
        return d


def thick_axis(image: sitk.Image) -> int | None:
    """The index axis whose spacing is >= THICK_RATIO x the others' (None: not thick-slice)."""
    return thick_axis_of(image.GetSpacing())


def slice_geometry(
    image: sitk.Image, name: str, thickness: float | None = None, source: str = "argument"
) -> ThickSliceGeometry:
    """The thick-slice geometry of ``image`` (``name`` is the file, for messages).

    ``thickness`` with its ``source`` overrides the assumption thickness = spacing; a scan
    that is not thick-slice, or has non-square in-plane pixels, is refused in one line."""
    a = thick_axis(image)
    sp = image.GetSpacing()
    if a is None:
        raise IntegrityError(
            f"{name}: not a thick-slice scan (spacing {tuple(round(v, 3) for v in sp)} mm; "
            f"through-plane SR needs one spacing >= {THICK_RATIO}x the in-plane spacing)"
        )
    inplane = [sp[i] for i in range(3) if i != a]
    if abs(inplane[0] - inplane[1]) > SQUARE_TOLERANCE * max(inplane):
        raise IntegrityError(
            f"{name}: in-plane pixels are not square ({inplane[0]:.3f} x {inplane[1]:.3f} mm); "
            "resample the scan in-plane to square pixels first"
        )
    if image.GetSize()[a] < 3:
        raise IntegrityError(f"{name}: only {image.GetSize()[a]} slices; need at least 3")
    if thickness is None:
        thickness, source = float(sp[a]), "assumed"
    if not (math.isfinite(thickness) and thickness > 0):
        raise IntegrityError(f"{name}: slice thickness must be a positive number, got {thickness}")
    if thickness > 3 * sp[a]:
        raise IntegrityError(
            f"{name}: slice thickness {thickness:g} mm is more than 3x the slice spacing "
            f"{sp[a]:g} mm; check --slice-thickness"
        )
    return ThickSliceGeometry(a, float(np.mean(inplane)), float(sp[a]), float(thickness), source)


def dicom_thickness(tags: dict[str, str], spacing: float, name: str) -> float | None:
    """SliceThickness from a DICOM series' tags, checked against the positions' spacing.

    A thickness larger than the spacing by more than 1 % (overlapping slabs are rare in 2D
    multi-slice; a stale tag is more likely) is refused with the two numbers."""
    raw = tags.get(SLICE_THICKNESS_TAG, "").strip()
    if not raw:
        return None
    try:
        t = float(raw)
    except ValueError:
        raise IntegrityError(f"{name}: SliceThickness '{raw}' is not a number") from None
    if not (t > 0 and math.isfinite(t)):
        return None
    if t > 1.01 * spacing:
        raise IntegrityError(
            f"{name}: SliceThickness {t:g} mm exceeds the spacing of the slice positions "
            f"{spacing:g} mm; give the thickness with --slice-thickness"
        )
    return t


def output_geometry(image: sitk.Image, g: ThickSliceGeometry) -> Geometry:
    """The isotropic-in-mm grid of a through-plane prediction (see the module docstring)."""
    geom = Geometry.of(image)
    n = image.GetSize()[g.axis]
    size = list(geom.size)
    size[g.axis] = output_slices(n, g.ratio)
    spacing = list(geom.spacing)
    spacing[g.axis] = g.inplane_spacing
    return Geometry(tuple(size), tuple(spacing), geom.origin, geom.direction)
