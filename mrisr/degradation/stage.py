"""The degradation stage: synthetic training LR for a configuration and a set of cases.

``ensure_synthetic_lr(plans, config, cases)`` makes sure that every given HR case has its
synthetic LR for the configuration, training only what those cases need:

- ``dsgan``: DSGAN training units per the planned kernel mode (``per_slice``: one GAN per
  slice of each pair, as in the paper; ``per_volume``: one per pair; ``per_dataset``: one
  for all the given cases). Each slice is degraded with its own kernel; slices and cases
  without a kernel of their own (skipped units, HR-only cases) use the mean kernel of the
  units trained. Units already trained are reused (resumable).
- ``dsn``: one DSN fit on the given pairs (the fold's training cases).
- ``gaussian``, ``zerofill``, ``bicubic``: fixed models, nothing to train.

Artefacts (kernels .npy and .json, a PNG of the kernels of each case, DSN weights) live in
``$mrisr_results/<dataset>/degradation__<plans>__<config>/``; synthetic LR is stored with
the preprocessed data, in ``<plans>_preprocessed/synthetic/<config>/<model>/``.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from pathlib import Path

import numpy as np

from mrisr import paths
from mrisr.planning.plans_handler import Plans
from mrisr.preprocessing import storage
from mrisr.preprocessing.dataset import PreprocessedDataset
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import load_json, save_json, save_npy

logger = logging.getLogger(__name__)

FOLD_INDEPENDENT = "cases"  # model id of synthetic LR that does not depend on the case set
#: keys of a "dsgan" section that the stage reads (the rest are the GAN's parameters)
STAGE_KEYS = ("name", "kernel_mode", "synthesis_kernel", "fallback", "share_units_with")


def degradation_dir(plans: Plans, config: str) -> Path:
    return paths.results_root() / plans.dataset_name / f"degradation__{plans.plans_name}__{config}"


def _case_set_id(cases: list[str]) -> str:
    return hashlib.sha1(",".join(sorted(cases)).encode()).hexdigest()[:10]


def model_id(plans: Plans, config: str, cases: list[str]) -> str:
    """Which trained model the synthetic LR of these cases comes from."""
    deg = plans.configuration(config).degradation
    if deg is None:
        raise MrisrError(f"configuration '{config}' has no degradation model (no training)")
    if deg["name"] == "dsgan":
        learned_on_set = deg["kernel_mode"] == "per_dataset"
    else:
        from mrisr.degradation.base import build_degradation

        learned_on_set = build_degradation(deg, plans.scale).learned
    return f"set_{_case_set_id(cases)}" if learned_on_set else FOLD_INDEPENDENT


def synthetic_path(plans: Plans, config: str, mid: str, case: str) -> Path:
    base = PreprocessedDataset.for_plans(plans).folder
    return base / "synthetic" / config / mid / f"{case}_lr{storage.SUFFIX}"


def _seed(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


# ---------------------------------------------------------------------------- DSGAN
def _dsgan_units(
    ds: PreprocessedDataset, deg: dict, cases: list[str], mid: str
) -> dict[str, tuple]:
    """unit name -> (case or None, slice index or None, cases of the unit)."""
    mode = deg["kernel_mode"]
    pairs = [c for c in cases if ds.properties[c]["is_pair"]]
    units: dict[str, tuple] = {}
    if mode == "per_slice":
        for c in pairs:
            for z in range(ds.properties[c]["hr"]["shape_zyx"][0]):
                units[f"{c}__z{z:03d}"] = (c, z, [c])
    elif mode == "per_volume":
        for c in pairs:
            units[c] = (c, None, [c])
    elif mode == "per_dataset":
        units[f"dataset_{mid}"] = (None, None, list(cases))
    else:
        raise MrisrError(f"unknown kernel_mode '{mode}' in the plans")
    return units


def _make_unit(ds: PreprocessedDataset, name: str, spec: tuple):
    from mrisr.degradation.dsgan_core import DSGANUnit

    case, z, members = spec
    sl = slice(z, z + 1) if z is not None else slice(None)
    hr_cases = [c for c in members if ds.properties[c]["has_hr"]]
    lr_cases = [c for c in members if ds.properties[c]["has_lr"]]
    if case is not None:
        hr_cases, lr_cases = [case], [case]

    def stack(cs, key):
        arrs = [np.asarray(ds.array(c, key)[sl]) for c in cs]
        return arrs

    hr = stack(hr_cases, "hr")
    lr = stack(lr_cases, "lr")
    hw = stack(hr_cases, "hr_weight")
    lw = stack(lr_cases, "lr_weight")

    # units spanning scans of different sizes: pad to a common in-plane size with zeros
    # (zero weight: never sampled)
    def cat(arrs, dtype):
        h = max(a.shape[1] for a in arrs)
        w = max(a.shape[2] for a in arrs)
        out = np.zeros((sum(len(a) for a in arrs), h, w), dtype=dtype)
        i = 0
        for a in arrs:
            out[i : i + len(a), : a.shape[1], : a.shape[2]] = a
            i += len(a)
        return out

    return DSGANUnit(
        name=name,
        hr=cat(hr, np.float32),
        lr=cat(lr, np.float32),
        seed=_seed(name),
        hr_weight=cat(hw, np.float32),
        lr_weight=cat(lw, np.float32),
    )


def _train_dsgan_units(
    plans: Plans,
    config: str,
    ds: PreprocessedDataset,
    deg: dict,
    todo: dict[str, tuple],
    out: Path,
    device: str,
    progress: bool,
) -> None:
    from mrisr.degradation.dsgan_core import DEFAULT_UNITS_PER_BATCH, train_dsgan
    from mrisr.degradation.kernels import kernel_statistics

    names = list(todo)
    step = DEFAULT_UNITS_PER_BATCH
    for a in range(0, len(names), step):
        chunk = names[a : a + step]
        logger.info("DSGAN: training units %d-%d of %d", a + 1, a + len(chunk), len(names))
        units = [_make_unit(ds, n, todo[n]) for n in chunk]
        params = {k: v for k, v in deg.items() if k not in STAGE_KEYS}
        results = train_dsgan(units, plans.scale, params, device=device, progress=progress)
        for r in results:
            summary = {"unit": r.name, "status": r.status, "message": r.message, "losses": r.losses}
            if r.status == "ok":
                save_npy(out / f"{r.name}_kernel_raw.npy", r.kernel_raw.astype(np.float32))
                save_npy(out / f"{r.name}_kernel.npy", r.kernel.astype(np.float32))
                summary["raw"] = kernel_statistics(r.kernel_raw)
                summary["kernel"] = kernel_statistics(r.kernel)
            else:
                logger.warning("DSGAN unit %s: %s (%s)", r.name, r.status, r.message)
            save_json(summary, out / f"{r.name}.json")  # last: marks the unit done


def units_dir(plans: Plans, config: str) -> Path:
    """Where the DSGAN units of ``config`` live: its own folder, or that of the
    configuration it shares them with (``"share_units_with"``: same GANs, other synthesis)."""
    deg = plans.configuration(config).degradation or {}
    return degradation_dir(plans, deg.get("share_units_with") or config) / "units"


def _unit_kernels(out: Path, names: list[str], deg: dict, scale: int) -> tuple[dict, dict]:
    """unit -> synthesis kernel (None: no usable kernel), and unit -> why it was replaced.

    Post-processed kernels that are not plausible PSFs (multi-modal, mass on the border, a
    width outlier against the median of the units) are flagged in their summary and
    replaced by the pooled kernel. ``"synthesis_kernel": "signed"`` synthesises with the
    generator's own kernel (negative lobes kept), else with the post-processed one.
    """
    from mrisr.degradation.kernels import implausible_reason, kernel_statistics, signed_kernel

    post = {
        n: np.load(out / f"{n}_kernel.npy") if (out / f"{n}_kernel.npy").is_file() else None
        for n in names
    }
    sigmas = [np.mean(kernel_statistics(k)["sigma"]) for k in post.values() if k is not None]
    median = float(np.median(sigmas)) if len(sigmas) >= 3 else None
    flagged = {}
    for n, k in post.items():
        why = implausible_reason(k, scale, median) if k is not None else None
        if why:
            flagged[n] = why
            summary = load_json(out / f"{n}.json")
            if summary.get("implausible") != why:
                summary["implausible"] = why
                save_json(summary, out / f"{n}.json")
    kernels = {}
    for n, k in post.items():
        if k is None or n in flagged:
            kernels[n] = None
        elif deg.get("synthesis_kernel") == "signed":
            try:
                kernels[n] = signed_kernel(
                    np.load(out / f"{n}_kernel_raw.npy"), scale, pad=(k.shape[0] - 13) // 2
                )
            except ValueError as e:  # a raw kernel that does not sum to a positive value
                logger.warning("DSGAN unit %s: signed kernel unusable (%s): post-processed", n, e)
                kernels[n] = k
        else:
            kernels[n] = k
    return kernels, flagged


def _dsgan_synthesize(
    plans: Plans,
    config: str,
    ds: PreprocessedDataset,
    deg: dict,
    cases: list[str],
    mid: str,
    device: str,
    progress: bool,
) -> None:
    from mrisr.degradation.kernels import degrade_with_kernel, save_kernel_grid_png

    out = units_dir(plans, config)
    out.mkdir(parents=True, exist_ok=True)
    units = _dsgan_units(ds, deg, cases, mid)
    todo = {n: s for n, s in units.items() if not (out / f"{n}.json").is_file()}
    if len(todo) < len(units):
        logger.info(
            "DSGAN: %d of %d units already trained: reused", len(units) - len(todo), len(units)
        )
    if todo:
        _train_dsgan_units(plans, config, ds, deg, todo, out, device, progress)
    kernels, flagged = _unit_kernels(out, list(units), deg, plans.scale)
    for n, why in flagged.items():
        logger.warning(
            "DSGAN unit %s: implausible kernel (%s): replaced by the pooled kernel", n, why
        )
    good = [k for k in kernels.values() if k is not None]
    if not good:
        raise MrisrError(
            f"DSGAN produced no usable kernel for configuration '{config}' "
            f"(see the unit summaries in {out})"
        )
    mean_kernel = np.mean(good, axis=0)
    mean_kernel /= mean_kernel.sum()
    mode = deg["kernel_mode"]
    for c in cases:
        if not ds.properties[c]["has_hr"]:
            continue
        dest = synthetic_path(plans, config, mid, c)
        if dest.is_file():
            continue
        hr = ds.load(c, "hr")
        if mode == "per_slice" and ds.properties[c]["is_pair"]:
            names = [f"{c}__z{z:03d}" for z in range(hr.shape[0])]
            ks = np.stack([kernels[n] if kernels[n] is not None else mean_kernel for n in names])
            save_kernel_grid_png(
                [kernels[n] if kernels[n] is not None else mean_kernel for n in names],
                [n.split("__")[1] + (" replaced" if n in flagged else "") for n in names],
                degradation_dir(plans, config) / f"{c}_kernels.png",
                title=f"{config}: {c}",
            )
        elif mode == "per_volume" and kernels.get(c) is not None:
            ks = kernels[c]
        elif mode == "per_dataset" and kernels.get(f"dataset_{mid}") is not None:
            ks = kernels[f"dataset_{mid}"]
        else:
            ks = mean_kernel
        storage.save_array(dest, degrade_with_kernel(hr, ks, plans.scale))
    if mode != "per_slice":
        shown = [(n, k if k is not None else mean_kernel) for n, k in kernels.items()][:64]
        save_kernel_grid_png(
            [k for _, k in shown],
            [n + (" replaced" if n in flagged else "") for n, _ in shown],
            degradation_dir(plans, config) / "kernels.png",
            title=config,
        )
    return {"psf_sigma_hr": _sigma_hr(mean_kernel), "replaced_units": flagged}


def _sigma_hr(kernel: np.ndarray) -> list[float]:
    from mrisr.degradation.kernels import kernel_statistics

    k = np.clip(kernel, 0, None)
    return kernel_statistics(k / k.sum())["sigma"]


# ---------------------------------------------------------------------------- the others
def _model_synthesize(
    plans: Plans,
    config: str,
    ds: PreprocessedDataset,
    deg: dict,
    cases: list[str],
    mid: str,
    device: str,
    progress: bool,
) -> None:
    """Models behind ``mrisr.degradation.base``: fixed ones, and the DSN (fit once per case set)."""
    from mrisr.degradation.base import build_degradation

    model = build_degradation(deg, plans.scale)
    if model.learned:
        _fit_or_load(model, plans, config, ds, cases, mid, device, progress)
    for c in cases:
        dest = synthetic_path(plans, config, mid, c)
        if ds.properties[c]["has_hr"] and not dest.is_file():
            storage.save_array(dest, model.degrade(ds.load(c, "hr")))
    info = {"model": model.describe()}
    if hasattr(model, "psf_fwhm_hr"):
        info["psf_fwhm_hr"] = model.psf_fwhm_hr()
        info["psf_sigma_hr"] = [f / 2.3548 for f in info["psf_fwhm_hr"]]
    elif model.name == "gaussian":
        info["psf_sigma_hr"] = list(np.broadcast_to(np.asarray(model.sigma, dtype=float), 2))
    return info


def _fit_or_load(model, plans, config, ds, cases, mid, device, progress) -> None:
    weights = degradation_dir(plans, config) / f"{model.name}_{mid}.pt"
    if weights.is_file():
        model.load(weights)
        return
    pairs = [c for c in cases if ds.properties[c]["is_pair"]]
    if not pairs:
        raise MrisrError(
            f"configuration '{config}' ({model.name}) needs LR/HR pairs among the training cases"
        )
    logger.info("%s: fitting on %d pairs", model.name, len(pairs))
    lr_key = getattr(model, "fit_lr_key", "lr")
    model.fit(
        [(ds.load(c, "hr"), ds.load(c, lr_key)) for c in pairs],
        masks=[ds.load(c, "lr_mask") for c in pairs],
        seed=_seed(mid),
        device=device,
        progress=progress,
    )
    meta_path = model.save(weights)
    meta = load_json(meta_path)
    meta.update(cases=sorted(pairs), model=mid)
    save_json(meta, meta_path)


def ensure_synthetic_lr(
    plans: Plans, config: str, cases: list[str], device: str = "cpu", progress: bool = True
) -> dict[str, Path]:
    """Synthetic training LR of every HR case in ``cases`` for ``config``; returns case -> file.

    Trains only what these cases need and reuses what exists.
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
    if not missing:
        return files
    logger.info("%s: making synthetic LR for %d cases (%s)", config, len(missing), deg["name"])
    run = _dsgan_synthesize if deg["name"] == "dsgan" else _model_synthesize
    info = run(plans, config, ds, deg, list(cases), mid, device, progress)
    info["fidelity"] = fidelity_to_real_lr(ds, files)
    if deg.get("fallback") == "fitted_gaussian" and info["fidelity"]:
        _fall_back_if_worse(plans, config, ds, files, info)
    if info["fidelity"]:
        f = info["fidelity"]["mean"]
        logger.info(
            "%s: synthetic LR vs the real LR of %d registered pairs: SSIM %.4f, PSNR %.2f dB",
            config,
            info["fidelity"]["num_pairs"],
            f["ssim"],
            f["psnr"],
        )
    save_json(info, summary_path(plans, config, mid))
    return files


#: SSIM by which a learned degradation may trail the fitted Gaussian before it is replaced
FALLBACK_MARGIN = 0.002


def _fall_back_if_worse(plans: Plans, config: str, ds, files: dict[str, Path], info: dict) -> None:
    """The last resort of the check against the real LR: a learned degradation that matches
    the registered real LR worse than the Gaussian the planner fitted to it is flagged, and
    the Gaussian is used instead (recorded in the summary)."""
    from mrisr.degradation.base import build_degradation

    section = next(
        (
            plans.configuration(c).degradation
            for c in plans.configuration_names
            if (plans.configuration(c).degradation or {}).get("name") == "gaussian"
            and plans.configuration(c).degradation.get("fitted")
        ),
        None,
    )
    if section is None:
        return
    gauss = build_degradation(section, plans.scale)
    pairs = {c: f for c, f in files.items() if ds.properties[c]["is_pair"]}
    tmp = {}
    for c in pairs:
        tmp[c] = gauss.degrade(ds.load(c, "hr"))
    ref = _fidelity_of_arrays(ds, tmp)
    mine = info["fidelity"]["mean"]["ssim"]
    info["fitted_gaussian_fidelity"] = ref
    if ref is None or mine >= ref["mean"]["ssim"] - FALLBACK_MARGIN:
        return
    why = (
        f"its synthetic LR matches the real LR worse (SSIM {mine:.4f}) than the fitted Gaussian "
        f"(sigma {section['sigma']}, SSIM {ref['mean']['ssim']:.4f})"
    )
    logger.warning("%s: %s: the Gaussian is used instead", config, why)
    for c, f in files.items():
        storage.save_array(f, tmp[c] if c in tmp else gauss.degrade(ds.load(c, "hr")))
    info["fallback"] = {"used": section, "reason": why, "replaced": info.pop("psf_sigma_hr", None)}
    info["psf_sigma_hr"] = list(np.broadcast_to(np.asarray(section["sigma"], dtype=float), 2))
    info["fidelity"] = ref


def summary_path(plans: Plans, config: str, mid: str) -> Path:
    """The degradation summary of a synthetic LR set: model, PSF, fidelity to real LR."""
    return synthetic_path(plans, config, mid, "x").parent / "summary.json"


def fidelity_to_real_lr(ds: PreprocessedDataset, files: dict[str, Path]) -> dict | None:
    """How close each pair's synthetic LR is to its registered real LR (raw, before NLM:
    the noise adds the same error to every model, so the ranking is that of the PSFs).
    SSIM (Gaussian-weighted, per slice) and PSNR on the real LR's foreground; None without
    pairs."""
    return _fidelity_of_arrays(
        ds,
        {c: storage.load_array(f) for c, f in sorted(files.items()) if ds.properties[c]["is_pair"]},
    )


def _fidelity_of_arrays(ds: PreprocessedDataset, synthetic: dict[str, np.ndarray]) -> dict | None:
    from mrisr.evaluation.metrics import psnr, ssim

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


def load_unit_summaries(plans: Plans, config: str) -> list[dict]:
    out = units_dir(plans, config)
    return [load_json(f) for f in sorted(out.glob("*.json"))]
