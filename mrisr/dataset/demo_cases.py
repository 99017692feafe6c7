"""The sessions of the demo dataset (:mod:`mrisr.dataset.demo`): which cases there are,
where their slabs lie, and the random pose and motion of each session, simulated through
:func:`mrisr.dataset.demo_acquisition.acquire`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

from mrisr.dataset.demo_acquisition import (
    CASE_PREFIX,
    HR_PROTOCOL,
    LR_PROTOCOL,
    MOTION_ROTATION_DEG,
    MOTION_SHIFT_MM,
    MOTION_THROUGH_PLANE_MM,
    NUM_SLICES,
    POSE_ROTATION_DEG,
    POSE_SCALE,
    POSE_SHIFT_MM,
    SCALE_SPREAD,
    SLICE_THICKNESS_MM,
    AcquisitionProtocol,
    Template,
    acquire,
    rotation,
)


@dataclass
class Case:
    name: str
    role: str  # "pair", "hr_only", "lr_only", "test_pair"
    index: int
    slab_centre_z: float


def plan_cases(num_pairs: int, num_test_pairs: int) -> list[Case]:
    roles = ["pair"] * num_pairs + ["hr_only", "lr_only"] + ["test_pair"] * num_test_pairs
    return [Case(f"{CASE_PREFIX}{i:03d}", r, i, 0.0) for i, r in enumerate(roles)]


def case_folders(role: str) -> list[str]:
    return {
        "pair": ["imagesHR", "imagesLR"],
        "hr_only": ["imagesHR"],
        "lr_only": ["imagesLR"],
        "test_pair": ["imagesHRTs", "imagesLRTs"],
    }[role]


@dataclass
class _Session:
    """The random draws of one session: the subject's pose and the motion between scans."""

    rot: np.ndarray  # pose rotation (radians, 3 axes)
    shift: np.ndarray  # pose shift (mm)
    stretch: np.ndarray  # pose scaling
    theta: float  # in-plane motion rotation (radians)
    t_mot: np.ndarray  # motion shift (mm)
    scales: dict[str, float]  # global intensity scale per protocol name


def _draw_session(rng: np.random.Generator, protocols: tuple) -> _Session:
    rot = np.deg2rad(rng.uniform(-1, 1, 3) * np.array(POSE_ROTATION_DEG))
    shift = rng.uniform(-1, 1, 3) * np.array(POSE_SHIFT_MM)
    stretch = 1.0 + rng.uniform(-POSE_SCALE, POSE_SCALE, 3)
    k = protocols[-1].motion_scale  # the LR protocol's motion against the HR
    theta = np.deg2rad(rng.uniform(-MOTION_ROTATION_DEG * k, MOTION_ROTATION_DEG * k))
    t_mot = np.array(
        [
            rng.uniform(-MOTION_SHIFT_MM * k, MOTION_SHIFT_MM * k),
            rng.uniform(-MOTION_SHIFT_MM * k, MOTION_SHIFT_MM * k),
            rng.uniform(-MOTION_THROUGH_PLANE_MM * k, MOTION_THROUGH_PLANE_MM * k),
        ]
    )
    scales = {
        p.name: p.intensity_base * math.exp(rng.uniform(-SCALE_SPREAD, SCALE_SPREAD))
        for p in protocols
    }
    return _Session(rot, shift, stretch, theta, t_mot, scales)


def _session_info(
    case: Case, slice_z0: float, s: _Session, c: np.ndarray, kinds, truths: dict
) -> dict:
    """The session's record in ``demo_acquisition.json`` (with each scan's noise truth)."""
    r_mot = rotation(0.0, 0.0, s.theta)
    return {
        "role": case.role,
        "slab_centre_z_mm": case.slab_centre_z,
        "first_slice_z_mm": slice_z0,
        "pose": {
            "rotation_deg": np.rad2deg(s.rot).tolist(),
            "shift_mm": s.shift.tolist(),
            "scale": s.stretch.tolist(),
        },
        "lr_motion": {
            "in_plane_rotation_deg": float(np.rad2deg(s.theta)),
            "shift_mm": s.t_mot.tolist(),
            "centre_mm": c.tolist(),
            "lr_to_hr_matrix": r_mot.tolist(),
            "lr_to_hr_translation_mm": (c + s.t_mot - r_mot @ c).tolist(),
        },
        "intensity_scale": {k: v for k, v in s.scales.items() if k in kinds},
        "truth": truths,
    }


def simulate_case(
    template: Template, case: Case, seed: int, lr_protocol: AcquisitionProtocol = LR_PROTOCOL
) -> tuple[dict[str, sitk.Image], dict[str, Any]]:
    """Both acquisitions of one session (only those its role needs are simulated)."""
    protocols = (HR_PROTOCOL, lr_protocol)
    rng = np.random.default_rng([seed, case.index])
    c = np.array([template.centre[0], template.centre[1], case.slab_centre_z])
    slice_z0 = case.slab_centre_z - (NUM_SLICES - 1) / 2.0 * SLICE_THICKNESS_MM
    s = _draw_session(rng, protocols)
    a_case = rotation(*s.rot) @ np.diag(s.stretch)
    r_mot = rotation(0.0, 0.0, s.theta)
    # independent streams for the two scans, so that a scan never depends on the other
    scan_rngs = {
        p.name: np.random.default_rng([seed, case.index, k]) for k, p in enumerate(protocols)
    }
    # HR: object point = A (q - c) + c + s.  LR: the same after the motion
    # q -> R (q - c) + c + t, i.e. the anatomy at LR point q is at HR point R (q - c) + c + t.
    transforms = {
        "HR": (a_case, c + s.shift - a_case @ c),
        "LR": (a_case @ r_mot, c + s.shift + a_case @ s.t_mot - a_case @ r_mot @ c),
    }
    images: dict[str, sitk.Image] = {}
    truths: dict[str, dict] = {}
    folders = case_folders(case.role)
    for protocol in protocols:
        if not any(f.startswith(f"images{protocol.name}") for f in folders):
            continue
        mat, trans = transforms[protocol.name]
        images[protocol.name], truths[protocol.name] = acquire(
            template,
            protocol,
            c,
            slice_z0,
            mat,
            trans,
            scan_rngs[protocol.name],
            s.scales[protocol.name],
        )
    return images, _session_info(case, slice_z0, s, c, images, truths)


def slab_centres(template: Template, n: int, seed: int) -> list[float]:
    """Spread slab centres over the brain (margin 8 mm), jittered and shuffled."""
    half = NUM_SLICES * SLICE_THICKNESS_MM / 2.0
    lo, hi = template.z_range[0] + half + 8.0, template.z_range[1] - half - 8.0
    rng = np.random.default_rng([seed, 10**6])
    centres = np.linspace(lo, hi, n) if n > 1 else np.array([(lo + hi) / 2.0])
    step = (hi - lo) / max(n - 1, 1)
    centres = centres + rng.uniform(-0.25, 0.25, n) * step
    return [round(float(z), 2) for z in rng.permutation(centres)]
