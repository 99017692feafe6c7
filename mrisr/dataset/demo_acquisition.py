"""The demo's MR acquisition physics: protocols, raw-data filters, the MNI152 template
(the object), poses and the k-space acquisition of one scan (:mod:`mrisr.dataset.demo`
describes the simulation and builds the dataset)."""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft
import SimpleITK as sitk
from acvl_utils.cropping_and_padding.bounding_boxes import (
    bounding_box_to_slice,
    get_bbox_from_mask,
    pad_bbox,
)

from mrisr.utilities.errors import MrisrError

logger = logging.getLogger(__name__)

#: Bump when the simulation changes: an existing dataset built by another version is stale.
GENERATOR_VERSION = 1
FILE_ENDING = ".nii.gz"
PARAMS_FILE = "demo_acquisition.json"
CASE_PREFIX = "demo_"


TEMPLATE_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"

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


def window_2d(protocol: AcquisitionProtocol, freqs: np.ndarray) -> np.ndarray:
    """The raw-data filter on the kept ``matrix x matrix`` k-space (FFT order), with the
    lines partial Fourier does not acquire set to zero."""
    if protocol.window == "fermi":
        u = freqs / (protocol.matrix / 2.0)
        r = np.sqrt(u[:, None] ** 2 + u[None, :] ** 2)
        z = np.clip((r - protocol.window_param) / protocol.window_width, -60, 60)
        window = 1.0 / (1.0 + np.exp(z))
    else:
        w1 = window_1d(protocol, freqs)
        window = np.outer(w1, w1)
    return window * protocol.acquired_lines[:, None]


def window_1d(protocol: AcquisitionProtocol, freqs: np.ndarray) -> np.ndarray:
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
class Template:
    """The object: the template upsampled in-plane, plus where the brain is."""

    image: sitk.Image  # float32, in-plane spacing 0.5 mm, z 1 mm
    centre: np.ndarray  # physical centroid of the brain (x, y, z)
    z_range: tuple[float, float]  # physical z extent of the brain
    median: float  # median brain intensity


def load_template(margin: int = 6) -> Template:
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
        up = fourier_upsample(up, TEMPLATE_UPSAMPLING, axis)
    np.maximum(up, 0, out=up)
    out = sitk.GetImageFromArray(up)
    sp = img.GetSpacing()
    out.SetSpacing((sp[0] / TEMPLATE_UPSAMPLING, sp[1] / TEMPLATE_UPSAMPLING, sp[2]))
    out.SetOrigin(origin)
    out.SetDirection(img.GetDirection())
    return Template(out, centre, (min(z_lo, z_hi), max(z_lo, z_hi)), median)


def fourier_upsample(a: np.ndarray, factor: int, axis: int) -> np.ndarray:
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


def rotation(rx: float, ry: float, rz: float) -> np.ndarray:
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


def grid_origin(
    protocol: AcquisitionProtocol, centre_xy: np.ndarray, z0: float, direction: np.ndarray
) -> np.ndarray:
    """Origin of a ``matrix x matrix`` grid whose centre is ``centre_xy``; first slice z0."""
    half = (protocol.matrix - 1) / 2.0 * protocol.spacing
    offset = direction @ np.array([half, half, 0.0])
    return np.array([centre_xy[0] - offset[0], centre_xy[1] - offset[1], z0])


def _slab_object(
    template: Template,
    protocol: AcquisitionProtocol,
    origin: np.ndarray,
    slice_z0: float,
    matrix: np.ndarray,
    translation: np.ndarray,
) -> np.ndarray:
    """The object on the scan's fine in-plane grid, each slice the mean over its slab
    (``SUBSLICES`` samples, midpoint rule), at the pose ``matrix @ q + translation``."""
    m_fine, h = protocol.fine_matrix, SLICE_THICKNESS_MM / SUBSLICES
    ref = sitk.Image([m_fine, m_fine, NUM_SLICES * SUBSLICES], sitk.sitkFloat32)
    ref.SetSpacing((protocol.fine_spacing, protocol.fine_spacing, h))
    ref.SetDirection(template.image.GetDirection())
    ref.SetOrigin((origin[0], origin[1], slice_z0 - (SUBSLICES - 1) / 2.0 * h))
    tf = sitk.AffineTransform(3)
    tf.SetMatrix(matrix.ravel().tolist())
    tf.SetTranslation(translation.tolist())
    fine = sitk.Resample(template.image, ref, tf, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    obj = sitk.GetArrayViewFromImage(fine).reshape(NUM_SLICES, SUBSLICES, m_fine, m_fine)
    return np.maximum(obj.mean(axis=1), 0.0)


def acquire(
    template: Template,
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
    origin = grid_origin(protocol, centre, slice_z0, direction)

    # 1-2. the object on the fine grid, integrated over each slice's slab
    obj = _slab_object(template, protocol, origin, slice_z0, matrix, translation)

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
    window = window_2d(protocol, freqs.astype(float))
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
