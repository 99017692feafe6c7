"""The real LR's Rician noise on the DSGAN's generated crops ("fake_noise": "measured")."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from mrisr.degradation.dsgan.fake_noise import FakeNoise
from mrisr.degradation.dsgan.unit_batches import train_dsgan
from mrisr.degradation.dsgan.units import DSGANUnit
from mrisr.degradation.kernels import degrade_with_kernel, gaussian_kernel


def test_noise_level_colour_and_rician_magnitude() -> None:
    rho = np.zeros((5, 5))
    rho[2, 2], rho[2, 1], rho[2, 3] = 1.0, 0.5, 0.5  # correlated along x only
    fn = FakeNoise([0.05, 0.2], [None, rho.tolist()], 32, torch.device("cpu"))
    rngs = [np.random.default_rng(1), np.random.default_rng(2)]
    n = fn.block(200, rngs)
    assert n.shape == (200, 2, 4, 32, 32)
    assert float(n[:, 0].std()) == pytest.approx(0.05, rel=0.02)
    assert float(n[:, 1].std()) == pytest.approx(0.2, rel=0.02)

    def lag(a: torch.Tensor, dim: int) -> float:
        b = torch.roll(a, 1, dims=dim)
        return float((a * b).mean() / (a * a).mean())

    assert abs(lag(n[:, 0], -1)) < 0.02  # white
    assert lag(n[:, 1], -1) == pytest.approx(0.5, abs=0.05)  # the measured colour
    assert abs(lag(n[:, 1], -2)) < 0.05
    # same streams, same noise: deterministic per seed
    again = fn.block(200, [np.random.default_rng(1), np.random.default_rng(2)])
    assert torch.equal(n, again)
    # magnitude of zero signal: Rayleigh, mean sigma sqrt(pi / 2); of strong signal: ~x
    zero = FakeNoise.rician(torch.zeros(200, 1, 32, 32), n[:, 0, :2])
    assert float(zero.mean()) == pytest.approx(0.05 * np.sqrt(np.pi / 2), rel=0.02)
    strong = FakeNoise.rician(torch.full((200, 1, 32, 32), 1.0), n[:, 0, :2])
    assert float(strong.mean()) == pytest.approx(1.0, abs=0.005)


def _noisy_unit(seed: int, sigma: float) -> DSGANUnit:
    rng = np.random.default_rng(seed)
    a = ndimage.gaussian_filter(rng.standard_normal((96, 96)), 3)
    hr = ((a - a.min()) / (a.max() - a.min())).astype(np.float32)
    lr = degrade_with_kernel(hr, gaussian_kernel((1.2, 1.2), 2, size=13), 2)
    lr = np.hypot(lr + sigma * rng.standard_normal(lr.shape), sigma * rng.standard_normal(lr.shape))
    return DSGANUnit(f"u{seed}", hr, lr.astype(np.float32), seed=seed, noise_sigma=sigma)


def test_training_with_noisy_fakes_is_deterministic_and_differs() -> None:
    units = [_noisy_unit(1, 0.05), _noisy_unit(2, 0.02)]
    p = {"iterations": 20, "precision": "fp32", "fake_noise": "measured"}
    a = train_dsgan(units, 2, p, progress=False)
    b = train_dsgan(units, 2, p, progress=False)
    plain = train_dsgan(units, 2, {**p, "fake_noise": "none"}, progress=False)
    for ra, rb, rp in zip(a, b, plain):
        assert ra.status == "ok" and np.isfinite(ra.kernel_raw).all()
        assert np.array_equal(ra.kernel_raw, rb.kernel_raw)
        assert not np.array_equal(ra.kernel_raw, rp.kernel_raw)
    with pytest.raises(ValueError, match="fake_noise must be none or measured"):
        train_dsgan(units, 2, {"fake_noise": "yes"}, progress=False)
