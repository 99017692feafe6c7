"""The through-plane configurations a thick-slice dataset gets, with the reasons.

A dataset whose LR scans are thick-slice (slice spacing >= ``THICK_RATIO`` x in-plane) gets
the through-plane configurations of :mod:`mrisr.throughplane`: the slice profile measured
from the fold's scans (``learned_tp_edsr``, the default), a box or a Gaussian of the stated
thickness (``rect_tp_edsr``, ``gaussian_tp_edsr``), and the B-spline baseline
(``bspline_tp``). When the LR's in-plane spacing is the HR's too (within ``INPLANE_SAME``),
nothing is left to do in-plane and these are the only configurations; otherwise they stand
beside the in-plane ones (the paper's combined pipeline: in-plane SR, then through-plane).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mrisr.imageio.resampling import INPLANE_SAME, THICK_RATIO, thick_axis_of
from mrisr.planning.fingerprint import DatasetFingerprint
from mrisr.plans import THROUGH_PLANE_BASELINE
from mrisr.throughplane.profile_models import ThroughPlanePlanning, profile_models

#: training budget per fold (s) and iteration ceiling: the through-plane benchmark's budget
#: (documentation/throughplane.md: +2.3 to +3.3 dB over B-spline on the demo protocols)
SECONDS = 300
ITERATIONS = 4000


def thick_lr_scans(fp: DatasetFingerprint) -> list:
    """The LR scans whose slice spacing is >= THICK_RATIO x their in-plane spacing."""
    return [s for s in fp.scans("lr") if thick_axis_of(s.geometry["spacing"]) is not None]


def inplane_ratio(fp: DatasetFingerprint) -> float | None:
    """The median LR/HR in-plane spacing ratio of the pairs (None: no pairs)."""
    ratios = [float(np.mean(c.pair.inplane_ratio)) for c in fp.pairs]
    return float(np.median(ratios)) if ratios else None


def through_plane_only(fp: DatasetFingerprint) -> bool:
    """Thick-slice LR at the HR's in-plane spacing (or no HR to compare): through-plane SR only."""
    if not thick_lr_scans(fp):
        return False
    r = inplane_ratio(fp)
    return r is None or r < INPLANE_SAME


def plan_through_plane(
    fp: DatasetFingerprint, decide: Callable[[str, str], None], seconds: float = SECONDS
) -> dict[str, dict]:
    """The through-plane configurations (none when no LR scan is thick-slice); ``decide``
    records each decision with its reason."""
    thick = thick_lr_scans(fp)
    if not thick:
        return {}
    n_lr = len(fp.scans("lr"))
    sp = float(np.median([max(s.geometry["spacing"]) for s in thick]))
    ip = float(np.median([sorted(s.geometry["spacing"])[1] for s in thick]))
    iso_hr = [s for s in fp.scans("hr") if thick_axis_of(s.geometry["spacing"]) is None]
    decide(
        "through_plane",
        f"{len(thick)} of {n_lr} LR scans are thick-slice (slices {sp:.3g} mm, in-plane "
        f"{ip:.3g} mm: ratio {sp / ip:.3g} >= {THICK_RATIO}): through-plane configurations, "
        "one model per fold from the fold's LR scans (a new scan then takes seconds)",
    )
    decide(
        "through_plane_profile",
        "learned_tp_edsr (default): a box whose width each fold measures from its scans' "
        "through-plane spectrum; rect_tp_edsr / gaussian_tp_edsr: a box / Gaussian of the "
        "stated thickness (DICOM SliceThickness, else dataset.json's slice_thickness, else "
        "the spacing, with a warning); bspline_tp: cubic B-spline, nothing trained",
    )
    decide(
        "through_plane_training",
        f"{seconds:g} s per fold (at most {ITERATIONS} iterations), EDSR 8x32 at scale 1 on "
        "the B-spline; "
        + (
            "the isotropic HR scans of the fold's training cases join as references along all "
            f"axes ({len(iso_hr)} in the dataset)"
            if iso_hr
            else "no isotropic HR scans: the LR scans' own in-plane slices only"
        ),
    )
    context = ThroughPlanePlanning(
        settings={
            "iterations": ITERATIONS,
            "seconds": seconds,
            "hr_references": bool(iso_hr),
            "slice_thickness": None,  # per scan: DICOM, dataset.json, else the spacing
            "slice_spacing_mm": sp,
            "inplane_spacing_mm": ip,
        },
        base={"axis": "through-plane", "degradation": None, "sr": None, "sr_input": "raw"},
    )
    configurations: dict[str, dict] = {}
    for model in profile_models():  # each slice-profile model's (the measured one first)
        configurations.update(model.plan(context))
    configurations[THROUGH_PLANE_BASELINE] = context.configuration(
        "B-spline (through-plane)", "cubic B-spline along the slice axis (no training)", None
    )
    return configurations
