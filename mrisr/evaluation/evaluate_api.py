"""``mrisr_evaluate``: compare predicted scans with reference scans, per case and overall."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mrisr.imageio.sitk_io import IMAGE_ENDINGS, read_scan
from mrisr.metrics.fidelity import compare_in_physical_space
from mrisr.metrics.registry import metrics
from mrisr.preprocessing.foreground import foreground_mask
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import save_json
from mrisr.utilities.parallel import map_progress

logger = logging.getLogger(__name__)


def _is_image(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(IMAGE_ENDINGS)


def match_files(ref: Path, pred: Path) -> list[tuple[str, Path, Path]]:
    """(case, reference file, prediction file) for every prediction with a same-name reference."""
    ref, pred = Path(ref), Path(pred)
    if pred.is_file() and ref.is_file():
        return [(pred.name, ref, pred)]
    for p, what in ((ref, "-ref"), (pred, "-pred")):
        if not p.is_dir():
            raise MrisrError(f"{p}: {what} must be an existing folder (or both files)")
    preds = sorted(p for p in pred.iterdir() if _is_image(p))
    if not preds:
        raise MrisrError(f"{pred}: no images to evaluate")
    pairs = [(p.name, ref / p.name, p) for p in preds if (ref / p.name).is_file()]
    missing = [p.name for p in preds if not (ref / p.name).is_file()]
    if missing:
        logger.warning(
            "no reference for %d prediction(s): %s", len(missing), ", ".join(missing[:5])
        )
    if not pairs:
        raise MrisrError(f"no file in {pred} has a reference of the same name in {ref}")
    return pairs


#: in-plane size SSIM needs: scikit-image's Gaussian window (sigma 1.5) is 11 x 11
MIN_INPLANE = 11


def evaluate_case(args: tuple[str, Path, Path, bool]) -> dict:
    case, ref_path, pred_path, register = args
    ref, pred = read_scan(ref_path), read_scan(pred_path)
    arr = sitk.GetArrayFromImage(pred)
    if min(arr.shape[-2:]) < MIN_INPLANE:
        raise MrisrError(
            f"{pred_path}: prediction is {arr.shape[-1]}x{arr.shape[-2]} in-plane; SSIM needs at "
            f"least {MIN_INPLANE}x{MIN_INPLANE} voxels per slice: evaluate a larger scan"
        )
    out = compare_in_physical_space(ref, pred, register)
    for m in metrics(reference=False):
        out[m.name] = m.compute(arr, foreground_mask(arr))
    notes = []
    if out["foreground_voxels"] == 0:
        notes.append(
            "no reference foreground on the prediction grid (no physical overlap?): PSNR and "
            "SSIM are undefined (null)"
        )
    elif np.isinf(out["psnr"]):
        notes.append("prediction equals the reference on the mask: PSNR is infinite (null)")
    for m in (m.name for m in metrics()):
        if not np.isfinite(out[m]) and not notes:
            notes.append(f"{m} is not finite (null)")
    if notes:
        logger.warning("%s: %s", case, "; ".join(notes))
        out["note"] = "; ".join(notes)
    out.update(case=case, reference=str(ref_path), prediction=str(pred_path))
    return out


def check_output(output: Path, ref: Path, pred: Path) -> None:
    """``-o`` must be a ``.json`` file that is none of the inputs."""
    output = Path(output)
    if output.is_dir():
        raise MrisrError(f"-o {output}: is a folder; give a file name ending in .json")
    if output.suffix.lower() != ".json":
        raise MrisrError(f"-o {output}: the summary is JSON: give a file name ending in .json")
    r = output.resolve()
    if any(r == Path(p).resolve() for p in (ref, pred)):
        raise MrisrError(f"-o {output}: is one of the inputs; inputs are never overwritten")


def summarise(cases: list[dict]) -> dict:
    """Mean and sd of each metric over the cases (finite values only)."""
    out = {}
    for m in (m.name for m in metrics()):
        v = np.array([c[m] for c in cases if np.isfinite(c.get(m, np.nan))], dtype=float)
        out[m] = {
            "mean": float(v.mean()) if v.size else float("nan"),
            "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "n": int(v.size),
        }
    return out


def evaluate_folders(
    ref: Path,
    pred: Path,
    output: Path | None = None,
    num_processes: int = 2,
    register: bool = True,
) -> dict:
    if num_processes < 1:
        raise MrisrError(f"-np {num_processes}: needs at least 1 process")
    if output is not None:
        check_output(output, ref, pred)
    pairs = [(*p, register) for p in match_files(ref, pred)]
    cases = map_progress(evaluate_case, pairs, num_processes, desc="evaluating")
    result = {
        "reference": str(ref),
        "prediction": str(pred),
        "convention": ("reference rigidly registered to the prediction, " if register else "")
        + "reference resampled onto the prediction grid in physical space; each "
        "image divided by its foreground 99.5th percentile; PSNR/SSIM (data range 1) on the "
        "reference's foreground; BRISQUE (lower is better) per slice of the prediction",
        "cases": cases,
        "mean": summarise(cases),
    }
    if output is not None:
        save_json(result, output)
    return result


def format_table(result: dict) -> str:
    ms = metrics()
    lines = [f"{'case':<28} " + " ".join(f"{m.label:>{m.width}}" for m in ms)]
    for c in result["cases"]:
        cells = " ".join(f"{c[m.name]:>{m.width}{m.fmt}}" for m in ms)
        lines.append(f"{c['case']:<28} {cells}")
    mean = result["mean"]
    cells = " ".join(m.mean_fmt.format(mean[m.name]["mean"], mean[m.name]["sd"]) for m in ms)
    lines.append(f"{'mean +- sd':<28} {cells}")
    return "\n".join(lines)
