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
from scipy import ndimage

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
    # The protocol family's effects (:mod:`mrisr.dataset.demo_protocol_family`); the
    # defaults are the fixed demo protocols' acquisition, unchanged.
    phase_resolution: float = 1.0  # fraction of the matrix's y frequencies acquired (zero-filled)
    intensity_gamma: float = (
        1.0  # contrast: f(x) = (1 + c) x^gamma / (1 + c x^gamma), x = obj / median
    )
    intensity_saturation: float = 0.0  # c of that relation (0 and gamma 1: the object as is)
    bias_strength: float = BIAS_STRENGTH  # of the smooth multiplicative bias field
    gfactor_max: float = 1.0  # noise amplification at the FOV's centre (parallel imaging)
    background: str = "noise"  # "noise", or "masked": zero outside the (dilated) head
    storage_factor: float = 1.0  # stored on a grid this much finer (zero-filled interpolation)
    motion_scale: float = 1.0  # the LR's motion against the HR, times the demo's ranges

    @property
    def acquired_lines(self) -> np.ndarray:
        """Integer phase-encoding frequencies acquired (phase resolution: the outer lines
        are not; partial Fourier: one side short)."""
        f = np.fft.fftfreq(self.matrix, 1.0 / self.matrix).round()
        half = self.phase_resolution * self.matrix / 2.0
        return (f >= -half) & (f < (2 * self.partial_fourier - 1) * half)

    @property
    def stored_matrix(self) -> int:
        """Matrix of the stored image (``storage_factor`` x finer, the same field of view)."""
        return int(round(self.matrix * self.storage_factor))

    @property
    def stored_spacing(self) -> float:
        """The spacing the header states: the acquired one unless stored on a finer grid."""
        return self.fov / self.stored_matrix

    @property
    def has_contrast_relation(self) -> bool:
        return self.intensity_gamma != 1.0 or self.intensity_saturation != 0.0

    def intensity_relation(self, x: np.ndarray) -> np.ndarray:
        """The series' contrast against the object (monotonic, f(0) = 0, f(1) = 1)."""
        if not self.has_contrast_relation:
            return x
        c = self.intensity_saturation
        xg = np.power(np.maximum(x, 0.0), self.intensity_gamma)
        return (1.0 + c) * xg / (1.0 + c * xg)

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
    fy = freqs / protocol.phase_resolution  # the filter spans the acquired y extent
    if protocol.window == "fermi":
        u = freqs / (protocol.matrix / 2.0)
        r = np.sqrt((u / protocol.phase_resolution)[:, None] ** 2 + u[None, :] ** 2)
        z = np.clip((r - protocol.window_param) / protocol.window_width, -60, 60)
        window = 1.0 / (1.0 + np.exp(z))
    else:
        window = np.outer(window_1d(protocol, fy), window_1d(protocol, freqs))
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


#: the sections a scan shows of the template: its axial slices, or coronal ones (the
#: template's anterior-posterior axis becomes the slice axis: other anatomy in-plane)
ANATOMIES = ("axial", "coronal")


def load_template(margin: int = 6, anatomy: str = "axial") -> Template:
    img = sitk.ReadImage(str(template_path()), sitk.sitkFloat32)
    if anatomy == "coronal":  # (z, y, x) -> (y, z, x): slices along anterior-posterior
        arr = np.ascontiguousarray(np.swapaxes(sitk.GetArrayViewFromImage(img), 0, 1)[::-1])
        sp = img.GetSpacing()
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((sp[0], sp[2], sp[1]))
    elif anatomy != "axial":
        raise ValueError(f"unknown demo anatomy '{anatomy}'; choose one of {ANATOMIES}")
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
    protocol: AcquisitionProtocol,
    centre_xy: np.ndarray,
    z0: float,
    direction: np.ndarray,
    spacing: float,
) -> np.ndarray:
    """Origin of the protocol's field of view sampled at ``spacing``, centred on
    ``centre_xy``; first slice z0."""
    half = (round(protocol.fov / spacing) - 1) / 2.0 * spacing
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
) -> tuple[sitk.Image, dict]:
    """Simulate one scan; the object point shown at scanner point q is ``matrix @ q + t``.

    Draws, in this order, the bias field, the phase map and the noise from ``rng``.
    Returns the image and its truth: the noise sigma per channel (``noise_sigma``) and its
    mean over the tissue (``noise_sigma_tissue``, the g-factor map's gain included).
    """
    direction = np.array(template.image.GetDirection()).reshape(3, 3)
    m_fine = protocol.fine_matrix
    n = protocol.matrix
    origin = grid_origin(protocol, centre, slice_z0, direction, protocol.spacing)

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
    tissue = obj > 0.1 * template.median  # before the contrast: where the object is
    if protocol.has_contrast_relation:
        obj = protocol.intensity_relation(obj / template.median) * template.median
    if protocol.bias_strength != BIAS_STRENGTH:
        log_bias *= protocol.bias_strength / BIAS_STRENGTH
    cobj = (obj * (scale * np.exp(log_bias))) * np.exp(1j * phase)

    # 4. k-space truncation to the central n x n frequencies of the fine grid's FFT
    freqs = np.fft.fftfreq(n, 1.0 / n).round().astype(int)  # integer frequencies, FFT order
    keep = freqs % m_fine
    kspace = scipy.fft.fft2(cobj, workers=-1)[:, keep][:, :, keep] * (n * n / (m_fine * m_fine))
    window = window_2d(protocol, freqs.astype(float))
    # noise std in the final image = sigma_k / n * rms(window); solve for sigma_k
    sigma_img = protocol.noise * template.median * scale
    sigma_k = sigma_img * n / math.sqrt(float(np.mean(window**2)))
    clean = kspace
    kspace = kspace + _kspace_noise(protocol, sigma_k, rng)

    # 5. raw-data filter, inverse FFT at the scan's (stored) matrix size, magnitude
    img = np.abs(_to_image(kspace * window, protocol)).astype(np.float32)
    if protocol.background == "masked":
        head = np.abs(_to_image(clean * window, protocol)) > 0.05 * template.median * scale
        img *= _dilated_filled(head)
    out = sitk.GetImageFromArray(img)
    spacing = protocol.stored_spacing
    out.SetSpacing((spacing, spacing, SLICE_THICKNESS_MM))
    out.SetOrigin(
        tuple(float(v) for v in grid_origin(protocol, centre, slice_z0, direction, spacing))
    )
    out.SetDirection(template.image.GetDirection())
    truth = {
        "noise_sigma": float(sigma_img),
        "noise_sigma_tissue": float(sigma_img * _mean_gain(protocol, tissue)),
    }
    return out, truth


def _kspace_noise(
    protocol: AcquisitionProtocol, sigma_k: float, rng: np.random.Generator
) -> np.ndarray:
    """Complex Gaussian noise of the kept k-space samples: white (sigma ``sigma_k`` per
    channel), or white in the image, amplified by the g-factor map, transformed back."""
    n = protocol.matrix
    noise = rng.standard_normal((2, NUM_SLICES, n, n))
    if protocol.gfactor_max == 1.0:
        return sigma_k * (noise[0] + 1j * noise[1])
    g = gfactor_map(protocol)
    return scipy.fft.fft2(sigma_k * g * (noise[0] + 1j * noise[1]), workers=-1) / n


def gfactor_map(protocol: AcquisitionProtocol) -> np.ndarray:
    """Noise amplification on the ``matrix x matrix`` grid: 1 at the edges of the field of
    view, ``gfactor_max`` at its centre (a Gaussian bump of width 0.3 FOV), as parallel
    imaging's g-factor."""
    u = (np.arange(protocol.matrix) - (protocol.matrix - 1) / 2.0) / protocol.matrix
    r2 = u[:, None] ** 2 + u[None, :] ** 2
    return (1.0 + (protocol.gfactor_max - 1.0) * np.exp(-r2 / (2 * 0.3**2))).astype(np.float32)


def _mean_gain(protocol: AcquisitionProtocol, tissue: np.ndarray) -> float:
    """The mean g-factor over the tissue voxels (``tissue`` on the fine grid)."""
    if protocol.gfactor_max == 1.0 or not tissue.any():
        return 1.0
    idx = (np.arange(protocol.fine_matrix) * protocol.matrix) // protocol.fine_matrix
    g_fine = gfactor_map(protocol)[np.ix_(idx, idx)]
    return float((tissue * g_fine).sum() / tissue.sum())


def _to_image(kspace: np.ndarray, protocol: AcquisitionProtocol) -> np.ndarray:
    """Inverse FFT at the stored matrix: the acquired k-space zero-filled (interpolation)."""
    n, m = protocol.matrix, protocol.stored_matrix
    if m == n:
        return scipy.fft.ifft2(kspace, workers=-1)
    freqs = np.fft.fftfreq(n, 1.0 / n).round().astype(int) % m
    big = np.zeros(kspace.shape[:-2] + (m, m), np.complex128)
    big[:, freqs[:, None], freqs[None, :]] = kspace
    return scipy.fft.ifft2(big, workers=-1) * (m * m / (n * n))


def _dilated_filled(mask: np.ndarray) -> np.ndarray:
    """A scanner's background mask: the head, holes filled, grown by 2 pixels per slice."""
    out = np.empty_like(mask)
    for i, m in enumerate(mask):
        out[i] = ndimage.binary_fill_holes(ndimage.binary_dilation(m, iterations=2))
    return out


# --------------------------------------------------------------------------- cases
