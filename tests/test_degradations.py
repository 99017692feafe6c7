"""Degradation models: shapes, grid convention, intensities, registry, DSN fit and I/O."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from mrisr.degradation.base import (
    DEGRADATIONS,
    available_degradations,
    build_degradation,
    load_degradation,
)
from mrisr.degradation.kernels import bicubic_kernel_1d, bicubic_taps, gaussian_degrade
from mrisr.utilities.errors import MrisrError

SMALL_DSN = {
    "name": "dsn",
    "channels": 16,
    "num_layers": 3,
    "iterations": 300,
    "learning_rate": 1e-3,
    "batch_size": 8,
    "hr_crop": 32,
    "loss": "l1",
}
MODELS = {
    "gaussian": {"name": "gaussian", "sigma": 1.5, "fitted": True},
    "zerofill": {
        "name": "zerofill",
        "keep_fraction": None,
        "fermi_radius": 0.9,
        "fermi_width": 0.05,
    },
    "bicubic": {"name": "bicubic"},
    "dsn": SMALL_DSN,
}


def params_for(name: str, scale: int) -> dict:
    p = dict(MODELS[name])
    if name == "zerofill":
        p["keep_fraction"] = [1 / scale, 1 / scale]
    return p


@pytest.fixture
def one_thread():
    """Tiny CNN steps are dominated by thread synchronisation on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def texture(n: int, size: int, seed: int, smooth: float = 2.0) -> np.ndarray:
    """Smooth random texture in [0.1, 0.9] (z, size, size)."""
    x = np.random.default_rng(seed).standard_normal((n, size, size))
    x = ndimage.gaussian_filter(x, (0, smooth, smooth), mode="wrap")
    x = (x - x.min()) / (x.max() - x.min())
    return (0.1 + 0.8 * x).astype(np.float32)


def blob(shape: tuple[int, int], centre: tuple[float, float], sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    return np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma**2)).astype(
        np.float32
    )


def centroid(img: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    return np.array([(img * yy).sum(), (img * xx).sum()]) / img.sum()


# --------------------------------------------------------------------------- all models
def test_registry_has_the_builtin_models():
    assert {"gaussian", "zerofill", "bicubic", "dsn"} <= set(available_degradations())


@pytest.mark.parametrize("scale", [2, 3])
@pytest.mark.parametrize("name", ["gaussian", "zerofill", "bicubic", "dsn"])
def test_output_shapes(name, scale):
    model = build_degradation(params_for(name, scale), scale)
    hr = texture(3, 12 * scale, seed=1)
    lr = model.degrade(hr)
    assert lr.shape == (3, 12, 12) and lr.dtype == np.float32
    assert model.degrade(hr[0]).shape == (12, 12)
    np.testing.assert_allclose(model.degrade(hr[1]), lr[1], atol=1e-5)  # slices independent
    # sizes that are not multiples of the scale: trailing HR rows/columns are ignored
    assert model.degrade(hr[:, : 12 * scale - 1, :]).shape == (3, 11, 12)


@pytest.mark.parametrize("scale", [2, 3])
@pytest.mark.parametrize("name", ["gaussian", "zerofill", "bicubic", "dsn"])
def test_mean_intensity_is_preserved(name, scale):
    model = build_degradation(params_for(name, scale), scale)
    hr = texture(2, 30 * scale, seed=2, smooth=6.0)
    lr = model.degrade(hr)
    assert abs(lr.mean() / hr.mean() - 1) < 0.01


@pytest.mark.parametrize("scale", [2, 3])
@pytest.mark.parametrize("name", ["gaussian", "zerofill", "bicubic", "dsn"])
def test_grid_follows_the_pixel_shuffle_convention(name, scale):
    """A blob centred at HR position c lands at LR position (c - (s-1)/2) / s."""
    model = build_degradation(params_for(name, scale), scale)
    c = (31.3, 40.7)
    hr = blob((32 * scale, 32 * scale), (c[0] * scale / 2, c[1] * scale / 2), sigma=1.5 * scale)
    c_hr = np.array([c[0] * scale / 2, c[1] * scale / 2])
    got = centroid(model.degrade(hr))
    np.testing.assert_allclose(got, (c_hr - (scale - 1) / 2) / scale, atol=0.1)


def test_zerofill_and_gaussian_line_up():
    hr = blob((64, 64), (30.2, 33.9), 2.0)
    zf = build_degradation(params_for("zerofill", 2), 2).degrade(hr)
    gb = build_degradation(params_for("gaussian", 2), 2).degrade(hr)
    assert np.abs(centroid(zf) - centroid(gb)).max() < 0.02


# --------------------------------------------------------------------------- gaussian
def test_gaussian_model_equals_the_gaussian_function():
    hr = texture(2, 48, seed=3)
    for s in (2, 3):
        out = build_degradation({"name": "gaussian", "sigma": 1.3}, s).degrade(hr)
        np.testing.assert_array_equal(out, gaussian_degrade(hr, 1.3, s))


def test_gaussian_rejects_bad_sigma():
    with pytest.raises(ValueError, match="sigma"):
        build_degradation({"name": "gaussian", "sigma": -1}, 2)
    with pytest.raises(ValueError, match="sigma"):
        build_degradation({"name": "gaussian"}, 2)


# --------------------------------------------------------------------------- zero-fill
@pytest.mark.parametrize("scale", [2, 3])
def test_zerofill_of_a_band_limited_image_is_near_exact(scale):
    """Frequencies well below the LR Nyquist survive untouched, sampled at s*i + (s-1)/2."""
    H = W = 32 * scale  # LR 32 x 32, Nyquist 16 cycles per field of view
    rng = np.random.default_rng(4)
    comps = [
        (int(rng.integers(0, 7)), int(rng.integers(-7, 8)), rng.uniform(0, 2 * np.pi))
        for _ in range(6)
    ]

    def image(y, x):
        v = np.full(np.broadcast(y, x).shape, 0.6)
        for ky, kx, ph in comps:
            v += 0.05 * np.cos(2 * np.pi * (ky * y / H + kx * x / W) + ph)
        return v

    yy, xx = np.mgrid[:H, :W].astype(np.float64)
    hr = image(yy, xx).astype(np.float32)
    lr = build_degradation(params_for("zerofill", scale), scale).degrade(hr)
    ly, lx = np.mgrid[:32, :32].astype(np.float64)
    expected = image(scale * ly + (scale - 1) / 2, scale * lx + (scale - 1) / 2)
    np.testing.assert_allclose(lr, expected, atol=3e-4)


def test_zerofill_has_no_energy_beyond_the_kept_band():
    hr = 5.0 + 0.5 * np.random.default_rng(5).standard_normal((2, 64, 64)).astype(np.float32)
    model = build_degradation(
        {"name": "zerofill", "keep_fraction": [0.25, 0.375], "fermi_radius": None}, 2
    )
    lr = model.degrade(hr)
    spec = np.abs(np.fft.fft2(lr)) ** 2
    ky = np.abs(np.fft.fftfreq(32, 1 / 32))[:, None]
    kx = np.abs(np.fft.fftfreq(32, 1 / 32))[None, :]
    outside = (ky > 0.25 * 64 / 2) | (kx > 0.375 * 64 / 2)
    inside_ac = spec[:, ~outside].sum() - spec[:, 0, 0].sum()
    assert spec[:, outside].sum() < 1e-6 * inside_ac
    # with the default Fermi window the LR band edge is attenuated, the centre is not
    fermi = build_degradation(params_for("zerofill", 2), 2).degrade(hr)
    spec_f = np.abs(np.fft.fft2(fermi)) ** 2
    box = build_degradation({**params_for("zerofill", 2), "fermi_radius": None}, 2).degrade(hr)
    spec_b = np.abs(np.fft.fft2(box)) ** 2
    edge = (ky >= 15) | (kx >= 15)
    assert spec_f[:, edge].sum() < 0.3 * spec_b[:, edge].sum()
    centre = (ky <= 4) & (kx <= 4)
    np.testing.assert_allclose(spec_f[:, centre], spec_b[:, centre], rtol=1e-3)


def test_zerofill_is_a_magnitude_image():
    hr = np.zeros((64, 64), np.float32)
    hr[20:44, 20:44] = 1.0  # sharp edges ring below zero after truncation
    mag = build_degradation({"name": "zerofill", "fermi_radius": None}, 2).degrade(hr)
    real = build_degradation(
        {"name": "zerofill", "fermi_radius": None, "output": "real"}, 2
    ).degrade(hr)
    assert real.min() < -0.01 and mag.min() >= 0
    np.testing.assert_allclose(mag, np.abs(real), atol=1e-5)


def test_zerofill_rejects_more_kspace_than_the_lr_grid_holds():
    with pytest.raises(ValueError, match="1/scale"):
        build_degradation({"name": "zerofill", "keep_fraction": [0.6, 0.5]}, 2)


# --------------------------------------------------------------------------- bicubic
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_of_a_constant_is_the_constant(scale):
    lr = build_degradation({"name": "bicubic"}, scale).degrade(
        np.full((2, 8 * scale, 8 * scale), 0.37, np.float32)
    )
    np.testing.assert_allclose(lr, 0.37, rtol=1e-5)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_taps_are_matlab_imresize_weights(scale):
    """Same weights as KernelGAN's fixed bicubic kernel, on the decimation grid."""
    a, b = bicubic_taps(scale), bicubic_kernel_1d(scale)
    offsets = np.arange(len(b)) - (len(b) - 1) / 2 + (scale - 1) / 2 + len(a) // 2
    idx = offsets.astype(int)
    np.testing.assert_allclose(a[idx], b, atol=1e-12)
    assert np.abs(np.delete(a, idx)).max() == 0


# --------------------------------------------------------------------------- registry
def test_unknown_degradation_lists_the_valid_names():
    with pytest.raises(MrisrError) as e:
        build_degradation({"name": "lanczos"}, 2)
    msg = str(e.value)
    assert "lanczos" in msg and "\n" not in msg
    for name in ("bicubic", "dsn", "gaussian", "zerofill"):
        assert name in msg
    with pytest.raises(MrisrError, match="name"):
        build_degradation({"sigma": 1.5}, 2)


def test_models_describe_themselves():
    model = build_degradation(MODELS["gaussian"], 2)
    assert DEGRADATIONS.get("gaussian") is type(model)
    assert model.describe() == {**MODELS["gaussian"], "scale": 2}
    assert not model.learned and build_degradation(SMALL_DSN, 2).learned


def test_bad_scale_and_input_are_reported():
    with pytest.raises(ValueError, match="scale"):
        build_degradation({"name": "bicubic"}, 1.5)
    model = build_degradation({"name": "bicubic"}, 2)
    with pytest.raises(ValueError, match="shape"):
        model.degrade(np.zeros((2, 2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        model.degrade(np.full((8, 8), np.nan, np.float32))


# --------------------------------------------------------------------------- DSN
def test_untrained_dsn_is_the_bicubic_degradation():
    hr = texture(2, 40, seed=6)
    dsn = build_degradation(SMALL_DSN, 2).degrade(hr)
    bic = build_degradation({"name": "bicubic"}, 2).degrade(hr)
    np.testing.assert_allclose(dsn, bic, atol=1e-5)


def make_pairs(seed: int, n: int = 6, size: int = 64, shift: float = 0.3):
    """HR textures and their 'real' LR: Gaussian sigma 1.5 after a sub-pixel misregistration."""
    hr = texture(n, size, seed=seed)
    moved = ndimage.shift(hr, (0, shift, -shift), order=3, mode="reflect")
    return hr, gaussian_degrade(moved, 1.5, 2)


def test_dsn_fit_learns_the_degradation_and_round_trips(tmp_path, one_thread):
    hr, lr = make_pairs(seed=7)
    model = build_degradation(SMALL_DSN, 2)
    l1_init = np.abs(model.degrade(hr) - lr).mean()
    history = model.fit([(hr[:3], lr[:3]), (hr[3:], lr[3:])], seed=0, progress=False)
    assert history["iterations"] == SMALL_DSN["iterations"] and len(history["loss_curve"]) > 10
    # judged on held-out slices
    hr_t, lr_t = make_pairs(seed=8, n=3)
    l1_fit = np.abs(model.degrade(hr_t) - lr_t).mean()
    # the right blur without the misregistration
    l1_true_kernel = np.abs(gaussian_degrade(hr_t, 1.5, 2) - lr_t).mean()
    assert l1_fit < 0.25 * l1_init
    assert l1_fit < 1.2 * l1_true_kernel
    assert l1_fit < 0.01 * lr_t.mean()

    meta_path = model.save(tmp_path / "dsn.pt")
    meta = json.loads(meta_path.read_text())
    assert meta["name"] == "dsn" and meta["scale"] == 2 and meta["params"]["channels"] == 16
    assert meta["fit"]["iterations"] == SMALL_DSN["iterations"]
    fresh = build_degradation(SMALL_DSN, 2)
    for loaded in (load_degradation(tmp_path / "dsn.pt"), fresh.load(tmp_path / "dsn.pt")):
        np.testing.assert_array_equal(loaded.degrade(hr_t), model.degrade(hr_t))
        assert loaded.fit_history["final_loss"] == history["final_loss"]
    assert fresh.load(tmp_path / "dsn.pt") is fresh  # in place
    with pytest.raises(MrisrError, match="does not fit"):
        build_degradation({**SMALL_DSN, "channels": 8}, 2).load(tmp_path / "dsn.pt")
    with pytest.raises(MrisrError, match="not 'dsn' of scale 3"):
        build_degradation(SMALL_DSN, 3).load(tmp_path / "dsn.pt")
    # a caller may replace the JSON with its own notes: weights still load in place
    meta_path.write_text(json.dumps({"cases": ["a"]}))
    other = build_degradation(SMALL_DSN, 2).load(tmp_path / "dsn.pt")
    np.testing.assert_array_equal(other.degrade(hr_t), model.degrade(hr_t))
    with pytest.raises(MrisrError, match="does not describe"):
        load_degradation(tmp_path / "dsn.pt")


def test_dsn_fit_with_masks_and_bad_pairs(one_thread):
    hr, lr = make_pairs(seed=9, n=2, size=48)
    mask = np.zeros(lr.shape, bool)
    mask[:, 8:16, 8:16] = True
    model = build_degradation(SMALL_DSN, 2)
    model.fit([(hr, lr)], masks=[mask], iterations=5, progress=False)
    with pytest.raises(ValueError, match="does not match"):
        model.fit([(hr, lr[:, :-1])], iterations=1, progress=False)
    with pytest.raises(ValueError, match="hr_crop"):
        build_degradation({**SMALL_DSN, "hr_crop": 3}, 2)
