"""mrisr_evaluate: metrics per case and overall, in physical space."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from synthetic import make_scan

from mrisr.cli.evaluate import main
from mrisr.metrics.brisque import brisque_volume


def test_evaluate_folders(tmp_path, capsys):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    for i in range(2):
        hr = make_scan((96, 96, 4), (1.25, 1.25, 2.7), seed=i)
        sitk.WriteImage(hr, str(ref / f"c{i}.nii.gz"))
        # prediction: a blurred copy on another grid, in other intensity units
        lr = make_scan((44, 44, 4), (2.7, 2.7, 2.7), seed=i, blur_mm=1.0 + i)
        up = sitk.Resample(lr, hr, sitk.Transform(), sitk.sitkBSpline, 0.0, sitk.sitkFloat32)
        sitk.WriteImage(up * 5.0, str(pred / f"c{i}.nii.gz"))
    sitk.WriteImage(make_scan((96, 96, 4), (1.25, 1.25, 2.7)), str(pred / "orphan.nii.gz"))
    assert main(["-ref", str(ref), "-pred", str(pred), "-np", "1"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((pred / "summary.json").read_text())
    cases = {c["case"]: c for c in summary["cases"]}
    assert set(cases) == {"c0.nii.gz", "c1.nii.gz"}  # the orphan has no reference
    # more blur -> worse on every metric
    assert cases["c0.nii.gz"]["psnr"] > cases["c1.nii.gz"]["psnr"] > 15
    assert cases["c0.nii.gz"]["ssim"] > cases["c1.nii.gz"]["ssim"]
    assert cases["c0.nii.gz"]["brisque"] < cases["c1.nii.gz"]["brisque"]
    m = summary["mean"]["psnr"]
    assert m["n"] == 2 and np.isclose(m["mean"], np.mean([c["psnr"] for c in cases.values()]))
    assert "mean +- sd" in out and "c1.nii.gz" in out


def test_evaluate_bad_input(tmp_path, capsys):
    (tmp_path / "p").mkdir()
    assert main(["-ref", str(tmp_path / "nope"), "-pred", str(tmp_path / "p")]) == 2
    assert "-ref must be an existing folder" in capsys.readouterr().err
    assert main(["-ref", str(tmp_path / "p"), "-pred", str(tmp_path / "p")]) == 2
    assert "no images to evaluate" in capsys.readouterr().err


def test_brisque_prefers_sharp_slices():
    from scipy.ndimage import gaussian_filter
    from skimage.data import camera

    arr = np.stack([camera(), camera()[::-1]]).astype(np.float32)
    blurred = gaussian_filter(arr, (0, 3, 3))
    mask = np.ones(arr.shape, dtype=bool)
    assert brisque_volume(arr, mask) < brisque_volume(blurred, mask)


def test_brisque_scores_the_anatomy_not_the_empty_field_of_view():
    """What lies beyond the foreground's box (flat after denoising, noise after
    interpolation) leaves the score alone; the anatomy's own blur still moves it."""
    from scipy.ndimage import gaussian_filter
    from skimage.data import camera

    anatomy = camera()[::2, ::2].astype(np.float32)  # 256 x 256
    flat = np.zeros((2, 400, 400), np.float32)
    flat[:, 72:328, 72:328] = anatomy
    mask = np.zeros(flat.shape, dtype=bool)
    mask[:, 72:328, 72:328] = True
    noisy = flat.copy()
    far = np.ones(flat.shape[1:], dtype=bool)
    far[60:340, 60:340] = False  # beyond the box and its margin
    noisy[:, far] = np.random.default_rng(0).normal(0, 40, (2, int(far.sum()))) ** 2
    score = brisque_volume(flat, mask)
    assert np.isfinite(score)
    assert brisque_volume(noisy, mask) == pytest.approx(score, abs=1e-6)
    assert brisque_volume(gaussian_filter(flat, (0, 3, 3)), mask) > score + 5
