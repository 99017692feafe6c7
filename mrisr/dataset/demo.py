"""The embedded demo dataset: paired real-like LR/HR brain MRI simulated from MNI152.

The toolkit is meant for *real* low-resolution scans, whose degradation is not a blur plus
decimation. To demonstrate it without shipping patient data, this module simulates two MR
acquisitions of the same object per session from the 1 mm MNI152 T1 template bundled with
nilearn (nothing is downloaded):

Object
    The template (skull-stripped, 1 mm, background 0) is cropped to the head and upsampled
    in-plane to 0.5 mm by Fourier zero-padding, once per build. Each *case* (session) sees
    the template through its own pose: a random small 3D rotation, a shift and a mild
    anisotropic scaling (a different "subject"), and its own axial slab (different cases
    cover different, partly overlapping, z ranges).

Acquisition (per scan; see :data:`HR_PROTOCOL` and :data:`LR_PROTOCOL`)
    1. *Slice profile*: every slice integrates the object over its 2.7 mm slab (box profile,
       5-point midpoint rule). LR and HR of a pair use the same slice positions.
    2. *Fine grid*: the object is sampled on a 1 mm in-plane grid that spans exactly the
       scan's field of view (``fine_matrix * fine_spacing == matrix * spacing``).
    3. *Complex object*: magnitude times a smooth multiplicative bias field, a global scale,
       and a smooth phase map (constant + linear + quadratic).
    4. *k-space*: 2D FFT per slice; only the central ``matrix x matrix`` frequencies are
       kept (truncation at a non-integer factor for LR: 2.7 / 1.25 = 2.16 relative to HR),
       complex Gaussian noise is added to the kept samples, then the raw-data filter
       (apodisation window) is applied to signal and noise alike (the noise is coloured,
       as on a scanner).
    5. *Image*: magnitude of the inverse FFT at size ``matrix``: an image exactly on the
       scan's grid, no interpolation involved.

    HR: 1.25 mm, 160 x 160 (FOV 200 mm), mild Tukey filter, low noise. LR: 2.7 mm, 80 x 80
    (FOV 216 mm, 8 % larger, as 430 vs 400 mm in Huang et al. 2021), Hamming filter,
    several times more noise. Both: 15 contiguous 2.7 mm slices.

Motion
    Between the HR and LR acquisition of a pair the object moves rigidly: an in-plane
    rotation of up to 3 degrees, an in-plane shift of up to 2 mm and a through-plane shift
    of up to 0.5 mm. The motion is recorded per case in ``demo_acquisition.json``.

Geometry
    Both scans are written in the template's physical space (same direction matrix, LPS
    axes, each grid centred on the same point), so physical space is the common frame of
    a pair, up to the recorded motion.

Layout (the raw dataset contract of ARCHITECTURE.md)::

    DatasetNNN_Name/
      dataset.json, demo_acquisition.json
      imagesHR/demo_000.nii.gz ...   num_pairs pairs + one HR-only case
      imagesLR/demo_000.nii.gz ...   num_pairs pairs + one LR-only case
      imagesHRTs/, imagesLRTs/       num_test_pairs held-out pairs

Command line: ``python -m mrisr.dataset.demo OUTDIR [--seed N] [--num-cases N]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
import SimpleITK as sitk
from acvl_utils.cropping_and_padding.bounding_boxes import (
    bounding_box_to_slice,
    get_bbox_from_mask,
    pad_bbox,
)
from tqdm import tqdm

from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import atomic_path, load_json, save_json

logger = logging.getLogger(__name__)

#: Bump when the simulation changes: an existing dataset built by another version is stale.
GENERATOR_VERSION = 1
TEMPLATE_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
FILE_ENDING = ".nii.gz"
PARAMS_FILE = "demo_acquisition.json"
CASE_PREFIX = "demo_"

NUM_SLICES = 15
SLICE_THICKNESS_MM = 2.7  # equal to the slice spacing: contiguous slices
SUBSLICES = 5  # samples of the slice profile per slice (midpoint rule)
TEMPLATE_UPSAMPLING = 2  # in-plane Fourier upsampling of the 1 mm template (-> 0.5 mm)

# Per-case pose ("subject" and positioning), uniform in [-x, x]
POSE_ROTATION_DEG = (4.0, 4.0, 6.0)  # about x (pitch), y (roll), z (yaw)
POSE_SHIFT_MM = (3.0, 3.0, 0.0)
POSE_SCALE = 0.05  # anisotropic anatomical scaling 1 +- 5 % per axis
# Rigid motion of the object between the HR and the LR acquisition of a pair
MOTION_ROTATION_DEG = 3.0  # in-plane
MOTION_SHIFT_MM = 2.0  # in-plane, per axis
MOTION_THROUGH_PLANE_MM = 0.5
# Intensities
BIAS_STRENGTH = 0.1  # log-amplitude of the smooth bias field per normalised unit (100 mm)
PHASE_LINEAR_RAD = 1.0  # per 100 mm
PHASE_QUADRATIC_RAD = 1.5  # per (100 mm)^2
SCALE_SPREAD = 0.4  # global scale = base * exp(U(-spread, spread))


@dataclass(frozen=True)
class AcquisitionProtocol:
    """One simulated 2D multi-slice acquisition (all lengths in mm).

    ``noise`` is the standard deviation of each channel of the complex noise in the final
    image, relative to the median brain intensity of the template (before the global
    scale). ``window`` is the raw-data filter applied to the kept k-space, separably along
    the readout and the phase-encoding axes: ``hamming`` (0.54 + 0.46 cos(pi u)) or
    ``tukey`` (flat, then a cosine taper over the outer ``window_param`` fraction), with
    u in [-1, 1) the normalised frequency.
    """

    name: str
    spacing: float
    matrix: int
    window: str
    window_param: float
    noise: float
    intensity_base: float
    fine_spacing: float = 1.0
    window_width: float = 0.05  # fermi: transition width (normalised radius)
    partial_fourier: float = 1.0  # fraction of the phase-encoding (y) lines acquired

    @property
    def acquired_lines(self) -> np.ndarray:
        """Integer phase-encoding frequencies acquired (partial Fourier: one side short)."""
        f = np.fft.fftfreq(self.matrix, 1.0 / self.matrix).round()
        return f < (self.partial_fourier - 0.5) * self.matrix

    @property
    def fov(self) -> float:
        return self.matrix * self.spacing

    @property
    def fine_matrix(self) -> int:
        """Size of the fine grid spanning exactly the same field of view."""
        n = round(self.fov / self.fine_spacing)
        if abs(n * self.fine_spacing - self.fov) > 1e-6 or n < self.matrix:
            raise ValueError(
                f"{self.name}: FOV {self.fov} mm is not a multiple of the fine spacing "
                f"{self.fine_spacing} mm, or the fine grid is coarser than the scan"
            )
        return n


HR_PROTOCOL = AcquisitionProtocol(
    name="HR",
    spacing=1.25,
    matrix=160,
    window="tukey",
    window_param=0.3,
    noise=0.015,
    intensity_base=4.0,
)
LR_PROTOCOL = AcquisitionProtocol(
    name="LR",
    spacing=2.7,
    matrix=80,
    window="hamming",
    window_param=0.0,
    noise=0.06,
    intensity_base=1.5,
)
#: LR acquisitions of the demo (``--protocol``); "default" is the one described above
LR_PROTOCOLS = {
    "default": LR_PROTOCOL,
    # a fast spin-echo-like protocol: 3 mm pixels (ratio 2.4), radial Fermi raw filter,
    # 5/8 partial Fourier along the phase-encoding axis (zero-filled), less noise
    "fermi_pf": AcquisitionProtocol(
        name="LR",
        spacing=3.0,
        matrix=72,
        window="fermi",
        window_param=0.85,
        window_width=0.06,
        noise=0.04,
        intensity_base=1.5,
        partial_fourier=0.625,
    ),
}


def _window_2d(protocol: AcquisitionProtocol, freqs: np.ndarray) -> np.ndarray:
    """The raw-data filter on the kept ``matrix x matrix`` k-space (FFT order), with the
    lines partial Fourier does not acquire set to zero."""
    if protocol.window == "fermi":
        u = freqs / (protocol.matrix / 2.0)
        r = np.sqrt(u[:, None] ** 2 + u[None, :] ** 2)
        z = np.clip((r - protocol.window_param) / protocol.window_width, -60, 60)
        window = 1.0 / (1.0 + np.exp(z))
    else:
        w1 = _window_1d(protocol, freqs)
        window = np.outer(w1, w1)
    return window * protocol.acquired_lines[:, None]


def _window_1d(protocol: AcquisitionProtocol, freqs: np.ndarray) -> np.ndarray:
    """Raw-data filter on integer frequencies ``freqs`` of a ``matrix``-point DFT."""
    u = freqs / (protocol.matrix / 2.0)  # [-1, 1)
    if protocol.window == "hamming":
        return 0.54 + 0.46 * np.cos(np.pi * u)
    if protocol.window == "tukey":
        a = protocol.window_param
        w = np.ones_like(u)
        if a > 0:
            edge = np.abs(u) > 1 - a
            w[edge] = 0.5 * (1 + np.cos(np.pi * (np.abs(u[edge]) - (1 - a)) / a))
        return w
    if protocol.window == "none":
        return np.ones_like(u)
    raise ValueError(f"unknown raw-data filter '{protocol.window}'")


# --------------------------------------------------------------------------- template


def template_path() -> Path:
    """Path of the MNI152 T1 template bundled with nilearn (not imported, just located)."""
    try:
        spec = importlib.util.find_spec("nilearn")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MrisrError(
            "the demo dataset is simulated from the MNI152 template bundled with nilearn, "
            "which is not installed: pip install mrisr[demo] (or pip install nilearn)"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / "datasets" / "data" / TEMPLATE_FILE
        if path.is_file():
            return path
    raise MrisrError(
        f"nilearn is installed but its bundled template {TEMPLATE_FILE} was not found; "
        "reinstall it: pip install --force-reinstall nilearn"
    )


@dataclass
class _Template:
    """The object: the template upsampled in-plane, plus where the brain is."""

    image: sitk.Image  # float32, in-plane spacing 0.5 mm, z 1 mm
    centre: np.ndarray  # physical centroid of the brain (x, y, z)
    z_range: tuple[float, float]  # physical z extent of the brain
    median: float  # median brain intensity


def _load_template(margin: int = 6) -> _Template:
    img = sitk.ReadImage(str(template_path()), sitk.sitkFloat32)
    arr = sitk.GetArrayViewFromImage(img)  # (z, y, x)
    mask = arr > 0
    idx = np.nonzero(mask)
    # the brain's bounding box (half-open, nnU-Net's convention) grown by the margin
    bbox = pad_bbox(get_bbox_from_mask(mask), margin, arr.shape)
    lo = [b[0] for b in bbox]
    crop = np.ascontiguousarray(arr[bounding_box_to_slice(bbox)])
    origin = img.TransformContinuousIndexToPhysicalPoint([float(lo[2]), float(lo[1]), float(lo[0])])
    centroid_idx = [float(np.mean(i)) for i in idx]  # z, y, x
    centre = np.array(img.TransformContinuousIndexToPhysicalPoint(centroid_idx[::-1]))
    z_lo = img.TransformIndexToPhysicalPoint([0, 0, int(idx[0].min())])[2]
    z_hi = img.TransformIndexToPhysicalPoint([0, 0, int(idx[0].max())])[2]
    median = float(np.median(arr[mask]))

    up = crop
    for axis in (1, 2):  # y, x: band-limited (Fourier) upsampling, sample 0 stays put
        up = _fourier_upsample(up, TEMPLATE_UPSAMPLING, axis)
    np.maximum(up, 0, out=up)
    out = sitk.GetImageFromArray(up)
    sp = img.GetSpacing()
    out.SetSpacing((sp[0] / TEMPLATE_UPSAMPLING, sp[1] / TEMPLATE_UPSAMPLING, sp[2]))
    out.SetOrigin(origin)
    out.SetDirection(img.GetDirection())
    return _Template(out, centre, (min(z_lo, z_hi), max(z_lo, z_hi)), median)


def _fourier_upsample(a: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """Upsample a real array along ``axis`` by zero-padding its spectrum."""
    n = a.shape[axis]
    spec = scipy.fft.rfft(a, axis=axis, workers=-1)
    if n % 2 == 0:  # the Nyquist bin becomes an ordinary bin shared by +-n/2
        sl = [slice(None)] * a.ndim
        sl[axis] = -1
        spec[tuple(sl)] *= 0.5
    out = scipy.fft.irfft(spec, n=n * factor, axis=axis, workers=-1) * factor
    return out.astype(np.float32)


# --------------------------------------------------------------------------- geometry


def _rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    """Rotation matrix R = Rz Ry Rx, angles in radians."""
    cx, sx, cy, sy, cz, sz = (
        math.cos(rx),
        math.sin(rx),
        math.cos(ry),
        math.sin(ry),
        math.cos(rz),
        math.sin(rz),
    )
    r_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    r_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return r_z @ r_y @ r_x


def _grid_origin(
    protocol: AcquisitionProtocol, centre_xy: np.ndarray, z0: float, direction: np.ndarray
) -> np.ndarray:
    """Origin of a ``matrix x matrix`` grid whose centre is ``centre_xy``; first slice z0."""
    half = (protocol.matrix - 1) / 2.0 * protocol.spacing
    offset = direction @ np.array([half, half, 0.0])
    return np.array([centre_xy[0] - offset[0], centre_xy[1] - offset[1], z0])


def _acquire(
    template: _Template,
    protocol: AcquisitionProtocol,
    centre: np.ndarray,
    slice_z0: float,
    matrix: np.ndarray,
    translation: np.ndarray,
    rng: np.random.Generator,
    scale: float,
) -> sitk.Image:
    """Simulate one scan; the object point shown at scanner point q is ``matrix @ q + t``.

    Draws, in this order, the bias field, the phase map and the noise from ``rng``.
    """
    direction = np.array(template.image.GetDirection()).reshape(3, 3)
    m_fine = protocol.fine_matrix
    n = protocol.matrix
    origin = _grid_origin(protocol, centre, slice_z0, direction)

    # 1-2. the object on the fine grid, integrated over each slice's slab
    h = SLICE_THICKNESS_MM / SUBSLICES
    ref = sitk.Image([m_fine, m_fine, NUM_SLICES * SUBSLICES], sitk.sitkFloat32)
    ref.SetSpacing((protocol.fine_spacing, protocol.fine_spacing, h))
    ref.SetDirection(template.image.GetDirection())
    ref.SetOrigin((origin[0], origin[1], slice_z0 - (SUBSLICES - 1) / 2.0 * h))
    tf = sitk.AffineTransform(3)
    tf.SetMatrix(matrix.ravel().tolist())
    tf.SetTranslation(translation.tolist())
    fine = sitk.Resample(template.image, ref, tf, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    obj = sitk.GetArrayViewFromImage(fine).reshape(NUM_SLICES, SUBSLICES, m_fine, m_fine)
    obj = np.maximum(obj.mean(axis=1), 0.0)

    # 3. complex object: bias field, global scale, smooth phase (physical coordinates)
    j = np.arange(m_fine) * protocol.fine_spacing
    xs = origin[0] + direction[0, 0] * j  # direction is diagonal for axial scans
    ys = origin[1] + direction[1, 1] * j
    zs = slice_z0 + np.arange(NUM_SLICES) * SLICE_THICKNESS_MM
    zz, yy, xx = np.meshgrid(
        (zs - centre[2]) / 100.0, (ys - centre[1]) / 100.0, (xs - centre[0]) / 100.0, indexing="ij"
    )
    b = rng.uniform(-1, 1, size=4)
    log_bias = BIAS_STRENGTH * (b[0] * xx + b[1] * yy + b[2] * zz + b[3] * (xx**2 + yy**2 - 0.25))
    p = rng.uniform(-1, 1, size=4)
    phase = (
        np.pi * p[0]
        + PHASE_LINEAR_RAD * (p[1] * xx + p[2] * yy)
        + PHASE_QUADRATIC_RAD * p[3] * (xx**2 + yy**2)
    )
    cobj = (obj * (scale * np.exp(log_bias))) * np.exp(1j * phase)

    # 4. k-space truncation to the central n x n frequencies of the fine grid's FFT
    freqs = np.fft.fftfreq(n, 1.0 / n).round().astype(int)  # integer frequencies, FFT order
    keep = freqs % m_fine
    kspace = scipy.fft.fft2(cobj, workers=-1)[:, keep][:, :, keep] * (n * n / (m_fine * m_fine))
    window = _window_2d(protocol, freqs.astype(float))
    # noise std in the final image = sigma_k / n * rms(window); solve for sigma_k
    sigma_img = protocol.noise * template.median * scale
    sigma_k = sigma_img * n / math.sqrt(float(np.mean(window**2)))
    noise = rng.standard_normal((2, NUM_SLICES, n, n))
    kspace = kspace + sigma_k * (noise[0] + 1j * noise[1])

    # 5. raw-data filter, inverse FFT at the scan's matrix size, magnitude
    img = np.abs(scipy.fft.ifft2(kspace * window, workers=-1)).astype(np.float32)
    out = sitk.GetImageFromArray(img)
    out.SetSpacing((protocol.spacing, protocol.spacing, SLICE_THICKNESS_MM))
    out.SetOrigin(tuple(float(v) for v in origin))
    out.SetDirection(template.image.GetDirection())
    return out


# --------------------------------------------------------------------------- cases


@dataclass
class _Case:
    name: str
    role: str  # "pair", "hr_only", "lr_only", "test_pair"
    index: int
    slab_centre_z: float


def _plan_cases(num_pairs: int, num_test_pairs: int) -> list[_Case]:
    roles = ["pair"] * num_pairs + ["hr_only", "lr_only"] + ["test_pair"] * num_test_pairs
    return [_Case(f"{CASE_PREFIX}{i:03d}", r, i, 0.0) for i, r in enumerate(roles)]


def _case_folders(role: str) -> list[str]:
    return {
        "pair": ["imagesHR", "imagesLR"],
        "hr_only": ["imagesHR"],
        "lr_only": ["imagesLR"],
        "test_pair": ["imagesHRTs", "imagesLRTs"],
    }[role]


def _simulate_case(
    template: _Template, case: _Case, seed: int, lr_protocol: AcquisitionProtocol = LR_PROTOCOL
) -> tuple[dict[str, sitk.Image], dict[str, Any]]:
    """Both acquisitions of one session (only those its role needs are simulated)."""
    rng = np.random.default_rng([seed, case.index])
    centre = np.array([template.centre[0], template.centre[1], case.slab_centre_z])
    slice_z0 = case.slab_centre_z - (NUM_SLICES - 1) / 2.0 * SLICE_THICKNESS_MM

    rot = np.deg2rad(rng.uniform(-1, 1, 3) * np.array(POSE_ROTATION_DEG))
    shift = rng.uniform(-1, 1, 3) * np.array(POSE_SHIFT_MM)
    stretch = 1.0 + rng.uniform(-POSE_SCALE, POSE_SCALE, 3)
    a_case = _rotation(*rot) @ np.diag(stretch)

    theta = np.deg2rad(rng.uniform(-MOTION_ROTATION_DEG, MOTION_ROTATION_DEG))
    t_mot = np.array(
        [
            rng.uniform(-MOTION_SHIFT_MM, MOTION_SHIFT_MM),
            rng.uniform(-MOTION_SHIFT_MM, MOTION_SHIFT_MM),
            rng.uniform(-MOTION_THROUGH_PLANE_MM, MOTION_THROUGH_PLANE_MM),
        ]
    )
    r_mot = _rotation(0.0, 0.0, theta)
    scales = {
        p.name: p.intensity_base * math.exp(rng.uniform(-SCALE_SPREAD, SCALE_SPREAD))
        for p in (HR_PROTOCOL, lr_protocol)
    }
    # independent streams for the two scans, so that a scan never depends on the other
    scan_rngs = {
        p.name: np.random.default_rng([seed, case.index, k])
        for k, p in enumerate((HR_PROTOCOL, lr_protocol))
    }

    # HR: object point = A (q - c) + c + s.  LR: the same after the motion
    # q -> R (q - c) + c + t, i.e. the anatomy at LR point q is at HR point R (q - c) + c + t.
    c = centre
    transforms = {
        "HR": (a_case, c + shift - a_case @ c),
        "LR": (a_case @ r_mot, c + shift + a_case @ t_mot - a_case @ r_mot @ c),
    }
    images: dict[str, sitk.Image] = {}
    folders = _case_folders(case.role)
    for protocol in (HR_PROTOCOL, lr_protocol):
        if not any(f.startswith(f"images{protocol.name}") for f in folders):
            continue
        mat, trans = transforms[protocol.name]
        images[protocol.name] = _acquire(
            template,
            protocol,
            centre,
            slice_z0,
            mat,
            trans,
            scan_rngs[protocol.name],
            scales[protocol.name],
        )
    info = {
        "role": case.role,
        "slab_centre_z_mm": case.slab_centre_z,
        "first_slice_z_mm": slice_z0,
        "pose": {
            "rotation_deg": np.rad2deg(rot).tolist(),
            "shift_mm": shift.tolist(),
            "scale": stretch.tolist(),
        },
        "lr_motion": {
            "in_plane_rotation_deg": float(np.rad2deg(theta)),
            "shift_mm": t_mot.tolist(),
            "centre_mm": c.tolist(),
            "lr_to_hr_matrix": r_mot.tolist(),
            "lr_to_hr_translation_mm": (c + t_mot - r_mot @ c).tolist(),
        },
        "intensity_scale": {k: v for k, v in scales.items() if k in images},
    }
    return images, info


def _slab_centres(template: _Template, n: int, seed: int) -> list[float]:
    """Spread slab centres over the brain (margin 8 mm), jittered and shuffled."""
    half = NUM_SLICES * SLICE_THICKNESS_MM / 2.0
    lo, hi = template.z_range[0] + half + 8.0, template.z_range[1] - half - 8.0
    rng = np.random.default_rng([seed, 10**6])
    centres = np.linspace(lo, hi, n) if n > 1 else np.array([(lo + hi) / 2.0])
    step = (hi - lo) / max(n - 1, 1)
    centres = centres + rng.uniform(-0.25, 0.25, n) * step
    return [round(float(z), 2) for z in rng.permutation(centres)]


# --------------------------------------------------------------------------- dataset


def _build_parameters(
    name: str, seed: int, num_pairs: int, num_test_pairs: int, protocol: str = "default"
) -> dict:
    params = {
        "generator_version": GENERATOR_VERSION,
        "name": name,
        "seed": seed,
        "num_pairs": num_pairs,
        "num_test_pairs": num_test_pairs,
    }
    if protocol != "default":
        params["protocol"] = protocol
    return params


def _expected_files(num_pairs: int, num_test_pairs: int) -> list[str]:
    files = ["dataset.json", PARAMS_FILE]
    for case in _plan_cases(num_pairs, num_test_pairs):
        files += [f"{folder}/{case.name}{FILE_ENDING}" for folder in _case_folders(case.role)]
    return files


def _is_complete(folder: Path, params: dict) -> bool:
    """True if ``folder`` holds a demo dataset built with ``params``; raises if foreign."""
    marker = folder / PARAMS_FILE
    if not marker.is_file():
        raise MrisrError(
            f"{folder} exists and is not a demo dataset built by mrisr; move it away, or give "
            "mrisr_demo another --workdir"
        )
    try:
        built = load_json(marker).get("build", {})
    except (OSError, ValueError):
        built = {}
    if built != params:
        raise MrisrError(
            f"{folder} was built with other parameters ({built}); delete it to rebuild it "
            "(API: build_demo_dataset(..., overwrite=True)), or give mrisr_demo another --workdir"
        )
    missing = [
        f
        for f in _expected_files(params["num_pairs"], params["num_test_pairs"])
        if not (folder / f).is_file()
    ]
    if missing:
        logger.warning("%s is incomplete (missing %s); rebuilding it", folder, missing[0])
        return False
    return True


def build_demo_dataset(
    raw_root: str | os.PathLike,
    dataset_id: int = 1,
    name: str = "MNIDemo",
    seed: int = 0,
    num_pairs: int = 6,
    num_test_pairs: int = 2,
    overwrite: bool = False,
    protocol: str = "default",
) -> Path:
    """Simulate the demo dataset into ``raw_root/DatasetNNN_Name`` and return that folder.

    ``num_pairs`` training sessions with both an HR and an LR scan, one HR-only and one
    LR-only session, and ``num_test_pairs`` held-out sessions in ``imagesHRTs`` /
    ``imagesLRTs``. Deterministic for a given ``seed``. An existing complete dataset built
    with the same parameters is returned as is (``overwrite=True`` rebuilds it). The build
    happens in a hidden sibling folder that is renamed at the end, so an interrupted build
    never leaves a half-written dataset behind.
    """
    if not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        raise MrisrError(f"dataset id must be an integer in 1..999, got {dataset_id!r}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise MrisrError(f"dataset name must be letters, digits, '_' or '-', got {name!r}")
    if num_pairs < 1:
        raise MrisrError(f"num_pairs must be >= 1, got {num_pairs}")
    if num_test_pairs < 0:
        raise MrisrError(f"num_test_pairs must be >= 0, got {num_test_pairs}")
    if seed < 0:
        raise MrisrError(f"seed must be >= 0, got {seed}")
    if protocol not in LR_PROTOCOLS:
        raise MrisrError(
            f"unknown demo protocol '{protocol}'; choose one of {', '.join(LR_PROTOCOLS)}"
        )

    raw_root = Path(raw_root)
    folder_name = f"Dataset{dataset_id:03d}_{name}"
    final = raw_root / folder_name
    params = _build_parameters(name, seed, num_pairs, num_test_pairs, protocol)
    if raw_root.is_dir():
        clash = [
            p.name
            for p in raw_root.glob(f"Dataset{dataset_id:03d}_*")
            if p.is_dir() and p.name != folder_name
        ]
        if clash:
            raise MrisrError(
                f"dataset id {dataset_id} is already used by {clash[0]} in {raw_root}; "
                "choose another id"
            )
    replace = final.exists()  # overwrite=True, or an incomplete earlier demo build
    if replace and not overwrite and _is_complete(final, params):
        logger.info("demo dataset already built: %s", final)
        return final

    template_path()  # fail early, before creating anything, if nilearn is missing
    raw_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder_name}.build-", dir=raw_root))
    try:
        _build_into(tmp, params)
        try:
            _swap_into_place(tmp, final, replace)
        except OSError:
            # another process finished the same build first: keep theirs if it is complete
            if replace or not (final.exists() and _is_complete(final, params)):
                raise
            logger.info("demo dataset was built concurrently: %s", final)
            shutil.rmtree(tmp, ignore_errors=True)
            return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("demo dataset written to %s", final)
    return final


def _swap_into_place(tmp: Path, final: Path, replace: bool) -> None:
    """Rename the finished build to ``final``; with ``replace`` an existing one is removed.

    Without ``replace`` an existing ``final`` (a concurrent build) makes this raise OSError.
    """
    old = None
    if replace and final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _build_into(folder: Path, params: dict) -> None:
    t0 = time.perf_counter()
    seed = params["seed"]
    lr_protocol = LR_PROTOCOLS[params.get("protocol", "default")]
    template = _load_template()
    cases = _plan_cases(params["num_pairs"], params["num_test_pairs"])
    for case, z in zip(cases, _slab_centres(template, len(cases), seed)):
        case.slab_centre_z = z

    infos: dict[str, Any] = {}
    for case in tqdm(cases, desc="simulating demo scans", unit="case", disable=None):
        images, info = _simulate_case(template, case, seed, lr_protocol)
        for folder_name in _case_folders(case.role):
            kind = folder_name[len("images") :][:2]  # "HR" or "LR"
            dest = folder / folder_name / f"{case.name}{FILE_ENDING}"
            with atomic_path(dest) as tmp_file:
                sitk.WriteImage(images[kind], str(tmp_file), True)
        infos[case.name] = info
        logger.debug("simulated %s (%s)", case.name, case.role)

    n_train = sum(c.role != "test_pair" for c in cases)
    save_json(
        {
            "name": params["name"],
            "description": (
                "mrisr demo: 2D multi-slice T1 brain MRI simulated from the MNI152 template "
                "(nilearn). Each session has an HR scan (1.25 x 1.25 x 2.7 mm) and a real-like "
                f"LR scan ({lr_protocol.spacing:g} x {lr_protocol.spacing:g} x 2.7 mm, k-space "
                f"truncation, {lr_protocol.window} filter"
                + (", partial Fourier" if lr_protocol.partial_fourier < 1 else "")
                + ", more noise, larger FOV, rigid motion between the two). See "
                "documentation/demo_dataset.md."
            ),
            "modality": "T1",
            "file_ending": FILE_ENDING,
            "numTraining": n_train,
        },
        folder / "dataset.json",
    )
    save_json(
        {
            "build": params,
            "template": TEMPLATE_FILE,
            "protocols": {p.name: asdict(p) for p in (HR_PROTOCOL, lr_protocol)},
            "lr_protocol": params.get("protocol", "default"),
            "num_slices": NUM_SLICES,
            "slice_thickness_mm": SLICE_THICKNESS_MM,
            "cases": infos,
        },
        folder / PARAMS_FILE,
    )
    logger.info("simulated %d cases in %.1f s", len(cases), time.perf_counter() - t0)


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mrisr.dataset.demo",
        description="Build the mrisr demo dataset (simulated real-like LR/HR MRI pairs from "
        "the MNI152 template bundled with nilearn) into OUTDIR/DatasetNNN_Name.",
    )
    parser.add_argument("outdir", help="raw dataset root (e.g. $mrisr_raw)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--num-cases",
        "--num-pairs",
        dest="num_pairs",
        type=int,
        default=6,
        help="number of training LR/HR pairs (default 6; one HR-only and one LR-only case "
        "are always added)",
    )
    parser.add_argument("--num-test-pairs", type=int, default=2, help="held-out pairs (default 2)")
    parser.add_argument("-d", "--dataset-id", type=int, default=1, help="dataset id (default 1)")
    parser.add_argument("--name", default="MNIDemo", help="dataset name (default MNIDemo)")
    parser.add_argument("--overwrite", action="store_true", help="rebuild if it exists")
    parser.add_argument(
        "--protocol",
        default="default",
        choices=sorted(LR_PROTOCOLS),
        help="the LR acquisition (default: 2.7 mm, Hamming; fermi_pf: 3 mm, Fermi filter, "
        "5/8 partial Fourier, less noise)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        path = build_demo_dataset(
            args.outdir,
            dataset_id=args.dataset_id,
            name=args.name,
            seed=args.seed,
            num_pairs=args.num_pairs,
            num_test_pairs=args.num_test_pairs,
            overwrite=args.overwrite,
            protocol=args.protocol,
        )
    except MrisrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"demo dataset ready: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
