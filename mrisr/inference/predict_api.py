"""The importable API behind ``mrisr_predict``: super-resolve a folder of real LR scans."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mrisr import paths
from mrisr.dataset.integrity import check_geometry
from mrisr.imageio.resampling import inplane_axes, through_plane_axis_single
from mrisr.imageio.sitk_io import IMAGE_ENDINGS, Geometry, read_header, write_scan
from mrisr.inference.predictor import SRPredictor, bicubic_scan
from mrisr.inference.scan_files import (
    OUTPUT_FORMATS,
    InputScan,
    discover,
    output_done,
    output_path,
    read_input,
    series_label,
    uncertainty_path,
    write_output,
    writes_dicom,
)
from mrisr.networks.checkpoint_io import check_network_scale, load_network
from mrisr.paths import FOLD_NAMES, resolve_results_dataset
from mrisr.planning.fingerprint import FINGERPRINT_FILE
from mrisr.plans import (
    BASELINE_CONFIGURATION,
    DEFAULT_CONFIGURATION,
    DEFAULT_PLANS,
    DEFAULT_TRAINER,
    Plans,
)
from mrisr.throughplane.api import MODEL_FILE as TP_MODEL_FILE
from mrisr.throughplane.api import bspline_image, super_resolve
from mrisr.utilities.errors import IntegrityError, MrisrError
from mrisr.utilities.file_io import load_json, make_dirs, save_json
from mrisr.utilities.safety import (
    check_finite_output,
    check_predict_args,
    check_resume_args,
)

logger = logging.getLogger(__name__)

SPACING_WARN_RATIO = 1.25


def _input_files(folder: Path) -> list[InputScan]:
    if not folder.is_dir():
        raise MrisrError(f"{folder}: input folder does not exist")
    series = discover(folder, IMAGE_ENDINGS)
    if series is not None:
        return series
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    for p in entries:
        if not (p.is_file() or p.is_dir()):  # a dangling link, a link loop, a socket
            raise IntegrityError(
                f"{p}: neither a scan file nor a folder (a broken link or a link loop?); "
                "remove it or point it at a scan"
            )
    scans = [InputScan(p, p.name) for p in entries]
    if not scans:
        raise MrisrError(
            f"{folder}: input folder is empty; put the real LR scans to super-resolve there"
        )
    return scans


def _check_inputs(scans: list[InputScan]) -> None:
    """Header-level checks of every input before anything is written."""
    for s in scans:
        f = s.path
        if not s.is_dicom and not f.name.lower().endswith(IMAGE_ENDINGS):
            raise IntegrityError(
                f"{f}: not an image file (expected one of {', '.join(IMAGE_ENDINGS)}, or a "
                "folder holding one DICOM series)"
            )
        r = read_header(f)  # a folder: exactly one DICOM series, else a one-line error
        if r.GetDimension() > 3 and any(s > 1 for s in r.GetSize()[3:]):
            raise IntegrityError(
                f"{f}: {r.GetDimension()}D image; give one 3D (or 2D) scan per file"
            )
        if r.GetNumberOfComponents() != 1:
            raise IntegrityError(
                f"{f}: {r.GetNumberOfComponents()}-channel image; give one channel per file"
            )
        if r.GetDimension() == 3:
            g = (r.GetSize(), r.GetSpacing(), r.GetOrigin(), r.GetDirection())
            check_geometry(f, Geometry(*(tuple(v) for v in g)))


def _warn_spacing(f: Path, geom: Geometry, plans: Plans, trained_lr_spacing: float | None) -> None:
    ref = trained_lr_spacing or plans.lr_spacing
    tp = through_plane_axis_single(geom, np.asarray(plans.through_plane_normal))
    sp = [geom.spacing[a] for a in inplane_axes(tp)]
    r = float(np.mean(sp)) / ref
    if r > SPACING_WARN_RATIO or r < 1 / SPACING_WARN_RATIO:
        logger.warning(
            "%s: in-plane spacing %.3g mm is far from the %.3g mm the model was trained for "
            "(ratio %.2f); predicting anyway after resampling to the working grid",
            f.name,
            float(np.mean(sp)),
            ref,
            r,
        )


def _trained_lr_spacing(folder: Path) -> float | None:
    fp = folder / FINGERPRINT_FILE
    if not fp.is_file():
        return None
    try:
        cases = load_json(fp)["cases"]
        sp = [np.mean(c["lr"]["inplane_spacing"]) for c in cases if c.get("lr")]
    except (ValueError, KeyError, TypeError, AttributeError):
        logger.warning("%s is damaged: the spacing warning uses the plans' LR spacing", fp)
        return None
    return float(np.median(sp)) if sp else None


def _check_folders(inp: Path, out: Path, num_parts: int, part_id: int, device: str) -> None:
    if inp == out:
        raise MrisrError(
            f"{out}: output folder equals the input folder; inputs are never overwritten"
        )
    check_predict_args(inp, out, num_parts, part_id, device)


def _check_options(
    checkpoint: str, output_format: str, save_uncertainty: bool, configuration: str
) -> None:
    if checkpoint not in ("final", "best"):
        raise MrisrError(f"-chk must be 'final' or 'best', not '{checkpoint}'")
    if output_format not in OUTPUT_FORMATS:
        raise MrisrError(
            f"--output-format '{output_format}' unknown; valid: {', '.join(OUTPUT_FORMATS)}"
        )
    if save_uncertainty and configuration == BASELINE_CONFIGURATION:
        raise MrisrError(
            f"--save-uncertainty needs an ensemble of trained networks; '{configuration}' has none"
        )


def default_configuration(dataset: str, trainer: str, plans_name: str) -> str:
    """The configuration used without ``-c``: the plans' ``default_configuration`` (the
    selection rule's choice), read from the dataset's preprocessed plans, else from the plans
    a trained or installed model of ``trainer`` was trained with."""
    pre = paths.preprocessed_root() / dataset / f"{plans_name}.json"
    found = [pre] if pre.is_file() else []
    found += sorted((paths.results_root() / dataset).glob(f"{trainer}__{plans_name}__*/plans.json"))
    chosen = Plans.load(found[0]).default_configuration if found else DEFAULT_CONFIGURATION
    logger.info("configuration %s: the plans' default (-c chooses another)", chosen)
    return chosen


def _model_plans(dataset: str, trainer: str, plans_name: str, configuration: str):
    """The model folder and the plans it was trained with (a configuration that trains
    nothing, e.g. ``bicubic``: the preprocessed plans when nothing was run)."""
    folder = paths.results_folder(
        dataset, trainer, plans_name, configuration, labels=("-tr", "-p", "-c")
    )
    if (folder / "plans.json").is_file():
        plans = Plans.load(folder / "plans.json")
    else:
        pre = paths.preprocessed_root() / dataset / f"{plans_name}.json"
        plans = Plans.load(pre) if pre.is_file() else None
        if plans is None or plans.configuration(configuration).requires_training:
            raise MrisrError(
                f"no trained model for configuration '{configuration}' in {folder}: "
                f"train it with mrisr_train FOLD -d {dataset} -c {configuration} -tr {trainer}"
            )
    plans.configuration(configuration)  # unknown configuration -> one-line error
    return folder, plans


def _load_folds(
    folder: Path,
    plans: Plans,
    folds: list[str] | None,
    checkpoint: str,
    device: str,
    train_hint: str,
) -> tuple[list, list[str]]:
    """The networks of the wanted (default: every trained) folds, checked against the plans."""
    networks, used_folds = [], []
    wanted = folds or [
        f for f in FOLD_NAMES if (folder / f"fold_{f}" / f"checkpoint_{checkpoint}.pth").is_file()
    ]
    if not wanted:
        raise MrisrError(f"no trained fold in {folder}: train one with mrisr_train 0 {train_hint}")
    for f in wanted:
        if f not in FOLD_NAMES:
            raise MrisrError(f"unknown fold '{f}'; valid: {', '.join(FOLD_NAMES)}")
        chk = folder / f"fold_{f}" / f"checkpoint_{checkpoint}.pth"
        if not chk.is_file():
            raise MrisrError(f"{chk} not found: train it with mrisr_train {f} {train_hint}")
        net = load_network(chk, device)
        check_network_scale(net, plans, chk)
        networks.append(net)
        used_folds.append(f)
    return networks, used_folds


def _predict_scan(s, dest: Path, plans, predictor, save_uncertainty, trained_sp, describe):
    """Super-resolve one input scan and write it (and its uncertainty map) to ``dest``."""
    t0 = time.time()
    img, series = read_input(s)
    _warn_spacing(s.path, Geometry.of(img), plans, trained_sp)
    sd = None
    if predictor is None:
        sr = bicubic_scan(img, plans)
    elif save_uncertainty:
        sr, sd = predictor.predict_scan(img, return_std=True)
    else:
        sr = predictor.predict_scan(img)
    check_finite_output(sr, s.path)
    as_dicom, label = describe["as_dicom"](s), series_label(series, s)
    what = describe["what"]
    derivation = (
        f"{what} (trainer {describe['trainer']}, folds {describe['folds']}, "
        f"TTA {describe['tta']}) of {series.series_uid if series else s.name}"
        + (f" ({label})" if series else "")
    )
    if sd is not None:  # first: the SR scan marks the case as done (--continue)
        write_output(
            sd,
            uncertainty_path(dest, s, describe["output_format"]),
            as_dicom,
            series,
            f"mrisr SR uncertainty (sd) of {label}",
            "per-voxel standard deviation over the ensemble of " + derivation,
        )
    write_output(sr, dest, as_dicom, series, f"{what} of {label}", derivation)
    logger.info("%s -> %s (%.1f s)", s.name, dest, time.time() - t0)


def predict_folder(
    input_folder: Path,
    output_folder: Path,
    dataset: str | None = None,
    configuration: str | None = None,
    trainer: str = DEFAULT_TRAINER,
    plans_name: str = DEFAULT_PLANS,
    folds: list[str] | None = None,
    tta: bool = True,
    device: str = "cpu",
    num_parts: int = 1,
    part_id: int = 0,
    resume: bool = False,
    checkpoint: str = "final",
    output_format: str = "same",
    save_uncertainty: bool = False,
    tile_size: int | None = None,
) -> list[Path]:
    """Super-resolve every scan of ``input_folder`` into ``output_folder`` (same names).

    ``configuration`` None: the plans' default (:func:`default_configuration`).

    ``output_format``: ``same`` (DICOM in -> DICOM out), ``nifti`` or ``dicom``
    (:mod:`mrisr.inference.scan_files`). ``save_uncertainty``: also write the per-voxel
    standard deviation over the ensemble members (TTA transforms x folds). ``tile_size``:
    LR slices larger than this (pixels per side) are super-resolved in overlapping tiles
    (None: :data:`mrisr.inference.tiling.DEFAULT_TILE`; 0: never tile).
    """
    inp, out = Path(input_folder).resolve(), Path(output_folder).resolve()
    _check_folders(inp, out, num_parts, part_id, device)
    _check_options(checkpoint, output_format, save_uncertainty, configuration)
    files = _input_files(inp)
    _check_inputs(files)
    dataset = resolve_results_dataset(dataset, bicubic=configuration == BASELINE_CONFIGURATION)
    if configuration is None:
        configuration = default_configuration(dataset, trainer, plans_name)
    folder, plans = _model_plans(dataset, trainer, plans_name, configuration)
    if plans.configuration(configuration).axis == "through-plane":
        mine = [s.path for s in files[part_id::num_parts]]
        return _predict_through_plane(mine, out, folder, plans, configuration, folds, resume,
                                      save_uncertainty, output_format)  # fmt: skip
    networks: list = []
    used_folds: list[str] = []
    trains = plans.configuration(configuration).requires_training
    if trains:
        hint = f"-d {dataset} -c {configuration} -tr {trainer}"
        networks, used_folds = _load_folds(folder, plans, folds, checkpoint, device, hint)
    run_args = {
        "input": str(inp),
        "output": str(out),
        "dataset": dataset,
        "configuration": configuration,
        "trainer": trainer if trains else "none",
        "plans": plans_name,
        "folds": used_folds,
        "checkpoint": checkpoint,
        "tta": tta,
        "device": device,
        "num_parts": num_parts,
        "part_id": part_id,
        "continue": resume,
        "model_folder": str(folder),
        "output_format": output_format,
        "save_uncertainty": save_uncertainty,
        "tile_size": tile_size,
    }
    _record_run(out, run_args)
    return _predict_scans(files[part_id::num_parts], plans, networks, run_args)


def _predict_through_plane(
    scans: list[Path],
    out: Path,
    folder: Path,
    plans: Plans,
    configuration: str,
    folds: list[str] | None,
    resume: bool,
    save_uncertainty: bool,
    output_format: str,
) -> list[Path]:
    """A through-plane configuration: the folds' models averaged over each scan
    (:func:`mrisr.throughplane.api.super_resolve`), or the B-spline baseline."""
    if save_uncertainty or output_format != "same":
        raise MrisrError(
            f"-c {configuration}: a through-plane configuration writes its input's format and "
            "no uncertainty map (drop --save-uncertainty / --output-format)"
        )
    make_dirs(out)
    if not plans.configuration(configuration).requires_training:
        written = []
        for p in scans:
            dest = out / (p.name if p.is_file() else f"{p.name}.nii.gz")
            if not (resume and dest.is_file()):
                write_scan(bspline_image(p), dest)
            written.append(dest)
        return written
    wanted = folds or [f for f in FOLD_NAMES if (folder / f"fold_{f}" / TP_MODEL_FILE).is_file()]
    models = [folder / f"fold_{f}" / TP_MODEL_FILE for f in wanted]
    for m in models:
        if not m.is_file():
            raise MrisrError(f"{m} not found: train it with mrisr_train FOLD -c {configuration}")
    if not models:
        raise MrisrError(
            f"no trained fold in {folder}: train one with mrisr_train 0 -c {configuration}"
        )
    rec = super_resolve(scans, out, model=models, resume=resume, progress=False)
    return [out / name for name in rec["scans"]]


def _record_run(out: Path, run: dict) -> None:
    """``predict_args.json`` (per part): the arguments, checked against a run resumed."""
    check_resume_args(out, run, run["continue"])
    make_dirs(out)
    name = (
        f"predict_args_part{run['part_id']}.json" if run["num_parts"] > 1 else "predict_args.json"
    )
    save_json(run, out / name)


def _predict_scans(mine: list[InputScan], plans: Plans, networks: list, run: dict) -> list[Path]:
    """Super-resolve this part's scans as ``run`` (the recorded arguments) says."""
    configuration, tta, fmt = run["configuration"], run["tta"], run["output_format"]
    predictor = SRPredictor.for_configuration(
        plans, configuration, networks, device=run["device"], tta=tta, tile_size=run["tile_size"]
    )
    if run["save_uncertainty"] and networks and len(networks) * (8 if tta else 1) == 1:
        logger.warning(
            "--save-uncertainty with one fold and no TTA: one ensemble member, the map is zero"
        )
    folder, out = Path(run["model_folder"]), Path(run["output"])
    trained_sp = plans.real_lr_spacing or _trained_lr_spacing(folder)  # older plans: fingerprint
    describe = {
        "what": f"mrisr SR x{plans.scale} {configuration}",
        "trainer": run["trainer"],
        "folds": ",".join(run["folds"]) or "none",
        "tta": "on" if tta else "off",
        "output_format": fmt,
        "as_dicom": lambda s: writes_dicom(s, fmt),
    }
    written = []
    for s in tqdm(mine, desc="super-resolving", unit="scan"):
        dest = output_path(s, out, fmt)
        if run["continue"] and (output_done(dest) if dest.is_file() else dest.is_dir()):
            logger.info("%s exists: skipped (--continue)", dest.name)
            continue
        _predict_scan(s, dest, plans, predictor, run["save_uncertainty"], trained_sp, describe)
        written.append(dest)
    return written
