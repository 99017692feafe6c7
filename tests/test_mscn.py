"""MSCN statistics: coefficients, diagonal products, histograms, distances, figure."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mrisr.degradation.kernels import gaussian_degrade
from mrisr.metrics.mscn import (
    BRISQUE_SIGMA,
    diagonal_products,
    gaussian_window_1d,
    jensen_shannon,
    mscn,
    mscn_distance,
    mscn_histograms,
    save_mscn_figure,
)


def natural(n: int, size: int = 128, seed: int = 0) -> np.ndarray:
    """1/f ("pink") random images in [0, 1], a stand-in for natural image statistics."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(size)
    amp = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    amp[0, 0] = 1.0
    x = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, size, size))) / amp))
    lo = x.min(axis=(1, 2), keepdims=True)
    hi = x.max(axis=(1, 2), keepdims=True)
    return ((x - lo) / (hi - lo)).astype(np.float32)


def test_mscn_of_a_constant_image_is_zero():
    for value in (0.0, 0.7, 200.0):
        assert np.abs(mscn(np.full((40, 50), value, np.float32))).max() < 1e-6


def test_mscn_coefficients_have_about_unit_variance():
    white = mscn(np.random.default_rng(1).uniform(0, 1, (256, 256)))
    assert 0.6 < white.var() < 1.1 and abs(white.mean()) < 0.02
    pink = mscn(natural(3))
    assert 0.3 < pink.var() < 1.1 and abs(pink.mean()) < 0.02


def test_mscn_matches_the_paper_equations():
    """Eq. 4-6 evaluated literally at one interior pixel, C = 1 on the 8-bit scale."""
    img = natural(1, 32, seed=2)[0].astype(np.float64)
    w = np.outer(gaussian_window_1d(1.0), gaussian_window_1d(1.0))
    m, n = 15, 17
    patch = img[m - 3 : m + 4, n - 3 : n + 4]
    mu = (w * patch).sum()
    sigma = np.sqrt((w * (patch - mu) ** 2).sum())
    expected = (img[m, n] - mu) / (sigma + 1.0 / 255.0)
    assert mscn(img)[m, n] == pytest.approx(expected, rel=1e-4)
    # C follows the intensity scale: the same image on 0..255 gives the same coefficients
    np.testing.assert_allclose(mscn(img * 255, data_range=255), mscn(img), atol=1e-4)
    # BRISQUE's window is available
    assert not np.allclose(mscn(img, sigma=BRISQUE_SIGMA), mscn(img))


def test_mscn_is_vectorised_over_slices():
    imgs = natural(3, 64)
    np.testing.assert_array_equal(mscn(imgs)[1], mscn(imgs[1]))


def test_diagonal_products():
    c = np.arange(12, dtype=np.float32).reshape(3, 4)
    d1, d2 = diagonal_products(c)
    assert d1.shape == d2.shape == (2, 3)
    assert d1[0, 0] == c[0, 0] * c[1, 1] and d2[0, 0] == c[0, 1] * c[1, 0]
    assert d1[1, 2] == c[1, 2] * c[2, 3] and d2[1, 2] == c[1, 3] * c[2, 2]


def test_histograms_are_normalised_and_respect_the_mask():
    imgs = natural(2, 64)
    h = mscn_histograms(imgs, bins=50, range=(-3, 3))
    for key in ("mscn", "products", "d1", "d2"):
        assert len(h[key]) == 50 and sum(h[key]) == pytest.approx(1.0)
    assert h["count"] == imgs.size
    mask = np.zeros(imgs.shape, bool)
    mask[:, 10:30, 10:40] = True
    hm = mscn_histograms(list(imgs), bins=50, range=(-3, 3), mask=list(mask))
    assert hm["count"] == mask.sum()
    # only masked pixels count (MSCN itself is computed on the whole image)
    c = np.clip(mscn(imgs)[mask], -3, 3)
    expected = np.histogram(c, bins=np.linspace(-3, 3, 51))[0] / c.size
    np.testing.assert_allclose(hm["mscn"], expected, atol=1e-12)
    assert not np.allclose(hm["mscn"], h["mscn"])
    with pytest.raises(ValueError, match="mask"):
        mscn_histograms(imgs, mask=[mask[0]])


def test_distance_is_zero_to_itself_and_grows_with_blur_mismatch():
    hr = natural(4, 128, seed=3)
    sets = {s: gaussian_degrade(hr, s, 2) for s in (0.5, 1.4, 1.5)}
    hists = {s: mscn_histograms(v) for s, v in sets.items()}
    same = mscn_distance(sets[1.5], sets[1.5])
    assert same["combined"] == 0 and same["mscn"] == 0 and same["products"] == 0
    near = mscn_distance(hists[1.5], hists[1.4])
    far = mscn_distance(hists[1.5], hists[0.5])
    assert near["combined"] < 0.2 * far["combined"]
    assert near["mscn"] < far["mscn"] and near["products"] < far["products"]
    assert mscn_distance(hists[0.5], hists[1.5])["combined"] == pytest.approx(far["combined"])
    assert 0 < far["combined"] <= 1


def test_jensen_shannon_bounds():
    assert jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)
    assert jensen_shannon([1, 2, 3], [2, 4, 6]) == pytest.approx(0.0)


def test_figure_is_written(tmp_path):
    hr = natural(2, 64, seed=4)
    sets = {
        "real LR": gaussian_degrade(ndimage.shift(hr, (0, 0.3, 0)), 1.5, 2),
        "Gaussian": gaussian_degrade(hr, 1.0, 2),
        "bicubic": hr[:, ::2, ::2],
    }
    path = tmp_path / "figs" / "mscn.png"
    hists = save_mscn_figure(sets, path, title="MSCN", reference="real LR")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(hists) == set(sets)
    assert not list(path.parent.glob(".*tmp*"))
    with pytest.raises(ValueError, match="reference"):
        save_mscn_figure(sets, path, reference="DSGAN")
