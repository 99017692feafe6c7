"""The through-plane part of ``mrisr_demo``: one simulated thick-slice scan, super-resolved.

A ``thick3gap`` scan (3 mm slices, 0.6 mm gaps, 1 mm in-plane: a non-integer ratio of 3.6;
:mod:`mrisr.dataset.demo_thick_slice`) goes through :func:`~mrisr.throughplane.api.
super_resolve` self-supervised, its thickness read from the dataset's ``dataset.json``,
training capped by a time budget. The result and the B-spline interpolation are scored
against the isotropic truth (:func:`~mrisr.metrics.fidelity.through_plane_metrics`) and shown
side by side on a coronal slice (the slice axis runs top to bottom).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mrisr.dataset.demo_thick_slice import build_thick_dataset
from mrisr.metrics.fidelity import through_plane_metrics
from mrisr.preprocessing.foreground import foreground_mask
from mrisr.preprocessing.normalization import foreground_percentile
from mrisr.throughplane.api import bspline_image, super_resolve
from mrisr.utilities.file_io import atomic_path

PROTOCOL = "thick3gap"


def throughplane_demo(workdir: Path, seconds: float, progress: bool = True) -> str:
    """Run it in ``workdir/throughplane``; the markdown section of the demo report (kept in
    ``report.md`` there: a second demo run reuses it)."""
    root = Path(workdir) / "throughplane"
    done = root / "report.md"
    if done.is_file():
        return done.read_text()
    data = build_thick_dataset(root / "data", PROTOCOL, cases=0, test_cases=1)
    scan = sorted((data / "imagesLRTs").glob("*.nii.gz"))[0]
    truth_img = sitk.ReadImage(str(data / "imagesHRTs" / scan.name), sitk.sitkFloat32)
    rec = super_resolve([scan], root / "out", seconds=seconds, progress=progress)
    panels = {
        "truth (1 mm)": sitk.GetArrayFromImage(truth_img),
        "B-spline": sitk.GetArrayFromImage(bspline_image(scan)),
        "mrisr_throughplane": sitk.GetArrayFromImage(
            sitk.ReadImage(str(root / "out" / scan.name), sitk.sitkFloat32)
        ),
    }
    truth = panels["truth (1 mm)"]
    scores = {k: through_plane_metrics(truth, v, 0) for k, v in list(panels.items())[1:]}
    figure = _figure(panels, root / "throughplane.png")
    g = rec["scans"][scan.name]["geometry"]
    lines = [
        f"## Through-plane SR ({PROTOCOL}: {g['slice_thickness']:g} mm slices every "
        f"{g['slice_spacing']:.3g} mm, 1 mm in-plane; thickness from {g['thickness_source']})",
        "",
        "| method | PSNR | SSIM (coronal) |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {v['psnr']:.2f} | {v['ssim']:.4f} |" for k, v in scores.items()]
    lines += [
        "",
        f"Self-supervised on the scan itself: {rec['training']['iterations']} iterations in "
        f"{rec['training']['seconds']:.0f} s, slice profile {rec['profile']['kind']} "
        f"(FWHM {rec['profile']['fwhm_mm']:.2f} mm). Figure: {figure}",
    ]
    text = "\n".join(lines) + "\n"
    with atomic_path(done) as tmp:
        tmp.write_text(text)
    return text


def _figure(panels: dict[str, np.ndarray], path: Path) -> Path:
    """A coronal slice through the brain's middle, each panel at its own 99.5th percentile."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    truth = next(iter(panels.values()))
    mask = foreground_mask(truth)
    y = int(np.argmax(mask.sum(axis=(0, 2))))
    fig = Figure(figsize=(3.0 * len(panels), 3.2), dpi=120)
    FigureCanvasAgg(fig)
    for i, (name, arr) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), i + 1)
        top = foreground_percentile(arr, mask)
        ax.imshow(arr[::-1, y, :] / top, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"coronal slice {y}: the slice axis runs top to bottom", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path
