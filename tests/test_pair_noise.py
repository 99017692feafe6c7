"""The real LR's noise measured against its registered HR: right whatever the noise's
colour (a grid finer than acquired), the background (masked) and the contrast between the
series, where the in-tissue local estimate reads low; the training noise follows it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from mrisr.imageio.noise_estimates import tissue_sigma
from mrisr.preprocessing.dataset import PreprocessedDataset
from mrisr.preprocessing.foreground import foreground_mask
from mrisr.preprocessing.pair_noise import residual_noise_sigma
from tests.synthetic import grid_points, phantom

HR_N, ACQ_N, STORED_N, SLICES = 128, 64, 96, 6


def _pair(sigma: float, masked: bool, seed: int = 0) -> tuple[sitk.Image, sitk.Image]:
    """HR (1 mm) and an LR acquired at 2 mm (the central 64 x 64 frequencies), of another
    contrast, with complex noise of ``sigma`` per channel, stored zero-filled on a 1.5x finer
    grid (coloured noise: the headers state 1.33 mm)."""
    rng = np.random.default_rng(seed)
    origin = (-64.0, -64.0, 0.0)
    pts = grid_points((HR_N, HR_N, SLICES), (1.0, 1.0, 3.0), origin, np.eye(3).ravel())
    hr = np.stack([phantom(pts[k], seed=seed) for k in range(SLICES)])
    hr = np.maximum(hr, 0.0)
    obj = 120.0 * (hr / 120.0) ** 0.7  # the LR's contrast: monotone, non-linear
    k = np.fft.fft2(obj)
    keep = np.fft.fftfreq(ACQ_N, 1.0 / ACQ_N).round().astype(int)
    acquired = k[:, keep % HR_N][:, :, keep % HR_N] * (ACQ_N**2 / HR_N**2)
    noise = sigma * (rng.standard_normal(acquired.shape) + 1j * rng.standard_normal(acquired.shape))
    idx = keep % STORED_N

    def stored(kspace):  # zero-filled onto the finer grid, values (and noise sigma) kept
        big = np.zeros((SLICES, STORED_N, STORED_N), complex)
        big[:, idx[:, None], idx[None, :]] = kspace
        return np.fft.ifft2(big) * (STORED_N**2 / ACQ_N**2)

    lr = np.abs(stored(acquired + np.fft.fft2(noise))).astype(np.float32)
    if masked:  # the scanner writes zeros outside the head
        lr *= ndimage.binary_dilation(np.abs(stored(acquired)) > 5.0, iterations=2)
    hr_img = sitk.GetImageFromArray(hr.astype(np.float32))
    hr_img.SetSpacing((1.0, 1.0, 3.0))
    hr_img.SetOrigin(origin)
    lr_img = sitk.GetImageFromArray(lr)
    lr_img.SetSpacing((HR_N / STORED_N, HR_N / STORED_N, 3.0))
    lr_img.SetOrigin(origin)
    return hr_img, lr_img


@pytest.mark.parametrize("masked", [False, True])
def test_residual_noise_is_right_where_the_local_estimate_reads_low(masked):
    sigma = 4.0
    hr, lr = _pair(sigma, masked)
    found = residual_noise_sigma(hr, lr, sitk.Euler3DTransform(), 2, 2)
    assert found is not None and abs(found["sigma"] / sigma - 1) < 0.15, found
    assert found["pixels"] >= 1000 and found["model"]
    arr = sitk.GetArrayFromImage(lr)
    local = tissue_sigma(arr, foreground_mask(arr))
    assert local < 0.8 * sigma  # zero-filled noise shares the anatomy's frequencies
    # twice the noise reads twice as much: it measures the noise, not the model's errors
    twice = residual_noise_sigma(*_pair(2 * sigma, masked), sitk.Euler3DTransform(), 2, 2)
    assert 1.7 < twice["sigma"] / found["sigma"] < 2.3


def test_no_shared_tissue_gives_no_estimate():
    hr, lr = _pair(4.0, False)
    far = sitk.Euler3DTransform()
    far.SetTranslation((500.0, 0.0, 0.0))  # the LR's points map outside the HR
    assert residual_noise_sigma(hr, lr, far, 2, 2) is None


def _case(folder, name, noise, pair=True, shares=True):
    props = {
        "case": name,
        "has_hr": pair,
        "has_lr": True,
        "is_pair": pair,
        "lr": {"noise": noise},
    }
    if pair:
        props["pair_check"] = {"shares_structure": shares, "reason": "" if shares else "no"}
    (folder / f"{name}.json").write_text(json.dumps(props))


def test_training_noise_takes_the_lowest_pair_residual_else_the_median(tmp_path):
    bg = {"sigma": 0.02, "rho": None, "method": "background Rayleigh fit"}
    _case(tmp_path, "a", {**bg, "sigma_residual": 0.031})
    _case(tmp_path, "b", {**bg, "sigma_residual": 0.027})
    _case(tmp_path, "c", {**bg, "sigma_residual": 0.001}, shares=False)  # flagged: ignored
    _case(tmp_path, "d", {**bg, "sigma": 0.04}, pair=False)
    ds = PreprocessedDataset(tmp_path)
    level = ds.lr_noise_level(["a", "b", "c", "d"])
    assert level["sigma"] == 0.027 and "lowest of 2 pairs" in level["method"]
    level = ds.lr_noise_level(["c", "d"])  # no usable residual: the scans' estimates
    assert level["sigma"] == pytest.approx(0.03) and level["method"].startswith("median of 2")


def test_dsgan_fakes_and_training_lr_carry_the_same_noise(tmp_path):
    """The DSGAN's generated crops get the noise the SR training adds (the pair's
    residual where it has one), not the background's, which a g-factor map makes quieter."""
    from mrisr.degradation.dsgan.model import _measured_noise

    bg = {"sigma": 0.02, "rho": None, "method": "background Rayleigh fit"}
    _case(tmp_path, "a", {**bg, "sigma_residual": 0.031})
    _case(tmp_path, "d", {**bg, "sigma": 0.04}, pair=False)
    ds = PreprocessedDataset(tmp_path)
    assert _measured_noise(ds, ["a"]) == (pytest.approx(0.031), None)
    assert _measured_noise(ds, ["d"]) == (pytest.approx(0.04), None)  # no pair: background
    _case(tmp_path, "e", {}, pair=False)
    assert _measured_noise(PreprocessedDataset(tmp_path), ["e"]) == (0.0, None)
