"""Per-axis width calibration of learned kernels on registered pairs."""

import numpy as np
import pytest
from scipy import ndimage

from mrisr.degradation.kernel_analysis import center_of_mass, kernel_statistics
from mrisr.degradation.kernels import degrade_with_kernel, gaussian_kernel
from mrisr.degradation.width_calibration import calibrate_widths, stretch_kernel


def test_stretch_scales_each_axis_and_keeps_sum_centre_and_lobes():
    k = gaussian_kernel((1.0, 1.5), 2, size=17)
    out = stretch_kernel(k, (1.3, 0.8))
    sy, sx = kernel_statistics(out)["sigma"]
    assert sy == pytest.approx(1.3, rel=0.05) and sx == pytest.approx(1.2, rel=0.05)
    assert out.sum() == pytest.approx(1.0, abs=1e-5)
    assert out.shape[0] % 2 == 1 and out.shape[0] > k.shape[0]  # grown for the wider support
    grow = (out.shape[0] - k.shape[0]) // 2
    np.testing.assert_allclose(center_of_mass(out) - grow, center_of_mass(k), atol=0.05)
    # a signed kernel keeps its negative lobes; identity factors change nothing
    signed = k - 0.3 * gaussian_kernel((2.5, 2.5), 2, size=17)
    signed /= signed.sum()
    assert stretch_kernel(signed, (1.1, 1.1)).min() < 0
    np.testing.assert_allclose(stretch_kernel(signed, (1.0, 1.0)), signed, atol=1e-6)
    # per-slice stacks keep their length
    assert stretch_kernel(np.stack([k, k, k]), (1.2, 1.0)).shape[0] == 3
    with pytest.raises(ValueError, match="positive"):
        stretch_kernel(k, (0.0, 1.0))


def _pairs(truth, n=3, seed=0):
    rng = np.random.default_rng(seed)
    hr, real = {}, {}
    for i in range(n):
        vol = ndimage.gaussian_filter(rng.standard_normal((4, 96, 96)), (0, 1.2, 1.2))
        vol = (vol - vol.min()) / (vol.max() - vol.min())
        lr = degrade_with_kernel(vol, gaussian_kernel(truth, 2, size=17), 2)
        lr += 0.01 * rng.standard_normal(lr.shape)
        hr[f"c{i}"], real[f"c{i}"] = vol, (lr, np.ones(lr.shape, bool))
    return hr, real


def test_calibration_recovers_the_real_lr_widths_per_axis():
    hr, real = _pairs((1.5, 0.9))
    guess = {c: gaussian_kernel((1.1, 1.1), 2, size=17) for c in hr}
    out = calibrate_widths(hr, guess, real, 2)
    fy, fx = out["factors_yx"]
    assert fy * 1.1 == pytest.approx(1.5, rel=0.08)
    assert fx * 1.1 == pytest.approx(0.9, rel=0.08)
    assert out["ssim_after"] > out["ssim_before"] + 0.01
    assert out["pairs"] == 3
    # kernels already of the right width are left (almost) as they are
    right = {c: gaussian_kernel((1.5, 0.9), 2, size=17) for c in hr}
    again = calibrate_widths(hr, right, real, 2)
    np.testing.assert_allclose(again["factors_yx"], [1.0, 1.0], atol=0.05)
    with pytest.raises(ValueError, match="registered pair"):
        calibrate_widths(hr, guess, {}, 2)


def test_pooling_is_chosen_where_the_cases_share_an_acquisition():
    from mrisr.degradation.width_calibration import choose_pooling

    # one acquisition, noisy per-case estimates: their mean matches every case better
    hr, real = _pairs((1.4, 1.0))
    noisy = {
        c: gaussian_kernel(s, 2, size=17)
        for c, s in zip(sorted(hr), [(1.0, 1.3), (1.8, 0.7), (1.4, 1.1)])
    }
    pooled = np.mean(list(noisy.values()), axis=0)
    out = choose_pooling(hr, noisy, pooled, real, 2)
    assert out["pooled"] and out["ssim_pooled"] > out["ssim_units"] and out["pairs"] == 3
    # two acquisitions, exact per-case kernels: the cases keep their own
    sharp, real_sharp = _pairs((0.8, 0.8), n=2, seed=1)
    wide, real_wide = _pairs((2.2, 2.2), n=2, seed=2)
    hr2 = {"a0": sharp["c0"], "a1": sharp["c1"], "b0": wide["c0"], "b1": wide["c1"]}
    real2 = {
        "a0": real_sharp["c0"],
        "a1": real_sharp["c1"],
        "b0": real_wide["c0"],
        "b1": real_wide["c1"],
    }
    own = {c: gaussian_kernel((0.8, 0.8) if c[0] == "a" else (2.2, 2.2), 2, size=17) for c in hr2}
    out = choose_pooling(hr2, own, np.mean(list(own.values()), axis=0), real2, 2)
    assert not out["pooled"] and out["ssim_units"] > out["ssim_pooled"]
