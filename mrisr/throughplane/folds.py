"""Through-plane configurations in the cross-validation pipeline: one fold trained and validated.

A through-plane configuration (``"axis": "through-plane"`` in the plans, its settings in
``"through_plane"``) trains one model per fold on the fold's training cases' thick-slice LR
scans (and, where the plans say so, their isotropic HR scans as references), keeps it as
``fold_K/throughplane_model.pt`` (the ``mrisr_throughplane --model`` format) and validates
on the fold's validation cases: each LR scan super-resolved, scored against its isotropic HR
scan beside the B-spline baseline, ``validation/summary.json`` in the in-plane summaries'
layout (so ``mrisr_find_best_configuration`` reads both). The B-spline configuration trains
nothing and validates the baseline alone.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import SimpleITK as sitk

from mrisr.imageio.registration import rigid_register
from mrisr.imageio.sitk_io import write_scan
from mrisr.metrics.fidelity import through_plane_in_physical_space, validation_summary
from mrisr.plans import THROUGH_PLANE_BASELINE
from mrisr.throughplane.api import (
    MODEL_FILE,
    Scan,
    bspline_of,
    load_model,
    predict_scan,
    save_model,
    train_model,
)
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import save_json

logger = logging.getLogger(__name__)

#: the validation summary's name for the baseline every through-plane fold computes


def train_fold(
    settings: dict,
    lr_scans: list[Path],
    hr_scans: list[Path],
    fold_dir: Path,
    seed: int = 0,
    progress: bool = True,
    seconds: float | None = None,
) -> Path:
    """Train the fold's model on ``lr_scans`` (``hr_scans`` join as references when the
    settings say so); ``fold_dir/MODEL_FILE``. ``seconds`` overrides the planned budget."""
    if not lr_scans:
        raise MrisrError(f"{fold_dir}: the fold has no thick-slice LR scan to train on")
    scans = [Scan(p, settings.get("slice_thickness")) for p in lr_scans]
    refs = hr_scans if settings.get("hr_references") else []
    budget = settings.get("seconds") if seconds is None else seconds
    net, meta = train_model(
        scans, settings["profile"], int(settings["iterations"]), budget, seed, progress, refs
    )
    path = fold_dir / MODEL_FILE
    save_model(path, net, meta)
    return path


def validate_fold(
    configuration: str,
    settings: dict,
    model: Path | None,
    cases: dict[str, tuple[Path, Path]],
    out_dir: Path,
    file_ending: str,
    info: dict | None = None,
) -> dict:
    """Predict each validation case's LR (``cases``: name -> (LR, HR)), score it and the
    B-spline baseline against the HR scan (rigidly registered to the B-spline), write the
    predictions and ``summary.json``; ``model`` None: the B-spline configuration."""
    out_dir.mkdir(parents=True, exist_ok=True)
    net = load_model(model)[0] if model is not None else None
    per_case: dict[str, dict] = {}
    for name, (lr, hr) in cases.items():
        t = time.perf_counter()
        scan = Scan(lr, settings.get("slice_thickness"))
        base = bspline_of(scan)  # the scan read once for both
        pred = predict_scan(net, scan) if net is not None else base
        write_scan(pred, out_dir / f"{name}{file_ending}")
        ref = sitk.ReadImage(str(hr), sitk.sitkFloat32)
        tf = rigid_register(base, ref)
        axis = scan.geometry.numpy_axis
        m_base = through_plane_in_physical_space(ref, base, axis, tf)
        m_pred = through_plane_in_physical_space(ref, pred, axis, tf) if net else m_base
        per_case[name] = {configuration: m_pred, THROUGH_PLANE_BASELINE: m_base}
        logger.info(
            "validation %s: %s PSNR %.2f dB SSIM %.4f | B-spline PSNR %.2f dB SSIM %.4f (%.0f s)",
            name, configuration, m_pred["psnr"], m_pred["ssim"], m_base["psnr"],
            m_base["ssim"], time.perf_counter() - t,
        )  # fmt: skip
    methods = [configuration, THROUGH_PLANE_BASELINE]
    if configuration == THROUGH_PLANE_BASELINE:
        methods = [configuration]
    convention = (
        "mrisr.metrics.fidelity.through_plane_in_physical_space (HR rigidly registered to the "
        "B-spline and resampled onto the prediction's grid, per-scan 99.5th percentile "
        "normalisation, foreground mask; SSIM over the slices holding the slice axis)"
    )
    header = {"axis": "through-plane", "held_out": True, **(info or {})}
    summary = validation_summary(
        configuration, per_case, methods, ["psnr", "ssim"], convention, header
    )
    save_json(summary, out_dir / "summary.json")
    return summary
