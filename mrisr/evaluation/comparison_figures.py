"""The comparison's figures (:func:`mrisr.evaluation.comparison.find_best_configuration`):
Fig. 4-like panels of one validation case and Fig. 5-like MSCN statistics of each
configuration's synthetic LR against the real LR; ``columns``: (configuration, label) in
the panels' order (:func:`mrisr.evaluation.comparison.columns_of`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mrisr import paths
from mrisr.degradation.bicubic import BicubicDegradation
from mrisr.degradation.stage import FOLD_INDEPENDENT
from mrisr.imageio.resampling import resample_to
from mrisr.imageio.sitk_io import Geometry, read_scan
from mrisr.inference.predictor import bicubic_scan
from mrisr.metrics.mscn import mscn_distance, mscn_histograms, save_mscn_figure
from mrisr.plans import BASELINE_CONFIGURATION, DEFAULT_PLANS, Plans
from mrisr.preprocessing import storage
from mrisr.preprocessing.dataset import PreprocessedDataset
from mrisr.preprocessing.foreground import foreground_mask
from mrisr.preprocessing.normalization import foreground_percentile
from mrisr.utilities.file_io import atomic_path

UNCERTAINTY = "uncertainty"


def comparison_figure(
    dataset: str, results: dict, path: Path, columns: list, plans_name: str = DEFAULT_PLANS
) -> Path | None:
    """Fig. 4-like: real LR, bicubic, each configuration, HR, and the uncertainty map of the
    first configuration of ``columns`` (the plans' default; when validation wrote one);
    same slice and zoom."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    configs = [c for c, _ in columns if c != BASELINE_CONFIGURATION and results.get(c)]
    if not configs:
        return None
    case = sorted(set.intersection(*(set(results[c]) for c in configs)))
    if not case:
        return None
    case = case[0]
    ref_img = sitk.ReadImage(results[configs[0]][case]["sr_file"], sitk.sitkFloat32)
    grid = Geometry.of(ref_img)
    plans = Plans.load(paths.preprocessed_root() / dataset / f"{plans_name}.json")
    props = PreprocessedDataset.for_plans(plans).properties[case]
    lr = read_scan(props["source_files"]["lr"], check=False)
    hr = read_scan(props["source_files"]["hr"], check=False)
    panels = {
        "real LR": resample_to(lr, grid, sitk.sitkNearestNeighbor, antialias=False),
        "Bicubic": bicubic_scan(lr, plans),
    }
    names = dict(columns)
    for c in configs:
        panels[names[c]] = sitk.ReadImage(results[c][case]["sr_file"], sitk.sitkFloat32)
    panels["HR"] = resample_to(hr, grid, sitk.sitkBSpline)
    sr_file = Path(results[configs[0]][case]["sr_file"])
    unc = sr_file.with_name(f"{case}_uncertainty{sr_file.name[len(case) :]}")
    if unc.is_file():  # written by validation: the sd over the TTA ensemble
        panels[f"{UNCERTAINTY} {names[configs[0]]}"] = sitk.ReadImage(str(unc), sitk.sitkFloat32)
    arrays = {k: sitk.GetArrayFromImage(v) for k, v in panels.items()}
    hr_arr = arrays["HR"]
    mask = foreground_mask(hr_arr)
    z = int(np.argmax(mask.sum(axis=(1, 2))))
    ys, xs = np.nonzero(mask[z])
    cy, cx = int(ys.mean()), int(xs.mean())
    half = max(16, min(hr_arr.shape[1], hr_arr.shape[2]) // 4)
    sl = (z, slice(max(cy - half, 0), cy + half), slice(max(cx - half, 0), cx + half))
    fig = Figure(figsize=(2.4 * len(arrays), 2.8), dpi=120)
    FigureCanvasAgg(fig)
    for i, (name, arr) in enumerate(arrays.items()):
        ax = fig.add_subplot(1, len(arrays), i + 1)
        if name.startswith(UNCERTAINTY):  # where the SR is not to be trusted: bright
            top = foreground_percentile(arr, mask)
            ax.imshow(arr[sl] / top, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"{name} (sd, 0..{top:.3g})", fontsize=9)
            ax.axis("off")
            continue
        m = foreground_mask(arr)
        top = foreground_percentile(arr, m)
        ax.imshow(arr[sl] / top, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{case}, slice {z} (zoom)", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


def mscn_figure(
    dataset: str, path: Path, columns: list, plans_name: str = DEFAULT_PLANS
) -> dict | None:
    """Fig. 5-like: MSCN statistics of each configuration's synthetic LR vs the real LR."""
    plans = Plans.load(paths.preprocessed_root() / dataset / f"{plans_name}.json")
    ds = PreprocessedDataset.for_plans(plans)
    pairs = ds.pairs()
    sets = {
        "real LR": mscn_histograms(
            [ds.load(c, "lr") for c in pairs],
            mask=[ds.load(c, "lr_mask").astype(bool) for c in pairs],
        )
    }
    for config, label in columns:
        base = ds.folder / "synthetic" / config
        if config == BASELINE_CONFIGURATION:  # interpolation: the classic bicubic decimation
            bic = BicubicDegradation(None, plans.scale)
            sets[label] = mscn_histograms(
                [bic.degrade(ds.load(c, "hr")) for c in pairs],
                mask=[ds.load(c, "lr_mask").astype(bool) for c in pairs],
            )
            continue
        if not base.is_dir():
            continue
        folders = [base / FOLD_INDEPENDENT] + sorted(
            p for p in base.iterdir() if p.name != FOLD_INDEPENDENT
        )
        imgs, masks = [], []
        for c in pairs:
            f = next(
                (
                    d / f"{c}_lr{storage.SUFFIX}"
                    for d in folders
                    if (d / f"{c}_lr{storage.SUFFIX}").is_file()
                ),
                None,
            )
            if f is not None:
                imgs.append(storage.load_array(f))
                masks.append(ds.load(c, "lr_mask").astype(bool))
        if imgs:
            sets[label] = mscn_histograms(imgs, mask=masks)
    if len(sets) < 2:
        return None
    save_mscn_figure(sets, path, title="MSCN statistics: synthetic vs real LR", reference="real LR")
    return {n: mscn_distance(sets["real LR"], h) for n, h in sets.items() if n != "real LR"}
