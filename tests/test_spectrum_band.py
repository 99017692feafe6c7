"""The acquired resolution read from a scan's own spectrum: zero-filled interpolation and
reduced phase resolution are found, raw-data filters and smooth objects are not mistaken
for them, and the plans follow what was read."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from synthetic import write_dataset

from mrisr.cli.plan_and_preprocess import main as plan_main
from mrisr.imageio.spectrum_band import spectrum_band
from mrisr.plans import Plans
from mrisr.preprocessing.foreground import foreground_mask


def head(n=128, slices=4, seed=0, blur=0.0):
    """A head-like object: an ellipse with blobs of either sign, 100 inside."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    body = (x / (0.4 * n)) ** 2 + (y / (0.34 * n)) ** 2 < 1
    vol = []
    for _ in range(slices):
        v = np.where(body, 100.0, 0.0)
        for _ in range(30):
            c, r = rng.uniform(-0.3 * n, 0.3 * n, 2), rng.uniform(1.5, 6)
            v += (
                rng.uniform(-50, 50)
                * np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2) / (2 * r * r))
                * body
            )
        vol.append(ndimage.gaussian_filter(v, blur) if blur else v)
    return np.stack(vol)


def acquire(obj, band=(1.0, 1.0), window="none", sigma=3.0, seed=1):
    """Magnitude image of ``obj`` with complex noise ``sigma``, its k-space kept up to
    ``band`` (fractions of Nyquist per y, x; zero beyond) under a raw-data filter."""
    rng = np.random.default_rng(seed)
    noisy = obj + sigma * (rng.normal(size=obj.shape) + 1j * rng.normal(size=obj.shape))
    k = np.fft.fft2(noisy)
    u = np.abs(np.fft.fftfreq(obj.shape[-1])) * 2

    def kept(b):
        a = (u < b).astype(float)
        if window == "hamming":
            a *= 0.54 + 0.46 * np.cos(np.pi * np.minimum(u / b, 1))
        return a

    return np.abs(np.fft.ifft2(k * np.outer(kept(band[0]), kept(band[1])))).astype(np.float32)


def read(v, sigma=None):
    return spectrum_band(v, foreground_mask(v), sigma)["band"]


@pytest.mark.parametrize("window", ["none", "hamming"])
def test_a_scan_acquired_on_its_grid_holds_the_whole_band(window):
    assert read(acquire(head(), window=window), 3.0) == [1.0, 1.0]


@pytest.mark.parametrize(
    "band,window", [((0.6, 1.0), "none"), ((0.7, 0.5), "none"), ((0.5, 0.5), "hamming")]
)
def test_an_unacquired_band_is_found_per_axis(band, window):
    got = read(acquire(head(), band, window), 3.0)
    for g, b in zip(got, band):
        if b == 1.0:
            assert g == 1.0
        else:  # within 10 % (a Hamming filter passes 10 % amplitude at 0.91 of its band)
            assert 0.9 * b * (0.91 if window == "hamming" else 1) <= g <= 1.1 * b


def test_a_smooth_object_sinking_into_its_noise_is_no_cut():
    """A blurred, quiet object's spectrum drops onto the noise: without the noise level
    that reads as a cut; with it (the floor is the noise itself) it does not."""
    v = acquire(head(blur=3), sigma=0.1)
    assert max(read(v)) < 0.5  # what the floor check is for
    assert read(v, 0.1) == [1.0, 1.0]


def test_small_scans_are_not_read():
    v = acquire(head(n=40))
    assert spectrum_band(v, foreground_mask(v), 3.0) is None


def zero_fill(path, band):
    """Rewrite a scan as acquired with only ``band`` of its grid's Nyquist (in-plane)."""
    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img).astype(np.float64)
    u = [np.abs(np.fft.fftfreq(n)) * 2 for n in arr.shape[1:]]
    k = np.fft.fft2(arr) * np.outer(u[0] < band, u[1] < band)
    out = sitk.GetImageFromArray(np.abs(np.fft.ifft2(k)).astype(np.float32))
    out.CopyInformation(img)
    sitk.WriteImage(out, str(path))


def plan_half_band_dataset(root: Path, **cases) -> Path:
    """Plan a dataset of 1 mm HR and 1.6 mm LR scans whose LR holds half its band (acquired
    at 3.2 mm, zero-filled to 1.6); ``cases``: write_dataset's n_pairs / hr_only / lr_only.
    Returns the preprocessed dataset folder."""
    ds = write_dataset(
        root,
        hr_size=(96, 96, 4),
        hr_spacing=(1.0, 1.0, 2.0),
        lr_size=(60, 60, 4),
        lr_spacing=(1.6, 1.6, 2.0),
        **cases,
    )
    for f in sorted((ds / "imagesLR").iterdir()):
        zero_fill(f, 0.5)
    assert plan_main(["-d", "1", "-np", "1", "--no-select", "--no-time-estimate"]) == 0
    return Path(os.environ["mrisr_preprocessed"]) / "Dataset001_Synth"


def test_plans_follow_the_acquired_resolution_without_pairs(mrisr_env, capsys):
    """LR scans stored at 1.6 mm but holding half their band (acquired at 3.2 mm): the
    fingerprint reads it, the plans record it with the headers', and the k-space model
    degrades to the acquired band (2 / 3.2 of the x2 grid's), not the headers' (all)."""
    root = plan_half_band_dataset(mrisr_env["mrisr_raw"], n_pairs=0, hr_only=2, lr_only=2)
    out = capsys.readouterr().out
    fp = json.loads((root / "dataset_fingerprint.json").read_text())
    for c in fp["cases"]:
        if c.get("lr"):
            assert c["lr"]["acquired_band"] == pytest.approx([0.5, 0.5], abs=0.06)
            assert c["lr"]["acquired_spacing"] == pytest.approx([3.2, 3.2], rel=0.12)
    plans = Plans.load(root / "mrisrPlans.json")
    assert plans.real_lr_acquired_spacing == pytest.approx([3.2, 3.2], rel=0.12)
    assert (
        "coarser than the headers' 1.6 x 1.6 mm" in plans.data["decisions"]["acquired_resolution"]
    )
    band = plans.data["configurations"]["kspace_edsr"]["degradation"]["band"]
    assert band == pytest.approx([2 / 3.2, 2 / 3.2], rel=0.12)
    assert "LR acquired" in out and "the headers state 1.6 mm" in out


def test_plans_carry_the_spectra_band_to_check_the_pairs_against(mrisr_env):
    """With registered pairs the plans carry the LR spectra's reading on the working grid,
    the band the fit uses (the pairs' its check). The LR is stored at 1.6 mm, finer than the
    x2 working grid's 2 mm: the headers' band is clipped to all of it, while the acquired
    3.2 mm holds 2 / 3.2 of it (half of the stored grid's band is 0.625 of the working
    grid's, not half), as without pairs."""
    root = plan_half_band_dataset(mrisr_env["mrisr_raw"], n_pairs=3)
    plans = Plans.load(root / "mrisrPlans.json")
    section = plans.data["configurations"]["kspace_edsr"]["degradation"]
    assert section["window"]["band"] == "measured"
    assert section["band"] == [1.0, 1.0]
    assert section["band_spectrum"] == pytest.approx([2 / 3.2, 2 / 3.2], rel=0.12)
