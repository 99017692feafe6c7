"""Dataset fingerprint: what the planner needs to know about a dataset.

Per case and per scan: geometry (spacing, shape, direction, physical extent), the
through-plane axis, foreground intensity statistics, gradient statistics and, for LR, the
noise level; per pair: in-plane ratio LR/HR, through-plane agreement, physical overlap,
whether slices match one to one, and the similarity of Gaussian-degraded HR to real LR
over a range of sigmas (for fitting the GB baseline).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from skimage.metrics import structural_similarity

from mrisr.dataset.cases import Case
from mrisr.degradation.kernels import gaussian_degrade
from mrisr.imageio.noise_estimates import (
    background_mask,
    noise_correlation,
    rayleigh_sigma,
    tissue_sigma,
    wavelet_sigma,
)
from mrisr.imageio.registration import rigid_register, transform_to_json
from mrisr.imageio.resampling import (
    inplane_axes,
    lr_grid_for_hr,
    overlap_fraction,
    thick_axis_of,
    through_plane_axis_of_pair,
    through_plane_axis_single,
    through_plane_pair,
    working_grid,
)
from mrisr.imageio.sitk_io import Geometry, read_scan
from mrisr.imageio.spectrum_band import spectrum_band
from mrisr.preprocessing.foreground import foreground_mask
from mrisr.preprocessing.pair_noise import residual_noise_sigma
from mrisr.preprocessing.preprocessor import resample_normalised
from mrisr.utilities.file_io import load_json, save_json
from mrisr.utilities.parallel import map_progress

logger = logging.getLogger(__name__)

FINGERPRINT_FILE = "dataset_fingerprint.json"
FINGERPRINT_VERSION = 7  # 2: the Gaussian fit aligns each pair first; 3: background noise;
# 4: the Gaussian fit at the dataset's scale (the planner's), not each pair's own; 5: the
# noise inside the tissue; 6: the noise from the registered pair's residual; 7: the LR's
# acquired band from its spectrum
GAUSSIAN_FIT_SIGMAS = [round(0.3 + 0.1 * i, 2) for i in range(28)]  # 0.3 .. 3.0 HR pixels


@dataclass
class ScanFingerprint:
    file: str
    geometry: dict
    through_plane_axis: int  # SimpleITK index axis (0=x, 1=y, 2=z)
    inplane_spacing: list[float]
    through_plane_spacing: float
    shape_zyx: list[int]
    extent_mm: list[float]
    intensity: dict  # foreground: p00_5, p50, p99_5, mean, sd
    gradient: dict  # foreground gradient magnitude of image / p99_5, per mm: mean, p50, p99
    noise_sigma: float | None = None  # LR only, raw units
    noise_sigma_normalised: float | None = None  # LR only, relative to p99_5
    # LR only: per-channel sigma of the complex noise from the background's Rayleigh
    # statistics on the native grid (raw units; None: too little background)
    noise_sigma_background: float | None = None
    # LR only: the same sigma measured inside the tissue (local estimates calibrated on the
    # background's noise colour; :func:`mrisr.imageio.noise_estimates.tissue_sigma`), and its ratio
    # to the background's: the cross-check (g-factor maps, masked backgrounds)
    noise_sigma_tissue: float | None = None
    noise_tissue_to_background: float | None = None
    # LR of a pair only: the sigma of its residual against the registered HR, degraded by the
    # response that leaves least (:mod:`mrisr.preprocessing.pair_noise`; colour-blind), the
    # response, and its ratio to the background's
    noise_sigma_residual: float | None = None
    noise_residual_model: str | None = None
    noise_residual_to_background: float | None = None
    # LR only: the band its spectrum holds per in-plane axis (SimpleITK order, as
    # inplane_spacing), as fractions of the stored grid's Nyquist, and the acquired spacing
    # that follows (stored / band): below 1 where the scan was stored on a finer grid than
    # acquired or its phase resolution was reduced (:mod:`mrisr.imageio.spectrum_band`);
    # the drop (dB) at each axis' edge that decided it (below 10: no cliff, the stored band)
    acquired_band: list[float] | None = None
    acquired_spacing: list[float] | None = None
    acquired_band_drop_db: list[float] | None = None

    @property
    def acquired_inplane_spacing(self) -> list[float]:
        """The acquired in-plane spacing where the spectrum was read, else the headers'."""
        return self.acquired_spacing or self.inplane_spacing


@dataclass
class PairFingerprint:
    inplane_ratio: list[float]  # LR/HR per in-plane axis
    through_plane_ratio: float
    overlap: float  # fraction of the HR field of view covered by LR
    slices_match: bool  # LR slices at the HR slice positions, one to one
    scale: int  # the dataset's integer scale (:func:`integer_scale`, the planner's decision)
    gaussian_fit_ssim: list[float]  # SSIM(GB_sigma(HR), real LR) for GAUSSIAN_FIT_SIGMAS
    #: the rigid alignment of the pair (HR point -> LR point), computed once here and read
    #: by preprocessing (:func:`mrisr.imageio.registration.transform_to_json`); None in
    #: fingerprints written before it was kept (preprocessing then registers the pair)
    registration: dict | None = None


@dataclass
class CaseFingerprint:
    name: str
    hr: ScanFingerprint | None = None
    lr: ScanFingerprint | None = None
    pair: PairFingerprint | None = None

    @classmethod
    def from_json(cls, d: dict) -> CaseFingerprint:
        return cls(
            name=d["name"],
            hr=ScanFingerprint(**d["hr"]) if d.get("hr") else None,
            lr=ScanFingerprint(**d["lr"]) if d.get("lr") else None,
            pair=PairFingerprint(**d["pair"]) if d.get("pair") else None,
        )


@dataclass
class DatasetFingerprint:
    dataset_name: str
    source_digest: str
    through_plane_normal: list[float]
    cases: list[CaseFingerprint] = field(default_factory=list)
    gaussian_fit_sigmas: list[float] = field(default_factory=lambda: list(GAUSSIAN_FIT_SIGMAS))
    version: int = FINGERPRINT_VERSION

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> DatasetFingerprint:
        d = dict(d)
        d["cases"] = [CaseFingerprint.from_json(c) for c in d["cases"]]
        return cls(**d)

    # convenience views used by the planner
    @property
    def pairs(self) -> list[CaseFingerprint]:
        return [c for c in self.cases if c.pair is not None]

    def scans(self, kind: str) -> list[ScanFingerprint]:
        return [getattr(c, kind) for c in self.cases if getattr(c, kind) is not None]


def source_digest(cases: list[Case]) -> str:
    """Identity of the raw files (names, sizes, modification times)."""
    h = hashlib.sha1()
    for c in cases:
        for p in (c.hr, c.lr):
            if p is not None:
                st = Path(p).stat()
                h.update(f"{p.name}|{st.st_size}|{st.st_mtime_ns};".encode())
    return h.hexdigest()


def _intensity_stats(values: np.ndarray) -> dict:
    p = np.percentile(values, [0.5, 50.0, 99.5])
    return {
        "p00_5": float(p[0]),
        "p50": float(p[1]),
        "p99_5": float(p[2]),
        "mean": float(values.mean()),
        "sd": float(values.std()),
    }


def _gradient_stats(vol_zyx: np.ndarray, mask: np.ndarray, spacing_yx: tuple[float, float]) -> dict:
    gy, gx = np.gradient(vol_zyx, *spacing_yx, axis=(1, 2))
    g = np.sqrt(gx * gx + gy * gy)[mask]
    if g.size == 0:
        return {"mean": 0.0, "p50": 0.0, "p99": 0.0}
    p = np.percentile(g, [50, 99])
    return {"mean": float(g.mean()), "p50": float(p[0]), "p99": float(p[1])}


def _scan_fingerprint(path: Path, image: sitk.Image, tp_axis: int, is_lr: bool) -> tuple:
    geom = Geometry.of(image)
    a, b = inplane_axes(tp_axis)
    # permute to (through-plane, in-plane a, in-plane b) without interpolation
    order = (a, b, tp_axis)
    arr = (
        sitk.GetArrayFromImage(sitk.PermuteAxes(image, order))
        if order != (0, 1, 2)
        else sitk.GetArrayFromImage(image)
    )
    mask = foreground_mask(arr)
    if not mask.any():
        mask = np.ones_like(mask)
    stats = _intensity_stats(arr[mask])
    scale = stats["p99_5"] if stats["p99_5"] > 0 else float(np.abs(arr).max())
    norm = arr / scale
    fp = ScanFingerprint(
        file=str(path),
        geometry=geom.to_json(),
        through_plane_axis=int(tp_axis),
        inplane_spacing=[geom.spacing[a], geom.spacing[b]],
        through_plane_spacing=geom.spacing[tp_axis],
        shape_zyx=list(arr.shape),
        extent_mm=geom.extent_mm(),
        intensity=stats,
        gradient=_gradient_stats(norm, mask, (geom.spacing[b], geom.spacing[a])),
    )
    if is_lr:
        fp.noise_sigma = wavelet_sigma(arr)
        fp.noise_sigma_normalised = fp.noise_sigma / scale
        bg = background_mask(arr, mask)
        fp.noise_sigma_background = rayleigh_sigma(arr, bg)
        rho = noise_correlation(arr, bg) if fp.noise_sigma_background else None
        fp.noise_sigma_tissue = tissue_sigma(arr, mask, rho)
        if fp.noise_sigma_tissue and fp.noise_sigma_background:
            fp.noise_tissue_to_background = round(
                fp.noise_sigma_tissue / fp.noise_sigma_background, 3
            )
        _read_acquired_band(fp, arr, mask)
    return fp, arr, mask, scale


def _read_acquired_band(fp: ScanFingerprint, arr: np.ndarray, mask: np.ndarray) -> None:
    """The LR's acquired band from the cliff in its tissue spectrum, its floor checked
    against the scan's noise: the background's, else the tissue's (which reads coloured
    noise low, so that a cut may be missed, never invented)."""
    read = spectrum_band(arr, mask, fp.noise_sigma_background or fp.noise_sigma_tissue)
    if read is None:
        return
    # arr is (through-plane, b, a): y is in-plane axis b, x is a
    fp.acquired_band = read["band"][::-1]
    fp.acquired_band_drop_db = read["drop_db"][::-1]
    fp.acquired_spacing = [round(sp / b, 4) for sp, b in zip(fp.inplane_spacing, fp.acquired_band)]


def _slices_match(hr: Geometry, a: int, lr: Geometry, b: int) -> bool:
    """Do the LR slices sit at the HR slice positions, one to one?"""
    if hr.size[a] != lr.size[b]:
        return False
    n = hr.direction_matrix[:, a]
    idx_hr = np.zeros((hr.size[a], 3))
    idx_hr[:, a] = np.arange(hr.size[a])
    pos_hr = hr.index_to_physical(idx_hr) @ n
    idx_lr = np.zeros((lr.size[b], 3))
    idx_lr[:, b] = np.arange(lr.size[b])
    pos_lr = np.sort(lr.index_to_physical(idx_lr) @ n)
    return bool(np.all(np.abs(np.sort(pos_hr) - pos_lr) < 0.25 * hr.spacing[a]))


def _gaussian_fit(
    hr_img: sitk.Image, lr_img: sitk.Image, a: int, scale: int, tf: sitk.Transform
) -> list[float]:
    """SSIM between Gaussian-degraded HR and the real LR (aligned by ``tf``) on the LR
    working grid."""
    hr_geom = Geometry.of(hr_img)
    ia = inplane_axes(a)
    h = float(np.mean([hr_geom.spacing[i] for i in ia]))
    hr_work = working_grid(hr_geom, a, h, multiple_of=scale)
    lr_work = lr_grid_for_hr(hr_work, scale)
    # preprocessing's resampling, masks and normalisation (prepare_hr / prepare_lr) on the
    # grids of this pair at the dataset's scale (there are no plans yet)
    hr_arr, _, _, _ = resample_normalised(hr_img, hr_work, sitk.sitkBSpline, {})
    lr_arr, mask, _, _ = resample_normalised(
        lr_img, lr_work, sitk.sitkBSpline, {}, tf, zero_outside=True
    )
    if mask.sum() < 50:
        return [float("nan")] * len(GAUSSIAN_FIT_SIGMAS)
    out = []
    for sigma in GAUSSIAN_FIT_SIGMAS:
        syn = gaussian_degrade(hr_arr, sigma, scale)
        win = min(7, *syn.shape[1:]) | 1
        _, smap = structural_similarity(
            syn, lr_arr, channel_axis=0, data_range=1.0, full=True, win_size=win
        )
        out.append(float(smap[mask].mean()))
    return out


def fingerprint_case(args: tuple[Case, list[float]]) -> CaseFingerprint:
    """Fingerprint of one case (runs in a worker process)."""
    case, normal = args
    hr_img = read_scan(case.hr, check=False) if case.hr else None
    lr_img = read_scan(case.lr, check=False) if case.lr else None
    cf = CaseFingerprint(name=case.name)
    if hr_img is not None and lr_img is not None:
        hg, lg = Geometry.of(hr_img), Geometry.of(lr_img)
        a, b = through_plane_axis_of_pair(hg, lg)
        if through_plane_pair(hg.spacing, lg.spacing):  # the LR's thick axis, the HR's along it
            b = thick_axis_of(lg.spacing)
            a = int(np.argmax(np.abs(hg.direction_matrix.T @ lg.direction_matrix[:, b])))
    else:
        a = through_plane_axis_single(Geometry.of(hr_img), normal) if hr_img else None
        b = through_plane_axis_single(Geometry.of(lr_img), normal) if lr_img else None
    if hr_img is not None:
        cf.hr = _scan_fingerprint(case.hr, hr_img, a, is_lr=False)[0]
    if lr_img is not None:
        cf.lr = _scan_fingerprint(case.lr, lr_img, b, is_lr=True)[0]
    if cf.hr is not None and cf.lr is not None:
        hg, lg = Geometry.of(hr_img), Geometry.of(lr_img)
        d_hr, d_lr = hg.direction_matrix, lg.direction_matrix
        ratios = []
        for ax in inplane_axes(a):
            bx = int(np.argmax(np.abs(d_lr.T @ d_hr[:, ax])))
            ratios.append(lg.spacing[bx] / hg.spacing[ax])
        cf.pair = PairFingerprint(
            inplane_ratio=[float(r) for r in ratios],
            through_plane_ratio=float(lg.spacing[b] / hg.spacing[a]),
            overlap=overlap_fraction(hg, lg),
            slices_match=_slices_match(hg, a, lg, b),
            scale=0,  # set by compute_fingerprint: the dataset's scale
            gaussian_fit_ssim=[],
        )
    return cf


def integer_scale(pair_ratios: list[float]) -> int:
    """The dataset's integer scale from the pairs' mean in-plane LR/HR ratios: their median,
    rounded (at least 2). The one scale decision: the planner's, and the Gaussian fit's."""
    return max(2, int(round(float(np.median(pair_ratios)))))


def gaussian_fit_case(args: tuple[Case, int]) -> tuple[list[float], dict, dict | None]:
    """The rigid alignment of one pair (the head moves between the two series), the
    Gaussian fit at the dataset's ``scale`` on it, and the LR's noise from its residual
    against the HR (runs in a worker process)."""
    case, scale = args
    hr_img, lr_img = read_scan(case.hr, check=False), read_scan(case.lr, check=False)
    a, b = through_plane_axis_of_pair(Geometry.of(hr_img), Geometry.of(lr_img))
    tf = rigid_register(hr_img, lr_img)
    residual = residual_noise_sigma(
        sitk.Cast(hr_img, sitk.sitkFloat32),
        sitk.Cast(lr_img, sitk.sitkFloat32),
        tf.GetInverse(),
        a,
        b,
    )
    return _gaussian_fit(hr_img, lr_img, a, scale, tf), transform_to_json(tf), residual


def through_plane_normal(
    cases: list[Case], geometries: dict[str, dict[str, Geometry]]
) -> list[float]:
    """The dataset's through-plane direction in physical space (from pairs, else HR scans)."""
    votes: list[np.ndarray] = []
    for c in cases:
        g = geometries[c.name]
        if "hr" in g and "lr" in g:
            a, _ = through_plane_axis_of_pair(g["hr"], g["lr"])
            votes.append(g["hr"].direction_matrix[:, a])
    if not votes:
        for c in cases:
            g = geometries[c.name].get("hr") or geometries[c.name]["lr"]
            votes.append(g.direction_matrix[:, through_plane_axis_single(g)])
    ref = votes[0]
    total = sum(v * np.sign(v @ ref) for v in votes)
    n = total / np.linalg.norm(total)
    return [float(v) for v in n]


def compute_fingerprint(
    dataset_name: str,
    cases: list[Case],
    geometries: dict[str, dict[str, Geometry]],
    num_processes: int = 1,
) -> DatasetFingerprint:
    normal = through_plane_normal(cases, geometries)
    results = map_progress(
        fingerprint_case, [(c, normal) for c in cases], num_processes, desc="fingerprint"
    )
    # the Gaussian fit measures in-plane blur: not for through-plane pairs (thick-slice LR
    # at the HR's in-plane spacing)
    paired = [
        (c, r)
        for c, r in zip(cases, results)
        if r.pair is not None
        and not through_plane_pair(r.hr.geometry["spacing"], r.lr.geometry["spacing"])
    ]
    if paired:
        scale = integer_scale([float(np.mean(r.pair.inplane_ratio)) for _, r in paired])
        fits = map_progress(
            gaussian_fit_case, [(c, scale) for c, _ in paired], num_processes, desc="Gaussian fit"
        )
        for (_, r), (fit, registration, residual) in zip(paired, fits):
            r.pair.scale, r.pair.gaussian_fit_ssim = scale, fit
            r.pair.registration = registration
            if residual is not None:
                r.lr.noise_sigma_residual = residual["sigma"]
                r.lr.noise_residual_model = residual["model"]
                if r.lr.noise_sigma_background:
                    r.lr.noise_residual_to_background = round(
                        residual["sigma"] / r.lr.noise_sigma_background, 3
                    )
    return DatasetFingerprint(
        dataset_name=dataset_name,
        source_digest=source_digest(cases),
        through_plane_normal=normal,
        cases=results,
    )


def load_or_compute_fingerprint(
    out_dir: Path,
    dataset_name: str,
    cases: list[Case],
    geometries: dict[str, dict[str, Geometry]],
    num_processes: int = 1,
    clean: bool = False,
) -> DatasetFingerprint:
    """Reuse ``out_dir/dataset_fingerprint.json`` unless ``clean`` or the raw data changed."""
    path = Path(out_dir) / FINGERPRINT_FILE
    if path.is_file() and not clean:
        try:
            fp = DatasetFingerprint.from_json(load_json(path))
            if fp.version == FINGERPRINT_VERSION and fp.source_digest == source_digest(cases):
                logger.info("reusing fingerprint %s (use --clean to recompute)", path)
                return fp
            logger.info("raw data changed since %s was computed: recomputing", path)
        except (KeyError, TypeError, ValueError):
            logger.warning("%s is unreadable: recomputing", path)
    fp = compute_fingerprint(dataset_name, cases, geometries, num_processes)
    save_json(fp.to_json(), path)
    return fp
