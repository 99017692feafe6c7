"""``mrisr_throughplane``: thick-slice scans to isotropic volumes, self-supervised.

Without ``model`` it trains one network on the in-plane slices of the given scans (one
scan: self-supervised on itself; several scans of one protocol: one model for all, which
``save_model`` keeps) and super-resolves each; with ``model`` it applies a saved one (a new
scan of a trained protocol takes seconds). Every scan must share the model's slice
spacing ratio and thickness within ``MATCH_TOLERANCE``.

Outputs: ``OUT/<name>.nii.gz`` on :func:`~mrisr.throughplane.geometry.output_geometry`
(written atomically; a DICOM series in gives a derived DICOM series ``OUT/<folder>/``) and ``OUT/throughplane.json`` (per scan: geometry, thickness and
where it came from, noise; the profile and its FWHM; the training record; timings).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from mrisr.imageio.dicom import is_dicom_folder, read_series, write_series
from mrisr.imageio.noise_estimates import wavelet_sigma
from mrisr.imageio.resampling import output_slices
from mrisr.imageio.sitk_io import (
    as_checked_volume,
    image_from_array,
    is_complete_image,
    read_scan,
    write_scan,
)
from mrisr.networks.checkpoint_io import save_checkpoint
from mrisr.preprocessing.normalization import foreground_percentile
from mrisr.throughplane.geometry import (
    dicom_thickness,
    output_geometry,
    slice_geometry,
)
from mrisr.throughplane.model import (
    NETWORK,
    ThroughPlaneNet,
    bspline_volume,
    predict_volume,
    train_network,
)
from mrisr.throughplane.pairs import TrainingPairs
from mrisr.throughplane.profile import SliceProfile
from mrisr.throughplane.profile_fit import ProfileFitError, fit_profile
from mrisr.throughplane.profile_models import PROFILE_MODELS, RectProfile
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import load_json, make_dirs, save_json

logger = logging.getLogger(__name__)

MATCH_TOLERANCE = 0.02
DEFAULT_ITERATIONS = 4000
MODEL_FORMAT = "mrisr-throughplane-1"
MODEL_FILE = "throughplane_model.pt"
RECORD_FILE = "throughplane.json"
SCAN_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


class Scan:
    """One thick-slice scan: the image, its geometry, its normalised thick-axis-first array."""

    def __init__(self, path: Path, thickness: float | None, warn: bool = True):
        self.path = path
        self.series = None  # the DICOM series a DICOM input came from (its output is one too)
        if path.is_dir():
            self.series = read_series(path)
            image = as_checked_volume(path, self.series.image, True)
            tag = dicom_thickness(self.series.tags, max(image.GetSpacing()), str(path))
            self.name = path.name
        else:
            image, tag = read_scan(path), None
            self.name = _stem(path) + ".nii.gz"
        self.image = image
        if thickness is not None:
            self.geometry = slice_geometry(image, str(path), thickness, "argument")
        elif tag is not None:
            self.geometry = slice_geometry(image, str(path), tag, "dicom")
        else:
            t = _dataset_json_thickness(path)
            self.geometry = slice_geometry(image, str(path), t, "dataset.json")
            if t is None and warn:
                logger.warning(
                    "%s: slice thickness unknown (NIfTI stores only the spacing); assuming it "
                    "equals the spacing, %.3g mm: give --slice-thickness or dataset.json's "
                    '"slice_thickness" if the slices have gaps',
                    path,
                    self.geometry.slice_spacing,
                )
        arr = np.moveaxis(sitk.GetArrayFromImage(image), self.geometry.numpy_axis, 0)
        self.scale = _intensity_scale(arr, path)
        self.volume = np.ascontiguousarray(arr / self.scale, dtype=np.float32)
        self.sigma = wavelet_sigma(self.volume)


def _stem(path: Path) -> str:
    name = path.name
    for e in SCAN_ENDINGS:
        if name.lower().endswith(e):
            return name[: -len(e)]
    return path.stem


def _dataset_json_thickness(path: Path) -> float | None:
    """``"slice_thickness"`` of the dataset.json beside the scan or one folder up."""
    for folder in (path.parent, path.parent.parent):
        f = folder / "dataset.json"
        if f.is_file():
            t = load_json(f).get("slice_thickness")
            if t is not None:
                try:
                    return float(t)
                except (TypeError, ValueError):
                    raise MrisrError(f'{f}: "slice_thickness" must be a number in mm') from None
    return None


def _intensity_scale(arr: np.ndarray, path: Path) -> float:
    """mrisr's normalisation (the foreground 99.5th percentile), foreground: above 10 % of
    the 99th percentile (thick-slice scans are not preprocessed: no stored mask)."""
    hi = float(np.percentile(arr, 99))
    if not hi > 0:
        raise MrisrError(f"{path}: no foreground (the scan is empty or negative)")
    return foreground_percentile(arr, arr > 0.1 * hi)


#: a reference counts as isotropic when its largest spacing is within this factor of its smallest
ISOTROPIC = 1.25


def reference_volume(path: Path, spacing: float) -> tuple[np.ndarray, float]:
    """An isotropic HR scan on a ``spacing`` mm grid (B-spline resampled where its own
    differs by > 5 %), normalised as the scans are, with its noise sigma."""
    image = read_scan(path)
    sp = np.asarray(image.GetSpacing())
    if sp.max() > ISOTROPIC * sp.min():
        raise MrisrError(
            f"{path}: an HR reference must be isotropic; its spacing is "
            f"{tuple(round(float(v), 3) for v in sp)} mm"
        )
    if np.any(np.abs(sp / spacing - 1) > 0.05):
        size = [max(1, int(round(n * s / spacing))) for n, s in zip(image.GetSize(), sp)]
        image = sitk.Resample(image, size, sitk.Transform(), sitk.sitkBSpline, image.GetOrigin(),
                              [spacing] * 3, image.GetDirection(), 0.0, sitk.sitkFloat32)  # fmt: skip
    arr = sitk.GetArrayFromImage(image)
    vol = np.ascontiguousarray(arr / _intensity_scale(arr, path), dtype=np.float32)
    return vol, wavelet_sigma(vol)


def scan_paths(inputs: list[str | Path]) -> list[Path]:
    """Files and DICOM folders given directly, and the scan files inside plain folders."""
    out: list[Path] = []
    for i in map(Path, inputs):
        if not i.exists():
            raise MrisrError(f"{i}: no such file or folder")
        if i.is_dir() and not is_dicom_folder(i):
            found = sorted(f for f in i.iterdir() if f.name.lower().endswith(SCAN_ENDINGS))
            if not found:
                raise MrisrError(f"{i}: holds no scan ({', '.join(SCAN_ENDINGS)}) and no DICOM")
            out += found
        else:
            out.append(i)
    return out


def _check_match(scans: list[Scan], ratio: float, thickness_px: float, what: str) -> None:
    for s in scans:
        g = s.geometry
        if (
            abs(g.ratio / ratio - 1) > MATCH_TOLERANCE
            or abs(g.thickness_px / thickness_px - 1) > MATCH_TOLERANCE
        ):
            raise MrisrError(
                f"{s.path}: slice spacing / thickness {g.ratio:.3g} / {g.thickness_px:.3g} "
                f"in-plane pixels differ from {what}'s {ratio:.3g} / {thickness_px:.3g}; "
                "run it separately"
            )


def save_model(path: Path, net: ThroughPlaneNet, meta: dict) -> None:
    import json

    state = {
        "format": MODEL_FORMAT,
        "weights": net.state_dict(),
        "meta": json.dumps(meta),
    }
    save_checkpoint(state, path)


def load_model(path: Path) -> tuple[ThroughPlaneNet, dict]:
    import json

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MrisrError(f"{path}: model not found") from None
    except Exception as e:
        raise MrisrError(f"{path}: unreadable model ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
        raise MrisrError(f"{path}: not an mrisr through-plane model ({MODEL_FORMAT})")
    meta = json.loads(state["meta"])
    net = ThroughPlaneNet(**meta["network"])
    net.load_state_dict(state["weights"])
    return net.eval(), meta


def train_model(
    scans: list[Scan],
    profile: str = "auto",
    iterations: int = DEFAULT_ITERATIONS,
    seconds: float | None = None,
    seed: int = 0,
    progress: bool = True,
    references: list[str | Path] = (),
) -> tuple[ThroughPlaneNet, dict]:
    """One through-plane model for scans sharing a protocol (the slice profile fixed or
    measured, training pairs from their in-plane slices and the isotropic ``references``);
    the network and its metadata (what :func:`save_model` keeps)."""
    g0 = scans[0].geometry
    _check_match(scans, g0.ratio, g0.thickness_px, str(scans[0].path))
    prof, prof_log = _profile(profile, scans, seed, progress)
    ref_paths = scan_paths(references) if references else []
    refs = [reference_volume(p, g0.inplane_spacing) for p in ref_paths]
    pairs = TrainingPairs(
        [s.volume for s in scans], g0.ratio, prof.values, [s.sigma for s in scans], seed, refs
    )
    bar = _bar(progress, "through-plane training")
    net, log = train_network(pairs, iterations, seconds, seed, progress=bar)
    if bar:
        bar.close()
    log.update(slices=pairs.slices, profile_fit=prof_log)
    return net, {
        "ratio": g0.ratio,
        "thickness_px": g0.thickness_px,
        "inplane_spacing": g0.inplane_spacing,
        "network": net.args,
        "profile": prof.to_json(g0.inplane_spacing),
        "training": log,
        "scans": [str(s.path) for s in scans],
        "references": [str(p) for p in ref_paths],
    }


def predict_scan(net: ThroughPlaneNet | list[ThroughPlaneNet], scan: Scan) -> sitk.Image:
    """The scan's through-plane prediction on its output grid, in its own units (several
    networks, e.g. the folds of a configuration: their mean)."""
    g = scan.geometry
    n_out = output_slices(scan.volume.shape[0], g.ratio)
    nets = net if isinstance(net, list) else [net]
    out = sum(predict_volume(n, scan.volume, g.ratio, n_out) for n in nets) / len(nets)
    out = out * scan.scale
    arr = np.moveaxis(out.astype(np.float32), 0, g.numpy_axis)
    return image_from_array(arr, output_geometry(scan.image, g))


def super_resolve(
    inputs: list[str | Path],
    out_dir: str | Path,
    thickness: float | None = None,
    profile: str = "auto",
    model: str | Path | list[str | Path] | None = None,
    save_model_to: str | Path | None = None,
    iterations: int = DEFAULT_ITERATIONS,
    seconds: float | None = None,
    seed: int = 0,
    progress: bool = True,
    references: list[str | Path] = (),
    resume: bool = False,
) -> dict:
    """Train (or load) a through-plane model and write each scan's isotropic volume
    (``references``: isotropic HR scans of the same contrast that join the training).

    ``model``: a saved model, or several (the folds of a configuration: their predictions
    averaged). The trained model is also kept as ``OUT/MODEL_FILE``; ``resume`` (``--continue``) takes
    it instead of training again and keeps the outputs already complete."""
    t0 = time.perf_counter()
    kept = Path(out_dir) / MODEL_FILE
    if model is None and resume and kept.is_file():
        model = kept
        logger.info("--continue: the model trained before, %s", kept)
    # with a model, an unstated thickness is the model's protocol's (below): no warning
    scans = [Scan(p, thickness, warn=model is None) for p in scan_paths(inputs)]
    out_dir = make_dirs(out_dir)
    record: dict = {"scans": {}, "network": NETWORK}
    done = (
        load_json(out_dir / RECORD_FILE).get("scans", {})
        if resume and (out_dir / RECORD_FILE).is_file()
        else {}
    )
    if model is not None:
        models = [Path(m) for m in model] if isinstance(model, (list, tuple)) else [Path(model)]
        loaded = [load_model(m) for m in models]
        net, meta = [n for n, _ in loaded], loaded[0][1]
        for s in scans:  # an unstated thickness is the model's protocol's
            g = s.geometry
            if g.thickness_source == "assumed":
                t = meta["thickness_px"] * g.inplane_spacing
                s.geometry = slice_geometry(s.image, str(s.path), t, "model")
        for m, (_, mm) in zip(models, loaded):
            _check_match(scans, mm["ratio"], mm["thickness_px"], str(m))
        record.update(profile=meta["profile"], training=meta["training"],
                      model=str(models[0]) if len(models) == 1 else [str(m) for m in models])  # fmt: skip
    else:
        net, meta = train_model(scans, profile, iterations, seconds, seed, progress, references)
        record.update(profile=meta["profile"], training=meta["training"])
        save_model(kept, net, meta)
        if save_model_to is not None:
            save_model(Path(save_model_to), net, meta)
            record["model"] = str(save_model_to)
    for s in scans:
        if s.name in done and _complete(out_dir / s.name):
            record["scans"][s.name] = done[s.name]
            logger.info("--continue: %s is done", out_dir / s.name)
            continue
        t = time.perf_counter()
        g = s.geometry
        result = predict_scan(net, s)
        if s.series is not None:
            desc = f"{s.series.description} through-plane SR".strip()
            how = (
                f"mrisr_throughplane: slice axis {g.slice_spacing:g} mm -> {g.inplane_spacing:g} mm"
            )
            write_series(result, out_dir / s.name, s.series, description=desc, derivation=how)
        else:
            write_scan(result, out_dir / s.name)
        record["scans"][s.name] = {
            "input": str(s.path),
            "geometry": g.to_json(),
            "noise_sigma": s.sigma * s.scale,
            "predict_seconds": time.perf_counter() - t,
        }
        logger.info("%s -> %s (%.1f s)", s.path, out_dir / s.name, time.perf_counter() - t)
    record["seconds"] = time.perf_counter() - t0
    save_json(record, out_dir / RECORD_FILE)
    return record


def _complete(path: Path) -> bool:
    """A finished output: a complete image file, or a DICOM folder (renamed into place whole)."""
    return path.is_dir() if not path.name.endswith(SCAN_ENDINGS) else is_complete_image(path)


def bspline_image(path: str | Path, thickness: float | None = None) -> sitk.Image:
    """The B-spline baseline of one scan: cubic B-spline along the slice axis, on the grid
    (and in the units) of its through-plane prediction."""
    return bspline_of(Scan(Path(path), thickness))


def bspline_of(s: Scan) -> sitk.Image:
    """:func:`bspline_image` of a scan already read."""
    g = s.geometry
    out = bspline_volume(s.volume, g.ratio, output_slices(s.volume.shape[0], g.ratio)) * s.scale
    arr = np.moveaxis(out.astype(np.float32), 0, g.numpy_axis)
    return image_from_array(arr, output_geometry(s.image, g))


def _profile(kind: str, scans: list[Scan], seed: int, progress: bool) -> tuple[SliceProfile, dict]:
    """The profile ``kind`` names (:mod:`mrisr.throughplane.profile_models`), or for
    ``auto``: a box of a stated thickness, else the measured one."""
    if kind != "auto":
        if kind not in PROFILE_MODELS:
            names = ", ".join(["auto", *PROFILE_MODELS.names()])
            raise MrisrError(f"unknown slice profile '{kind}'; choose one of {names}")
        return PROFILE_MODELS.get(kind).build(scans, seed, progress)
    g = scans[0].geometry
    if g.thickness_source != "assumed":  # a stated thickness is trusted
        return RectProfile.build(scans, seed, progress)[0], {
            "auto": f"rect: {g.thickness_source} thickness"
        }
    try:  # an unknown one is measured
        prof, log = fit_profile([s.volume for s in scans], g, [s.sigma for s in scans], seed)
    except ProfileFitError as e:
        logger.warning("%s: %s; a box as thick as the spacing instead", scans[0].path, e)
        return RectProfile.build(scans, seed, progress)[0], {
            "auto": f"rect: the profile fit failed ({e})"
        }
    logger.info("slice thickness not stated: measured a %.2f mm box from the scans",
                log["width_px"] * g.inplane_spacing)  # fmt: skip
    return prof, {**log, "auto": "learned: no thickness stated"}


def _bar(progress: bool, desc: str):
    if not progress:
        return None
    from tqdm import tqdm

    state = {"bar": None}

    def update(it: int, total: int, loss: float, seconds: float) -> None:
        if state["bar"] is None:
            state["bar"] = tqdm(total=total, desc=desc, unit="it")
        b = state["bar"]
        b.total = total
        b.update(it - b.n)
        b.set_postfix(loss=f"{loss:.4f}", refresh=False)

    update.close = lambda: state["bar"] and state["bar"].close()  # type: ignore[attr-defined]
    return update
