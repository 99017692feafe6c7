"""The degradation stage: synthetic training LR for a configuration and a set of cases.

``ensure_synthetic_lr(plans, config, cases)`` makes sure that every given HR case has its
synthetic LR for the configuration, training only what those cases need:

the configuration's registered model (:mod:`mrisr.degradation.base`) is built and writes
them (:meth:`~mrisr.degradation.base.Degradation.synthesize`): fixed models (``gaussian``,
``zerofill``, ``bicubic``) degrade each HR scan, learned ones (``dsn``, ``acquisition``)
fit once per case set first, the DSGAN (:mod:`mrisr.degradation.dsgan.model`) trains its
units. The stage knows no model by name: it only asks whether the synthetic LR depends on
the case set (the model id), gives every synthetic LR the real LR's intensity relation
where it differs (:mod:`mrisr.degradation.intensity_relation`), then checks the result
against the registered real LR.

Artefacts (kernels .npy and .json, a PNG of the kernels of each case, DSN weights) live in
``$mrisr_results/<dataset>/degradation__<plans>__<config>/``; synthetic LR is stored with
the preprocessed data, in ``<plans>_preprocessed/synthetic/<config>/<model>/``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from mrisr import paths
from mrisr.degradation.base import SynthesisContext, build_degradation
from mrisr.degradation.intensity_relation import IntensityRelation, decide, fit_relation
from mrisr.metrics.fidelity import psnr, ssim
from mrisr.plans import Plans, content_hash
from mrisr.preprocessing import storage
from mrisr.preprocessing.dataset import PreprocessedDataset
from mrisr.preprocessing.pair_check import mask_on_lr_grid
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import load_json, save_json

logger = logging.getLogger(__name__)

FOLD_INDEPENDENT = "cases"  # model id of synthetic LR that does not depend on the case set


def degradation_dir(plans: Plans, config: str) -> Path:
    return paths.degradation_folder(plans.dataset_name, plans.plans_name, config)


def _case_set_id(cases: list[str]) -> str:
    return hashlib.sha1(",".join(sorted(cases)).encode()).hexdigest()[:10]


def model_id(plans: Plans, config: str, cases: list[str]) -> str:
    """Which trained model the synthetic LR of these cases comes from."""
    deg = plans.configuration(config).degradation
    if deg is None:
        raise MrisrError(f"configuration '{config}' has no degradation model (no training)")
    learned_on_set = build_degradation(deg, plans.scale).learned_on_case_set
    return f"set_{_case_set_id(cases)}" if learned_on_set else FOLD_INDEPENDENT


def synthetic_path(plans: Plans, config: str, mid: str, case: str) -> Path:
    base = PreprocessedDataset.for_plans(plans).folder
    return paths.synthetic_lr_path(base, config, mid, case, storage.SUFFIX)


def ensure_synthetic_lr(
    plans: Plans, config: str, cases: list[str], device: str = "cpu", progress: bool = True
) -> dict[str, Path]:
    """Synthetic training LR of every HR case in ``cases`` for ``config``; returns case -> file.

    Trains only what these cases need and reuses a complete set made under the same
    section; a partial set is made again whole.
    """
    deg = plans.configuration(config).degradation
    if deg is None:
        raise MrisrError(f"configuration '{config}' trains no SR model: it needs no training LR")
    ds = PreprocessedDataset.for_plans(plans)
    unknown = sorted(set(cases) - set(ds.cases))
    if unknown:
        raise MrisrError(f"cases not in the preprocessed data: {', '.join(unknown[:5])}")
    mid = model_id(plans, config, cases)
    hr_cases = [c for c in cases if ds.properties[c]["has_hr"]]
    files = {c: synthetic_path(plans, config, mid, c) for c in hr_cases}
    missing = [c for c, f in files.items() if not f.is_file()]
    key = content_hash(deg)  # synthetic LR made under another section is made again
    made = summary_path(plans, config, mid)
    stale = made.is_file() and load_json(made).get("section_key") != key
    if stale:
        logger.info("%s: its degradation section changed: synthetic LR made again", config)
    elif not missing:
        return files
    # the set is made whole in one go (a stale or partial one is removed first): the
    # intensity relation is fitted on, and applied to, every file of it once
    for f in (*files.values(), made):
        f.unlink(missing_ok=True)
    logger.info("%s: making synthetic LR for %d cases (%s)", config, len(files), deg["name"])
    model = build_degradation(deg, plans.scale)
    info = model.synthesize(SynthesisContext(plans, config, ds, list(cases), mid, device, progress))
    relation = _apply_intensity_relation(ds, files, cases, plans.scale, info)
    info["fidelity"] = fidelity_to_real_lr(ds, files)
    if deg.get("fallback") == "fitted_gaussian" and info["fidelity"]:
        _fall_back_if_worse(plans, config, ds, files, info, relation)
    if info["fidelity"]:
        f = info["fidelity"]["mean"]
        logger.info(
            "%s: synthetic LR vs the real LR of %d registered pairs: SSIM %.4f, PSNR %.2f dB",
            config,
            info["fidelity"]["num_pairs"],
            f["ssim"],
            f["psnr"],
        )
    info["section_key"] = key
    save_json(info, made)
    return files


#: SSIM by which a learned degradation may trail the fitted Gaussian before it is replaced
FALLBACK_MARGIN = 0.002


def _apply_intensity_relation(
    ds: PreprocessedDataset, files: dict[str, Path], cases: list[str], scale: int, info: dict
) -> IntensityRelation | None:
    """Fit the LR series' intensity relation to the synthetic LR
    (:mod:`mrisr.degradation.intensity_relation`): on the registered pairs' shared
    foreground, else on each series' own; apply it to every file if it is not identity.
    Records the fit in ``info["intensity_relation"]``; returns the relation applied."""
    syn, real = [], []
    pairs = [c for c in files if ds.is_registered_pair(c)]
    for c in pairs:
        s, r = storage.load_array(files[c]), ds.load(c, "lr_raw")
        if s.shape != r.shape:
            continue
        shared = ds.load(c, "lr_mask").astype(bool) & _hr_mask_on(ds, c, s.shape, scale)
        syn.append(s[shared])
        real.append(r[shared])
    method = f"quantile matching on {len(syn)} registered pairs' shared foreground"
    if not syn:
        method = "histogram matching of the synthetic and the real LR foreground (no pairs)"
        for c, f in files.items():
            s = storage.load_array(f)
            syn.append(s[_hr_mask_on(ds, c, s.shape, scale)])
        for c in cases:
            if ds.properties[c]["has_lr"]:
                real.append(ds.load(c, "lr_raw")[ds.load(c, "lr_mask").astype(bool)])
    # the noise the training adds to the related LR: the real LR's as measured where the
    # signal is (the pairs' residual), not the background's (a g-factor map, a masked one)
    level = ds.lr_noise_level(cases)
    relation = fit_relation(syn, real, level["sigma"] if level else 0.0)
    info["intensity_relation"], apply = decide(relation, method)
    logger.info("intensity relation of the LR series: %s", info["intensity_relation"]["reason"])
    if not apply:
        return None
    for f in files.values():
        storage.save_array(f, relation(storage.load_array(f)))
    return relation


def _hr_mask_on(ds: PreprocessedDataset, case: str, shape: tuple, scale: int) -> np.ndarray:
    """The HR foreground on the synthetic LR's grid."""
    return mask_on_lr_grid(ds.load(case, "hr_mask"), shape, scale)


def _fall_back_if_worse(
    plans: Plans,
    config: str,
    ds,
    files: dict[str, Path],
    info: dict,
    relation: IntensityRelation | None = None,
) -> None:
    """The last resort of the check against the real LR: a learned degradation that matches
    the registered real LR worse than the fixed model the planner fitted to the pairs (a
    section marked ``"fitted": true``: the Gaussian) is flagged, and that model is used
    instead (recorded in the summary)."""
    section = next(
        (
            plans.configuration(c).degradation
            for c in plans.configuration_names
            if (plans.configuration(c).degradation or {}).get("fitted") is True
        ),
        None,
    )
    if section is None:
        return
    gauss = build_degradation(section, plans.scale)
    pairs = {c: f for c, f in files.items() if ds.is_registered_pair(c)}

    def degrade(c: str) -> np.ndarray:  # with the relation the learned model was given
        out = gauss.degrade(ds.load(c, "hr"))
        return relation(out) if relation is not None else out

    tmp = {c: degrade(c) for c in pairs}
    ref = _fidelity_of_arrays(ds, tmp)
    mine = info["fidelity"]["mean"]["ssim"]
    info["fitted_gaussian_fidelity"] = ref
    if ref is None or mine >= ref["mean"]["ssim"] - FALLBACK_MARGIN:
        return
    params = ", ".join(
        f"{k} {v}" for k, v in section.items() if k not in ("name", "fitted", "ssim")
    )
    why = (
        f"its synthetic LR matches the real LR worse (SSIM {mine:.4f}) than the fitted "
        f"{gauss.label} ({params}, SSIM {ref['mean']['ssim']:.4f})"
    )
    logger.warning("%s: %s: the fitted model is used instead", config, why)
    for c, f in files.items():
        storage.save_array(f, tmp[c] if c in tmp else degrade(c))
    info["fallback"] = {"used": section, "reason": why, "replaced": info.pop("psf_sigma_hr", None)}
    info["psf_sigma_hr"] = gauss.psf_info()["psf_sigma_hr"]
    info["fidelity"] = ref


def summary_path(plans: Plans, config: str, mid: str) -> Path:
    """The degradation summary of a synthetic LR set: model, PSF, fidelity to real LR."""
    return synthetic_path(plans, config, mid, "x").parent / "summary.json"


def fidelity_to_real_lr(ds: PreprocessedDataset, files: dict[str, Path]) -> dict | None:
    """How close each pair's synthetic LR is to its registered real LR (raw, before NLM:
    the noise adds the same error to every model, so the ranking is that of the PSFs).
    SSIM (Gaussian-weighted, per slice) and PSNR on the real LR's foreground; None without
    pairs."""
    out = _fidelity_of_arrays(
        ds,
        {c: storage.load_array(f) for c, f in sorted(files.items()) if ds.is_registered_pair(c)},
    )
    left_out = {c: why for c, why in ds.flagged_pairs().items() if c in files}
    if out is not None and left_out:
        out["left_out"] = left_out
    return out


def _fidelity_of_arrays(ds: PreprocessedDataset, synthetic: dict[str, np.ndarray]) -> dict | None:
    per_case = {}
    for c, syn in synthetic.items():
        real = ds.load(c, "lr_raw")
        mask = ds.load(c, "lr_mask").astype(bool)
        if syn.shape != real.shape or not mask.any():
            continue
        per_case[c] = {"ssim": ssim(real, syn, mask), "psnr": psnr(real, syn, mask)}
    if not per_case:
        return None
    mean = {k: float(np.mean([v[k] for v in per_case.values()])) for k in ("ssim", "psnr")}
    return {"num_pairs": len(per_case), "mean": mean, "cases": per_case, "reference": "lr_raw"}
