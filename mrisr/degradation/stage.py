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


def degradation_dir(plans: Plans, config: str) -> Path:
    return paths.results_root() / plans.dataset_name / f"degradation__{plans.plans_name}__{config}"


def _case_set_id(cases: list[str]) -> str:
    return hashlib.sha1(",".join(sorted(cases)).encode()).hexdigest()[:10]


def model_id(plans: Plans, config: str, cases: list[str]) -> str:
    """Which trained model the synthetic LR of these cases comes from."""
    deg = plans.configuration(config).degradation
    if deg is None:
        raise MrisrError(f"configuration '{config}' has no degradation model (no training)")
    if deg["name"] == "dsn" or (deg["name"] == "dsgan" and deg["kernel_mode"] == "per_dataset"):
        return f"set_{_case_set_id(cases)}"
    return FOLD_INDEPENDENT


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
        params = {k: v for k, v in deg.items() if k not in ("name", "kernel_mode")}
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


def _unit_kernel(out: Path, name: str) -> np.ndarray | None:
    f = out / f"{name}_kernel.npy"
    return np.load(f) if f.is_file() else None


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

    out = degradation_dir(plans, config) / "units"
    out.mkdir(parents=True, exist_ok=True)
    units = _dsgan_units(ds, deg, cases, mid)
    todo = {n: s for n, s in units.items() if not (out / f"{n}.json").is_file()}
    if len(todo) < len(units):
        logger.info(
            "DSGAN: %d of %d units already trained: reused", len(units) - len(todo), len(units)
        )
    if todo:
        _train_dsgan_units(plans, config, ds, deg, todo, out, device, progress)
    kernels = {n: _unit_kernel(out, n) for n in units}
    good = [k for k in kernels.values() if k is not None]
    if not good:
        raise MrisrError(
            f"DSGAN produced no usable kernel for configuration '{config}' "
            f"(see the unit summaries in {out})"
        )
    mean_kernel = np.mean(good, axis=0)
    mean_kernel /= mean_kernel.sum()
    for c in cases:
        if not ds.properties[c]["has_hr"]:
            continue
        dest = synthetic_path(plans, config, mid, c)
        if dest.is_file():
            continue
        hr = ds.load(c, "hr")
        mode = deg["kernel_mode"]
        if mode == "per_slice" and ds.properties[c]["is_pair"]:
            names = [f"{c}__z{z:03d}" for z in range(hr.shape[0])]
            ks = np.stack([kernels[n] if kernels[n] is not None else mean_kernel for n in names])
            drawn = [(kernels[n], n.split("__")[1]) for n in names if kernels[n] is not None]
            if drawn:
                save_kernel_grid_png(
                    [k for k, _ in drawn],
                    [n for _, n in drawn],
                    degradation_dir(plans, config) / f"{c}_kernels.png",
                    title=f"{config}: {c}",
                )
        elif mode == "per_volume" and kernels.get(c) is not None:
            ks = kernels[c]
        elif mode == "per_dataset":
            ks = kernels[f"dataset_{mid}"]
        else:
            ks = mean_kernel
        storage.save_array(dest, degrade_with_kernel(hr, ks, plans.scale))
    if deg["kernel_mode"] != "per_slice":
        save_kernel_grid_png(
            good[:64],
            [n for n, k in kernels.items() if k is not None][:64],
            degradation_dir(plans, config) / "kernels.png",
            title=config,
        )


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
    model.fit(
        [(ds.load(c, "hr"), ds.load(c, "lr")) for c in pairs],
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
    run(plans, config, ds, deg, list(cases), mid, device, progress)
    return files


def load_unit_summaries(plans: Plans, config: str) -> list[dict]:
    out = degradation_dir(plans, config) / "units"
    return [load_json(f) for f in sorted(out.glob("*.json"))]
