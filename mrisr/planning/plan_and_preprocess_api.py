"""The importable API behind ``mrisr_plan_and_preprocess``."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from mrisr import paths
from mrisr.dataset.integrity import VerifiedDataset, verify_dataset
from mrisr.degradation.base import DEGRADATIONS
from mrisr.imageio.resampling import thick_axis_of, through_plane_axis_single
from mrisr.paths import DATASET_RE, list_datasets, resolve_dataset_name
from mrisr.planning.fingerprint import FINGERPRINT_FILE, load_or_compute_fingerprint
from mrisr.planning.planners import PLANNERS
from mrisr.plans import Plans
from mrisr.preprocessing.dataset import PreprocessedDataset
from mrisr.preprocessing.preprocessor import preprocess_dataset
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import load_json, make_dirs, save_json, write_error

logger = logging.getLogger(__name__)


def dataset_names(identifiers: list[str] | None) -> list[str]:
    root = paths.raw_root()
    if not root.is_dir():
        raise MrisrError(f"mrisr_raw folder {root} does not exist")
    if identifiers:
        return [resolve_dataset_name(i, root) for i in identifiers]
    names = list_datasets(root)
    if not names:
        raise MrisrError(f"no DatasetNNN_Name folders in {root} (mrisr_raw)")
    return names


def plans_path(preprocessed_dir: Path, plans_name: str) -> Path:
    return preprocessed_dir / f"{plans_name}.json"


#: scans smaller than this in-plane (voxels) would shrink every patch of the dataset's
#: plans: they are left out of planning and preprocessing, with a warning
MIN_INPLANE = {"lr": 12, "hr": 24}


def exclude_small_scans(verified: VerifiedDataset) -> VerifiedDataset:
    """``verified`` without the cases that have a scan too small in-plane to train on."""
    small = {}
    for c in verified.cases:
        for kind, g in verified.geometries.get(c.name, {}).items():
            tp = through_plane_axis_single(g)
            inplane = [g.size[a] for a in range(3) if a != tp]
            if min(inplane) < MIN_INPLANE[kind]:
                small[c.name] = f"{kind.upper()} {inplane[0]}x{inplane[1]}"
    if not small:
        return verified
    logger.warning(
        "%d case(s) left out of planning and preprocessing: in-plane smaller than %d (LR) / "
        "%d (HR) voxels would shrink every training patch: %s",
        len(small),
        MIN_INPLANE["lr"],
        MIN_INPLANE["hr"],
        ", ".join(f"{k} ({v})" for k, v in sorted(small.items())),
    )
    cases = [c for c in verified.cases if c.name not in small]
    if not any(c.lr for c in cases) or not any(c.hr for c in cases):
        raise MrisrError(
            f"{verified.dataset_dir}: too few scans large enough to plan with (in-plane at least "
            f"{MIN_INPLANE['lr']} LR / {MIN_INPLANE['hr']} HR voxels); add larger scans"
        )
    geoms = {k: v for k, v in verified.geometries.items() if k not in small}
    return VerifiedDataset(verified.dataset_dir, verified.info, cases, geoms)


def plan_and_preprocess(
    dataset: str,
    num_processes: int = 2,
    verify_only: bool = False,
    clean: bool = False,
    planner: str = "DefaultPlanner",
    preprocess: bool = True,
) -> tuple[VerifiedDataset, Plans | None]:
    """Verify, fingerprint, plan and preprocess one dataset; nothing is written before the
    integrity check has passed."""
    planner_cls = PLANNERS.get(planner)
    if num_processes < 1:
        raise MrisrError(f"-np {num_processes}: needs at least 1 process")
    if not DATASET_RE.fullmatch(dataset):
        raise MrisrError(f"-d {dataset}: dataset names look like Dataset001_Name")
    raw_dir = paths.raw_root() / dataset
    verified = verify_dataset(raw_dir, num_processes)
    n_pairs = sum(c.is_pair for c in verified.cases)
    logger.info(
        "%s: integrity check passed (%d cases, %d pairs)", dataset, len(verified.cases), n_pairs
    )
    if verify_only:
        return verified, None
    verified = exclude_small_scans(verified)
    out = paths.inside(paths.preprocessed_root(), paths.preprocessed_root() / dataset, "-d")
    if out == paths.preprocessed_root().resolve():
        raise MrisrError(f"-d {dataset}: not a dataset folder name")
    if clean and out.exists():
        try:
            shutil.rmtree(out)
        except OSError as e:
            raise write_error(out, e) from None
    make_dirs(out)
    ds_json = out / "dataset.json"
    try:
        same = load_json(ds_json) == verified.info.to_json()
    except (OSError, ValueError):
        same = False
    if not same:  # unchanged files are not rewritten (a no-op run works on a full disk)
        save_json(verified.info.to_json(), ds_json)
    fp = load_or_compute_fingerprint(
        out, dataset, verified.cases, verified.geometries, num_processes, clean=clean
    )
    plans = planner_cls(fp).plan(dataset)
    plans.save(plans_path(out, plans.plans_name))
    in_plane = [n for n in plans.configuration_names if plans.configuration(n).axis == "in-plane"]
    if preprocess and in_plane:  # through-plane configurations read the raw scans
        registrations = {c.name: c.pair.registration for c in fp.pairs if c.pair.registration}
        preprocess_dataset(
            verified.cases, plans, out / plans.data_identifier, num_processes, registrations
        )
    return verified, plans


def model_lines(plans: Plans) -> list[str]:
    """A line about each degradation model's first planned section, in the model's words
    (:meth:`~mrisr.degradation.base.Degradation.plan_summary`)."""
    lines, seen = [], set()
    for name in plans.configuration_names:
        section = plans.configuration(name).degradation
        if not section or section.get("name") in seen:
            continue
        seen.add(section["name"])
        said = DEGRADATIONS.get(section["name"]).plan_summary(section)
        if said:
            lines.append(f"  {said[0]:<16} {said[1]}")
    return lines


def _measured_noise_level(plans: Plans) -> dict | None:
    """The training noise the preprocessed real LR gives (every LR scan; a fold's training
    takes its own training cases'), None before preprocessing."""
    try:
        ds = PreprocessedDataset.for_plans(plans)
        return ds.lr_noise_level(ds.with_lr())
    except (MrisrError, OSError, KeyError):
        return None


def acquired_resolution_lines(plans: Plans) -> list[str]:
    """A line where the LR spectra show an acquired resolution coarser than the headers'."""
    acquired, stored = plans.real_lr_acquired_spacing, plans.real_lr_spacing
    if not acquired or not stored or max(acquired) <= 1.05 * stored:
        return []
    return [
        f"  LR acquired      {acquired[0]:.3g} x {acquired[1]:.3g} mm, read from the LR "
        f"spectra (the headers state {stored:.3g} mm)"
    ]


def summary_text(dataset: str, verified: VerifiedDataset, plans: Plans) -> str:
    """What was decided and why, for the terminal."""
    n_pairs = sum(c.is_pair for c in verified.cases)
    n_hr = sum(c.hr is not None for c in verified.cases)
    n_lr = sum(c.lr is not None for c in verified.cases)
    den = plans.denoising
    lines = [
        f"{dataset}: {len(verified.cases)} cases ({n_pairs} pairs, {n_hr} HR, {n_lr} LR scans)",
        f"  scale            x{plans.scale}  (HR in-plane {plans.hr_spacing:.4g} mm, "
        f"LR working {plans.lr_spacing:.4g} mm)",
        *acquired_resolution_lines(plans),
        f"  configurations   {', '.join(plans.configuration_names)}",
        *selection_lines(plans),
    ]
    lines += model_lines(plans)
    trained = _first_section(plans, lambda c: c.requires_training and bool(c.sr))
    if trained:
        edsr = trained.sr
        lines.append(
            f"  EDSR             patches LR {edsr['lr_patch']} / HR {edsr['hr_patch']}, "
            f"{edsr['num_blocks']} blocks x {edsr['num_features']} features, "
            f"{edsr['iterations']} iterations, batch {edsr['batch_size']}"
        )
    tp = _first_section(plans, lambda c: c.axis == "through-plane" and c.requires_training)
    if tp:
        t = tp.through_plane
        lines.append(
            f"  through-plane    slices {t['slice_spacing_mm']:.3g} mm -> {t['inplane_spacing_mm']:.3g} mm, "
            f"{t['seconds']:g} s per fold, HR references: {'yes' if t['hr_references'] else 'no'}"
        )
    in_plane = any(plans.configuration(n).axis == "in-plane" for n in plans.configuration_names)
    if in_plane:
        strength = (
            f", h = {den['h']:.3g} (noise sigma {den['sigma']:.3g})"
            if den["method"] != "none"
            else ""
        )
        lines.append(
            f"  LR denoising     {den['method']}{strength} (configurations with a denoised "
            "input; the others see the raw LR)"
        )
    noisy = _first_section(plans, lambda c: bool(c.training_noise))
    if noisy:
        noise = noisy.training_noise
        level = _measured_noise_level(plans)
        lines.append(
            f"  training noise   {noise['model']}, "
            + (
                f"sigma {level['sigma']:.3g} ({level['method']}; normalised units, the "
                f"{'coloured' if level['rho'] is not None else 'white'} noise of the real LR)"
                if level
                else "the real LR's measured level and colour"
            )
            + f", sigma +-{100 * noise['sigma_jitter']:.0f}%, PSF width "
            f"+-{100 * noise['kernel_width_jitter']:.0f}%, bias {noise['bias']:g}"
        )
    lines += flagged_pairs_lines(plans)
    if in_plane:  # the through-plane configurations say it themselves otherwise
        lines += thick_slice_lines(verified)
    lines.append("  why:")
    lines += [f"    {k}: {v}" for k, v in plans.data["decisions"].items()]
    out = paths.preprocessed_root() / dataset
    data = f", {out / plans.data_identifier}/" if in_plane else ""
    lines.append(f"  wrote {out / FINGERPRINT_FILE}, {plans.path}{data}")
    return "\n".join(lines)


def thick_slice_lines(verified: VerifiedDataset) -> list[str]:
    """A line per role whose scans are thick-slice (the fingerprint's geometry): the in-plane
    SR keeps their slices; ``mrisr_throughplane`` is what makes them isotropic."""
    lines = []
    for role in ("lr", "hr"):
        geoms = [g[role] for g in verified.geometries.values() if g.get(role) is not None]
        thick = [g for g in geoms if thick_axis_of(g.spacing) is not None]
        if thick:
            sp = sorted(thick[0].spacing)
            lines.append(
                f"  thick-slice      {len(thick)} of {len(geoms)} {role.upper()} scans (slices "
                f"{sp[2]:.3g} mm, in-plane {sp[0]:.3g} mm): the in-plane SR keeps their slices; "
                "mrisr_throughplane makes them isotropic (documentation/throughplane.md)"
            )
    return lines


def _first_section(plans: Plans, wanted):
    """The first configuration (the default one first) for which ``wanted`` holds, or None:
    the summary describes what the plans hold, whichever configurations a planner made."""
    names = sorted(plans.configuration_names, key=lambda n: n != plans.default_configuration)
    return next((c for c in map(plans.configuration, names) if wanted(c)), None)


def selection_lines(plans: Plans) -> list[str]:
    """The default configuration, the ones worth training and the screen's evidence."""
    sel = plans.data.get("selection")
    if not sel:
        return [f"  default          {plans.default_configuration} (the planner's; not screened)"]
    lines = [
        f"  default          {sel['reason']}",
        f"  worth training   {', '.join(plans.worth_training)}  (the others: on request, -c)",
    ]
    scores = sel.get("scores") or {}
    for name in sorted(scores, key=lambda n: -scores[n]["psnr"]):
        s = scores[name]
        fid = s.get("fidelity_ssim")
        lines.append(
            f"    screen {name:<18} PSNR {s['psnr']:.2f} dB ({s['gain_psnr']:+.2f} vs bicubic), "
            f"SSIM {s['ssim']:.4f}" + (f"; synthetic LR fidelity {fid:.4f}" if fid else "")
        )
    return lines


def flagged_pairs_lines(plans: Plans) -> list[str]:
    """The pairs preprocessing found unusable for voxel-wise comparison (none: no lines)."""
    folder = paths.preprocessed_folder(plans.dataset_name, plans.data_identifier)
    if not folder.is_dir():
        return []
    flagged = PreprocessedDataset(folder).flagged_pairs()
    if not flagged:
        return []
    lines = [
        f"  pairs left out   {len(flagged)} pair(s) left out of validation and of the synthetic "
        "LR's fidelity (still training cases, unpaired):"
    ]
    return lines + [f"    {c}: {why}" for c, why in sorted(flagged.items())]
