"""The realistic degradation: noise estimation, Rician training noise, signed kernels, the
learned k-space window, implausible kernels."""

import logging
import math

import numpy as np
import pytest
from scipy import ndimage

from mrisr.degradation.kernel_analysis import (
    implausible_reason,
    post_process_kernel,
    signed_kernel,
)
from mrisr.degradation.kernels import gaussian_kernel, wanted_center
from mrisr.degradation.kspace_acquisition import KSpaceAcquisition, window_profile
from mrisr.degradation.patch_noise import PatchDegradation
from mrisr.imageio.noise_estimates import background_mask, noise_correlation, rayleigh_sigma


def rician_phantom(sigma, shape=(6, 96, 96), colour=None, seed=0):
    """A bright disc on a zero background, magnitude of signal + complex noise."""
    rng = np.random.default_rng(seed)
    z, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    disc = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (h / 4) ** 2).astype(float)
    noise = rng.standard_normal((2, *shape))
    if colour is not None:
        noise = ndimage.convolve(noise, colour[None, None], mode="wrap")
        noise /= np.sqrt((colour**2).sum())
    signal = np.broadcast_to(disc, shape)
    return np.sqrt((signal + sigma * noise[0]) ** 2 + (sigma * noise[1]) ** 2), signal > 0


@pytest.mark.parametrize("sigma", [0.02, 0.08])
@pytest.mark.parametrize("coloured", [False, True])
def test_background_rayleigh_fit_recovers_the_noise_sigma(sigma, coloured):
    colour = np.array([[0.25, 0.5, 0.25]]) if coloured else None
    vol, fg = rician_phantom(sigma, colour=colour)
    est = rayleigh_sigma(vol, background_mask(vol, fg))
    assert est == pytest.approx(sigma, rel=0.05)


def test_noise_correlation_measures_the_colour():
    taps = np.array([[0.5, 1.0, 0.5]])  # along x: rho(0, 1) = 1 / 1.5, rho(0, 2) = 0.25 / 1.5
    vol, fg = rician_phantom(0.05, shape=(8, 128, 128), colour=taps)
    rho = noise_correlation(vol, background_mask(vol, fg))
    c = rho.shape[0] // 2
    assert rho[c, c] == 1.0
    assert rho[c, c + 1] == pytest.approx(1 / 1.5, abs=0.06)
    assert rho[c, c + 2] == pytest.approx(0.25 / 1.5, abs=0.06)
    assert rho[c + 1, c] < 0.1  # no correlation along y


def test_no_background_no_estimate():
    vol = np.ones((2, 40, 40))
    assert rayleigh_sigma(vol, background_mask(vol, vol > 0)) is None


def test_training_noise_is_rician_seeded_and_coloured():
    deg = PatchDegradation(sigma=0.05, rho=None, sigma_jitter=0.0)
    lr = np.zeros((8, 1, 48, 48), np.float32)
    hr = np.zeros((8, 1, 96, 96), np.float32)
    a, hr_a = deg.apply(lr, hr, np.random.default_rng([1, 2]))
    b, _ = deg.apply(lr, hr, np.random.default_rng([1, 2]))
    c, _ = deg.apply(lr, hr, np.random.default_rng([1, 3]))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(hr_a, hr)  # no bias: HR untouched
    # zero signal: Rayleigh, median sqrt(2 ln 2) sigma
    assert np.median(a) == pytest.approx(math.sqrt(2 * math.log(2)) * 0.05, rel=0.03)
    # a bright signal: mean ~ signal, sd ~ sigma
    bright, _ = deg.apply(lr + 1.0, hr, np.random.default_rng(0))
    assert bright.mean() == pytest.approx(1.0, abs=0.005)
    assert bright.std() == pytest.approx(0.05, rel=0.05)
    # coloured noise: neighbours correlate as measured
    rho = np.zeros((7, 7))
    rho[3, 3], rho[3, 2], rho[3, 4] = 1.0, 0.4, 0.4
    col = PatchDegradation(sigma=0.05, rho=rho.tolist(), sigma_jitter=0.0)
    x, _ = col.apply(lr + 1.0, hr, np.random.default_rng(0))
    d = x[:, 0] - 1.0
    r = np.corrcoef(d[..., :-1].ravel(), d[..., 1:].ravel())[0, 1]
    assert r == pytest.approx(0.4, abs=0.05)
    assert d.std() == pytest.approx(0.05, rel=0.05)


def test_bias_jitter_is_shared_by_lr_and_hr():
    deg = PatchDegradation(sigma=0.0, bias=0.2)
    lr = np.ones((4, 1, 16, 16), np.float32)
    hr = np.ones((4, 1, 32, 32), np.float32)
    a, b = deg.apply(lr, hr, np.random.default_rng(5))
    assert not np.allclose(a, 1.0)
    # the same smooth field, sampled on both grids: the LR equals the HR's 2x2 means
    assert np.allclose(a, b.reshape(4, 1, 16, 2, 16, 2).mean(axis=(3, 5)), atol=2e-3)


def test_signed_kernel_keeps_the_negative_lobes():
    g = gaussian_kernel(1.2, 1, size=13).astype(np.float64)
    raw = g - 0.5 * gaussian_kernel(2.5, 1, size=13)  # a PSF with negative side lobes
    k = signed_kernel(raw, 2)
    assert k.min() < -1e-3
    assert k.sum() == pytest.approx(1.0, abs=1e-5)
    rows = np.arange(k.shape[0])
    assert (k.sum(1) * rows).sum() == pytest.approx(wanted_center(k.shape[0], 2), abs=0.01)
    assert post_process_kernel(raw, 2).min() >= 0  # clipping stays for display / statistics


def _textures(n=6, size=64, seed=0):
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.random((n, size, size)), (0, 0.7, 0.7))
    return (x - x.min()) / (x.max() - x.min())


def test_kspace_window_is_recovered_from_pairs():
    """Hamming-windowed LR at band 0.9 with complex noise: the fit finds the window."""
    truth = KSpaceAcquisition({"band": [0.9, 0.9], "window": {"type": "hamming"}}, 2)
    assert not truth.learned
    rng = np.random.default_rng(1)
    pairs = []
    for seed in range(3):
        hr = _textures(seed=seed) + 1.0
        lr = truth.degrade(hr)
        n = rng.standard_normal((2, *lr.shape)) * 0.02
        pairs.append((hr, 0.7 * np.sqrt((lr + n[0]) ** 2 + n[1] ** 2)))  # other scale
    model = KSpaceAcquisition({"band": [0.9, 0.9], "window": {"type": "learned"}}, 2)
    assert model.learned
    model.fit(pairs)
    u = np.linspace(0, 0.95, 20)
    for axis in (0, 1):
        got = window_profile(model.params["window"], u, axis)
        assert np.max(np.abs(got - (0.54 + 0.46 * np.cos(np.pi * u)))) < 0.05
    assert model.psf_fwhm_hr() == pytest.approx(truth.psf_fwhm_hr(), rel=0.05)
    # the window is zero beyond the band edge, and a flat image keeps its intensity
    assert window_profile(model.params["window"], np.array([1.0, 1.2]), 0).tolist() == [0, 0]
    flat = model.degrade(np.full((1, 32, 32), 0.5, np.float32))
    assert np.allclose(flat, 0.5, atol=1e-4)


def _smooth_heads(n=4, size=96, seed=0):
    """Smooth blobs on a disc: power falling steeply with frequency, as an MR image's."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - size / 2
    disc = (yy**2 + xx**2 < (0.4 * size) ** 2).astype(float)
    blobs = ndimage.gaussian_filter(rng.random((n, size, size)), (0, 3, 3))
    return ndimage.gaussian_filter(disc * (0.5 + 4 * blobs), (0, 1, 1)).astype(np.float32)


def test_kspace_window_follows_a_partial_fourier_step():
    """Partial Fourier in y (a half-weighted response past the short side's edge) times
    Hamming, on images whose power falls steeply: the learned window follows the step and
    the taper out to the band edge (a low-order series fitted by that power rose again
    towards the edge: a PSF too narrow), and the PSF matches the truth's."""
    u = np.linspace(0, 1, 65)
    hamming = 0.54 + 0.46 * np.cos(np.pi * u)
    step = hamming * np.where(u < 0.2, 1.0, 0.5)
    profile = {"type": "learned", "profile": [step.tolist(), hamming.tolist()]}
    truth = KSpaceAcquisition({"band": [0.8, 0.8], "window": profile}, 2)
    rng = np.random.default_rng(2)
    pairs = []
    for seed in range(3):
        hr = _smooth_heads(seed=seed)
        lr = truth.degrade(hr)
        n = rng.standard_normal((2, *lr.shape)) * 0.01 * lr.max()
        pairs.append((hr, 1.3 * np.sqrt((lr + n[0]) ** 2 + n[1] ** 2)))
    model = KSpaceAcquisition({"band": [0.8, 0.8], "window": {"type": "learned"}}, 2)
    model.fit(pairs)
    outer = np.linspace(0.4, 0.95, 12)
    for axis, want in ((0, step), (1, hamming)):
        got = window_profile(model.params["window"], outer, axis)
        assert np.max(np.abs(got - np.interp(outer, u, want))) < 0.1  # a 3-term series: 0.35
    assert model.psf_fwhm_hr() == pytest.approx(truth.psf_fwhm_hr(), rel=0.08)  # it: -28 %


def test_kspace_weights_saved_as_a_cosine_series_still_load(tmp_path):
    import torch

    old = {"coefficients": torch.tensor([[0.54, 0.46], [0.6, 0.4]], dtype=torch.float64)}
    old["band"] = torch.tensor([0.8, 0.9], dtype=torch.float64)
    torch.save(old, tmp_path / "old.pt")
    model = KSpaceAcquisition({"band": [0.8, 0.9], "window": {"type": "learned"}}, 2)
    model.load(tmp_path / "old.pt")
    a = np.array([0.0, 0.5, 0.9])
    assert window_profile(model.params["window"], a, 0) == pytest.approx(
        0.54 + 0.46 * np.cos(np.pi * a)
    )
    assert model.band == (0.8, 0.9)


def test_learned_kspace_model_round_trips(tmp_path):
    model = KSpaceAcquisition({"band": [0.8, 0.9], "window": {"type": "learned"}}, 2)
    hr = _textures(n=2) + 1
    model.fit([(hr, KSpaceAcquisition({"band": [0.8, 0.9]}, 2).degrade(hr))])
    model.save(tmp_path / "k.pt")
    again = KSpaceAcquisition({"band": [0.8, 0.9], "window": {"type": "learned"}}, 2)
    again.load(tmp_path / "k.pt")
    assert np.array_equal(again.degrade(hr), model.degrade(hr))


def test_implausible_kernels_are_caught():
    good = post_process_kernel(gaussian_kernel(1.5, 2, size=13), 2)
    assert implausible_reason(good, 2, 1.5) is None
    two = np.zeros((17, 17))
    two[5:8, 3:6] = 1.0
    two[9:12, 11:14] = 1.0
    assert "multi-modal" in implausible_reason(two / two.sum(), 2, None)
    wide = post_process_kernel(gaussian_kernel(3.0, 2, size=13), 2)
    assert "width outlier" in implausible_reason(wide, 2, 1.0)
    narrow = post_process_kernel(gaussian_kernel(0.4, 2, size=13), 2)
    assert "width outlier" in implausible_reason(narrow, 2, 1.5)


def test_kspace_band_is_measured_where_the_lr_holds_less_than_its_grid():
    """An LR acquired at half the grid's band in y and 0.7 in x (stored finer than
    acquired, zero-filled), with noise, in another intensity scale: the measured band finds
    both edges where the headers say 1, and its synthetic LR matches the real one better;
    an LR that fills its grid keeps the headers' band."""
    rng = np.random.default_rng(3)

    def pairs_of(truth):
        out = []
        for seed in range(3):
            hr = _textures(seed=seed) + 1.0
            lr = truth.degrade(hr)
            n = rng.standard_normal((2, *lr.shape)) * 0.01
            out.append((hr, 0.7 * np.sqrt((lr + n[0]) ** 2 + n[1] ** 2)))
        return out

    truth = KSpaceAcquisition({"band": [0.5, 0.7], "window": {"type": "tukey", "alpha": 0.3}}, 2)
    pairs = pairs_of(truth)
    window = {"type": "learned", "band": "measured"}
    measured = KSpaceAcquisition({"band": [1.0, 1.0], "window": dict(window)}, 2)
    fit = measured.fit(pairs)
    assert measured.band == pytest.approx((0.5, 0.7), abs=0.05)
    assert fit["band_headers"] == [1.0, 1.0] and fit["band"] == list(measured.band)
    headers = KSpaceAcquisition({"band": [1.0, 1.0], "window": {"type": "learned"}}, 2)
    headers.fit(pairs)
    assert headers.band == (1.0, 1.0)
    # the window learned over the headers' whole band falls to zero past the acquired one
    # by itself; inside the measured band, the synthetic LR matches an unseen real LR
    beyond = np.linspace(0.55, 0.95, 9)
    assert np.max(np.abs(window_profile(headers.params["window"], beyond, 0))) < 0.05
    hr = _textures(seed=9) + 1.0
    real = truth.degrade(hr)
    assert np.abs(measured.degrade(hr) - real).mean() < 1e-3 * real.mean()

    full = KSpaceAcquisition({"band": [0.9, 0.9], "window": {"type": "none"}}, 2)
    keeps = KSpaceAcquisition({"band": [0.9, 0.9], "window": dict(window)}, 2)
    keeps.fit(pairs_of(full))
    assert keeps.band == (0.9, 0.9)


def test_the_lr_spectra_band_is_used_and_checked_on_the_pairs(caplog):
    """Where the plans carry the LR spectra's band, the model degrades with it and records
    the band measured on the pairs beside it: close where they agree, and a warning naming
    both where they do not."""
    truth = KSpaceAcquisition({"band": [0.5, 0.7], "window": {"type": "none"}}, 2)
    hrs = [_textures(seed=s) + 1.0 for s in range(2)]
    pairs = [(hr, truth.degrade(hr)) for hr in hrs]
    window = {"type": "learned", "band": "measured"}
    params = {"band": [1.0, 1.0], "window": dict(window), "band_spectrum": [0.52, 0.68]}
    model = KSpaceAcquisition(params, 2)
    with caplog.at_level(logging.WARNING, logger="mrisr.degradation.kspace_acquisition"):
        fit = model.fit(pairs)
    assert model.band == (0.52, 0.68) and fit["band"] == [0.52, 0.68]
    assert fit["band_pairs"] == pytest.approx([0.5, 0.7], abs=0.05)
    assert max(abs(r) for r in fit["band_spectrum_agreement"]) < 0.1
    assert "differ" not in caplog.text
    params = {"band": [1.0, 1.0], "window": dict(window), "band_spectrum": [1.0, 0.7]}
    with caplog.at_level(logging.WARNING, logger="mrisr.degradation.kspace_acquisition"):
        fit = KSpaceAcquisition(params, 2).fit(pairs)
    assert fit["band"] == [1.0, 0.7]
    assert fit["band_spectrum_agreement"][0] == pytest.approx(-0.5, abs=0.06)
    assert "differ by more than 20 %" in caplog.text and "1.000 x 0.700" in caplog.text


def test_measured_kspace_band_round_trips(tmp_path):
    window = {"type": "learned", "band": "measured"}
    hr = _textures(n=2) + 1
    lr = KSpaceAcquisition({"band": [0.5, 0.9], "window": {"type": "none"}}, 2).degrade(hr)
    model = KSpaceAcquisition({"band": [1.0, 1.0], "window": dict(window)}, 2)
    model.fit([(hr, lr)])
    assert model.band[0] < 0.6
    model.save(tmp_path / "k.pt")
    again = KSpaceAcquisition({"band": [1.0, 1.0], "window": dict(window)}, 2)
    again.load(tmp_path / "k.pt")
    assert again.band == model.band
    assert np.array_equal(again.degrade(hr), model.degrade(hr))
