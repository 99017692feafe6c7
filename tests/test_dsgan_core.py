"""Batched DSGAN trainer and kernel utilities: behaviour a user would notice."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data

from mrisr.degradation.dsgan.losses import LambdaSchedule, Regularisers
from mrisr.degradation.dsgan.params import resolve_params
from mrisr.degradation.dsgan.trainer import BatchTrainer
from mrisr.degradation.dsgan.unit_batches import train_dsgan
from mrisr.degradation.dsgan.units import DSGANUnit, prepare_unit
from mrisr.degradation.kernel_analysis import (
    kernel_statistics,
    post_process_kernel,
    save_kernel_grid_png,
    zeroize_negligible,
)
from mrisr.degradation.kernels import (
    bicubic_kernel_1d,
    boundary_penalty_mask,
    degrade_with_kernel,
    gaussian_kernel,
    wanted_center,
)

# float32 throughout: after 25 iterations a kernel is still close to its random start, and
# which arithmetic the probe picks ("auto") depends on timings (on an AMD EPYC with
# AVX512-BF16 the two run alike, so the pick flips between runs and so does such a kernel)
SHORT = {"iterations": 25, "precision": "fp32"}


def _texture(seed: int, size: int = 128) -> np.ndarray:
    """Smooth random texture in [0, 1] (sum of blurred noise at two scales)."""
    rng = np.random.default_rng(seed)
    a = ndimage.gaussian_filter(rng.standard_normal((size, size)), 4)
    b = ndimage.gaussian_filter(rng.standard_normal((size, size)), 1.5)
    img = a / a.std() + 0.5 * b / b.std()
    img = (img - img.min()) / (img.max() - img.min())
    return img.astype(np.float32)


def _unit(name: str, seed: int, size: int = 128, scale: int = 2) -> DSGANUnit:
    hr = _texture(seed, size)
    lr = degrade_with_kernel(hr, gaussian_kernel((1.5, 1.0), scale, size=13), scale)
    return DSGANUnit(name, hr, lr, seed=seed)


# --------------------------------------------------------------------------- trainer
def test_units_in_a_batch_are_independent() -> None:
    """No operation mixes units: replacing one unit leaves the others bit-identical."""
    a, b, c, d = _unit("a", 1), _unit("b", 2, size=96), _unit("c", 3), _unit("d", 4)
    r1 = train_dsgan([a, b, c], 2, SHORT, progress=False)
    r2 = train_dsgan([a, d, c], 2, SHORT, progress=False)
    assert np.array_equal(r1[0].kernel_raw, r2[0].kernel_raw)
    assert np.array_equal(r1[2].kernel_raw, r2[2].kernel_raw)
    assert r1[0].losses == r2[0].losses
    assert not np.array_equal(r1[1].kernel_raw, r2[1].kernel_raw)


def test_batched_units_equal_separate_runs() -> None:
    """Units trained together give the kernels they give alone (same seeds).

    Batched and single-unit runs differ only in the float32 summation order inside the
    batched kernels (~1e-7 relative per op). Adam's first step moves every weight by
    about +-lr = 2e-4 according to the *sign* of its gradient, so a gradient entry whose
    terms cancel to rounding level can flip sign: a few weights (|w| ~ 3e-3) change by
    ~10%, i.e. the kernel by ~1e-5..1e-4 relative after one iteration (measured: at most
    4e-5). GAN training then amplifies this chaotically (measured ~1e-2 after two
    iterations, O(1) after ten), so the comparison is made after one iteration with a
    1e-3 bound; exact independence at any length is tested above.
    """
    units = [_unit("a", 1), _unit("b", 2, size=96), _unit("c", 3)]
    one = {"iterations": 1, "precision": "fp32"}  # the probe could choose per batch size
    together = train_dsgan(units, 2, one, units_per_batch=3, progress=False)
    alone = [train_dsgan([u], 2, one, units_per_batch=1, progress=False)[0] for u in units]
    for t, a in zip(together, alone):
        assert t.kernel_raw is not None and a.kernel_raw is not None
        scale = np.abs(a.kernel_raw).max()
        assert np.abs(t.kernel_raw - a.kernel_raw).max() < 1e-3 * scale
        for key in ("g_adv", "d", "bicubic", "sum2one"):
            assert t.losses[key] == pytest.approx(a.losses[key], rel=1e-5, abs=1e-7)
    # ... while different units really are different trainings
    assert np.abs(together[0].kernel_raw - together[2].kernel_raw).max() > 0.1 * scale


def test_skipped_units_are_reported_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    good = _unit("good", 5)
    small = DSGANUnit("small", _texture(1, 48), _texture(2, 64)[::2, ::2], seed=1)
    blank = DSGANUnit("blank", good.hr, np.zeros((64, 64), np.float32), seed=2)
    with caplog.at_level(logging.WARNING):
        res = train_dsgan([small, good, blank], 2, SHORT, progress=False)
    assert [r.name for r in res] == ["small", "good", "blank"]
    assert [r.status for r in res] == ["skipped", "ok", "skipped"]
    assert "64x64" in res[0].message and "HR" in res[0].message
    assert "LR" in res[2].message
    assert res[0].kernel is None and res[1].kernel is not None
    assert "small" in caplog.text and "blank" in caplog.text
    alone = train_dsgan([good], 2, SHORT, progress=False)[0]
    np.testing.assert_allclose(res[1].kernel_raw, alone.kernel_raw, rtol=0, atol=1e-6)


def test_diverging_unit_is_stopped_and_others_unaffected() -> None:
    good, other = _unit("good", 7), _unit("other", 9)
    # Intensities of 1e30 overflow D's normalisation statistics: the loss becomes NaN.
    bad = DSGANUnit("bad", good.hr, good.lr * np.float32(1e30), seed=8)
    with np.errstate(all="ignore"):
        res = train_dsgan([bad, good], 2, SHORT, units_per_batch=2, progress=False)
    assert res[0].status == "nan" and res[0].kernel is None
    assert "diverged at iteration 0" in res[0].message
    assert res[1].status in ("ok", "failed") and np.isfinite(res[1].kernel_raw).all()
    ref = train_dsgan([other, good], 2, SHORT, units_per_batch=2, progress=False)[1]
    assert np.array_equal(res[1].kernel_raw, ref.kernel_raw)


def test_multi_slice_unit_and_result_contents() -> None:
    hr = np.stack([_texture(s) for s in range(3)])
    lr = degrade_with_kernel(hr, gaussian_kernel(1.2, 2, size=13), 2)
    res = train_dsgan([DSGANUnit("vol", hr, lr, seed=0)], 2, SHORT, progress=False)[0]
    assert res.status == "ok" and res.kernel_raw.shape == (13, 13)
    assert res.kernel.shape == (17, 17)
    assert abs(res.kernel.sum() - 1) < 1e-5 and res.kernel.min() >= 0
    for key in ("g_adv", "d", "bicubic", "sum2one", "lambda_bicubic", "similar_to_bicubic_at"):
        assert key in res.losses


def test_paired_slice_locations() -> None:
    hr = np.stack([_texture(s) for s in range(3)])
    lr = degrade_with_kernel(hr, gaussian_kernel(1.2, 2, size=13), 2)
    p = resolve_params(None, 2)
    auto = prepare_unit(0, DSGANUnit("v", hr, lr, seed=0), p, 200)
    # same used slices and the same slice index in every iteration
    assert np.array_equal(auto.hr_slices, hr) and np.array_equal(
        auto.hr_pos[:, 0], auto.lr_pos[:, 0]
    )
    free = prepare_unit(0, DSGANUnit("v", hr, lr, seed=0, paired_slices=False), p, 200)
    assert not np.array_equal(free.hr_pos[:, 0], free.lr_pos[:, 0])
    bad = prepare_unit(0, DSGANUnit("v", hr, lr[:2], seed=0, paired_slices=True), p, 200)
    assert isinstance(bad, str) and "paired_slices" in bad


def test_params_validation() -> None:
    assert resolve_params(None, 2)["lr_crop"] == 26
    assert resolve_params({"hr_crop": 40, "lr_crop": 10}, 3)["hr_crop"] == 40
    with pytest.raises(ValueError, match="lr_crop"):
        resolve_params({"lr_crop": 20}, 2)
    with pytest.raises(ValueError, match="unknown"):
        resolve_params({"iteration": 5}, 2)


def test_lambda_schedule_follows_kernelgan() -> None:
    sched = {
        "bicubic_threshold": 0.1,
        "threshold_patience": 2,
        "decay_every": 200,
        "decay_factor": 100.0,
        "bicubic_min": 5e-6,
        "switch_below": 5e-3,
        "center_end": 1.0,
        "sparse_end": 5.0,
    }
    lam = {"bicubic": 5.0, "sum2one": 0.5, "boundaries": 0.5, "center": 0.0, "sparse": 0.0}
    s = LambdaSchedule(2, lam, sched)
    low, high = np.array([0.01, 0.5]), np.array([0.01, 0.5])
    for it in range(1, 4):  # unit 0 under the threshold 3 times in a row -> similar
        s.update(it, low)
    assert s.similar.tolist() == [True, False] and s.similar_at[0] == 3
    for it in range(4, 1001):
        s.update(it, high if it % 2 else low)  # unit 1 never 3 times in a row
    assert not s.similar[1]
    # decays at 200 (5 -> 0.05), 400 (-> 5e-4: centre/sparse switched on), 600 (-> 5e-6)
    assert s.lam[0, 0] == pytest.approx(5e-6) and s.lam[1, 0] == 5.0
    assert s.lam[0, 3:].tolist() == [1.0, 5.0] and s.lam[1, 3:].tolist() == [0.0, 0.0]


def test_bicubic_target_and_generator_grid_are_aligned() -> None:
    """On a ramp, bicubic target and a centred kernel both sample the LR pixel centres."""
    for scale, crop in ((2, 64), (3, 64), (4, 64)):
        regs = Regularisers(scale, 13, crop)
        ramp = torch.arange(crop, dtype=torch.float32).repeat(crop, 1)  # value = column
        target = regs.bicubic_target(ramp[None, None])[0, 0]
        m = torch.arange(regs.n_out, dtype=torch.float32)
        c = wanted_center(13, scale)
        assert torch.allclose(target, (scale * m + c).expand_as(target), atol=1e-4)
        k = torch.from_numpy(gaussian_kernel((1.3, 0.8), scale, size=13)).double()
        k = k / k.sum()
        g = torch.nn.functional.conv2d(ramp[None, None].double(), k[None, None], stride=scale)
        expected = scale * m + float((k.sum(0) * torch.arange(13.0)).sum())
        assert torch.allclose(g[0, 0].float(), expected.expand_as(target), atol=1e-3)


# --------------------------------------------------------------------------- kernels
def test_post_processing_sum_sign_and_centre() -> None:
    rng = np.random.default_rng(0)
    clean = np.roll(gaussian_kernel((1.4, 1.0), 1, size=13), (1, -1), axis=(0, 1))
    noisy = clean + 0.0002 * rng.standard_normal(clean.shape).astype(np.float32)
    for scale in (2, 3):
        k = post_process_kernel(noisy, scale)
        assert k.shape == (17, 17)
        assert k.min() >= 0 and abs(k.sum() - 1) < 1e-5
        com = kernel_statistics(k)["center_of_mass"]
        assert np.allclose(com, wanted_center(17, scale), atol=0.01)
    # KernelGAN's rule: values below 0.75 x the 41st largest are zeroed (the noise floor)
    z = zeroize_negligible(noisy, 41, 0.75)
    assert 41 <= np.count_nonzero(z) < 80 and abs(z.sum() - 1) < 1e-9
    assert np.all(z[clean < 0.3 * np.sort(clean.ravel())[-41]] == 0)
    assert wanted_center(17, 2) == 8.5 and wanted_center(17, 3) == 9.0


def test_kernel_statistics_of_known_gaussian() -> None:
    k = gaussian_kernel((2.1, 1.3), 1, size=21)
    st = kernel_statistics(k)
    assert st["sum"] == pytest.approx(1.0, abs=1e-6)
    assert st["center_of_mass"] == pytest.approx([10.0, 10.0], abs=1e-6)
    assert st["sigma"] == pytest.approx([2.1, 1.3], rel=0.01)
    assert st["fwhm"] == pytest.approx([2.3548 * 2.1, 2.3548 * 1.3], rel=0.03)


def test_degrade_with_kernel_phase_and_shape() -> None:
    hr = np.random.default_rng(1).random((3, 41, 40)).astype(np.float32)
    delta = np.zeros((13, 13), np.float32)
    delta[6, 6] = 1.0
    assert np.array_equal(degrade_with_kernel(hr, delta, 2), hr[:, :40:2, :40:2])
    # A kernel centred for scale 2 puts LR pixel i at HR position 2i + 0.5.
    ramp = np.tile(np.arange(40, dtype=np.float32), (40, 1))
    lr = degrade_with_kernel(ramp, gaussian_kernel(1.5, 2, size=13), 2)
    assert lr.shape == (20, 20)
    assert np.allclose(lr[5:-5, 5:-5], 2 * np.arange(20)[5:-5] + 0.5, atol=0.02)
    # One kernel per slice == each slice with its own kernel
    ks = np.stack([gaussian_kernel(s, 2, size=13) for s in (0.8, 1.5, 2.5)])
    per = degrade_with_kernel(hr, ks, 2)
    for i in range(3):
        assert np.allclose(per[i], degrade_with_kernel(hr[i], ks[i], 2), atol=1e-6)
    with pytest.raises(ValueError):
        degrade_with_kernel(hr, np.ones((4, 4)), 2)


def test_reference_constants() -> None:
    kernelgan_bicubic_x2 = [-0.0117188, -0.0351563, 0.1132813, 0.4335938]
    assert np.allclose(bicubic_kernel_1d(2)[:4], kernelgan_bicubic_x2, atol=1e-6)
    assert bicubic_kernel_1d(3).sum() == pytest.approx(1.0)
    m = boundary_penalty_mask(13)
    assert np.all(m[2:-2, 2:-2] == 0) and m[0, 0] == pytest.approx(30 * (1 - np.exp(-72 / 338)))


def test_kernel_grid_png(tmp_path) -> None:
    path = tmp_path / "kernels" / "grid.png"
    ks = [gaussian_kernel(s, 2, size=13) for s in (0.8, 1.2, 1.6)]
    save_kernel_grid_png(ks, ["a", "b", "c"], path, title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]


# --------------------------------------------------------------------------- quality
def _normalised(img: np.ndarray) -> np.ndarray:
    img = img.astype(np.float32)
    return (img - img.min()) / (img.max() - img.min())


@pytest.mark.parametrize("update", ["alternating", "simultaneous"])
def test_recovers_anisotropic_gaussian_kernel(update: str) -> None:
    """KernelGAN-style check (DIV2KRK-like): estimate a known anisotropic blur.

    "Real" LR = HR blurred with a Gaussian of sigma 2.0 (rows) x 1.0 (columns) HR pixels,
    decimated by 2, plus noise (sd 0.005). Three slices (skimage's grass, gravel and
    brick textures, 512x512), one DSGAN each with the default 3000 iterations, trained
    as one batch; the per-volume estimate is the element-wise median of the three
    post-processed kernels (a single GAN occasionally fails, as KernelGAN does). It must
    be at least twice as close (L1) to the truth as the paper's isotropic sigma-1.5
    Gaussian, with each effective sigma within 25%.

    Measured here (benchmarks/bench_dsgan.py --quality, 6 triples): single-slice L1
    ratios 0.30-0.55, median-of-3 ratios 0.30-0.39, sigma errors -13..+8%. Both update
    rules (``--quality 12``: median-of-3 ratios 0.28-0.48 alternating, 0.27-0.48
    simultaneous).
    """
    truth = gaussian_kernel((2.0, 1.0), 2, size=13)
    units = []
    for i, img in enumerate((data.grass(), data.gravel(), data.brick())):
        hr = _normalised(img)
        lr = degrade_with_kernel(hr, truth, 2)
        lr += 0.005 * np.random.default_rng(i).standard_normal(lr.shape).astype(np.float32)
        units.append(DSGANUnit(f"texture{i}", hr, lr, seed=i))
    res = train_dsgan(units, 2, {"update": update}, progress=False)
    assert [r.status for r in res] == ["ok"] * 3
    est = np.median(np.stack([r.kernel for r in res]), axis=0)
    est /= est.sum()
    truth17 = np.pad(truth, 2)  # same canvas and centring as the post-processed kernels
    baseline = gaussian_kernel((1.5, 1.5), 2, size=17)
    l1_est = np.abs(est - truth17).sum()
    l1_base = np.abs(baseline - truth17).sum()
    assert l1_est <= 0.5 * l1_base, (l1_est, l1_base)
    sig_est = np.array(kernel_statistics(est)["sigma"])
    sig_true = np.array(kernel_statistics(truth17)["sigma"])
    assert np.all(np.abs(sig_est / sig_true - 1) <= 0.25), (sig_est, sig_true)


def test_discriminator_precision_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    from mrisr.degradation.dsgan import discriminator_precision as precision

    monkeypatch.delenv("mrisr_results", raising=False)  # no machine cache here
    cpu = torch.device("cpu")
    # forced fp32 with one chunk candidate: nothing to time
    assert precision.choose("fp32", 3, 64, 26, cpu) == ("fp32", 3)
    with pytest.raises(ValueError, match="auto, fp32 or bf16"):
        resolve_params({"precision": "fp16"}, 2)
    with pytest.raises(ValueError, match="one of"):
        precision.choose("half", 3, 64, 26, cpu)
    monkeypatch.setattr(precision, "bf16_native", lambda device: False)
    with pytest.raises(ValueError, match="does not compute bf16 natively"):
        precision.choose("bf16", 3, 64, 26, cpu)
    assert precision.choose("auto", 3, 64, 26, cpu) == ("fp32", 3)
    # the probe decides between the candidates by their timings, reduced precision only
    # when it is at least 10% faster
    monkeypatch.setattr(precision, "bf16_native", lambda device: True)
    fake = {("fp32", 30): 1.0, ("fp32", 12): 0.8, ("fp32", 24): 0.9}
    for bf16, expected in ((0.75, ("fp32", 12)), (0.5, ("bf16", 12))):
        precision._CHOSEN.clear()
        t = {**fake, **{("bf16", c): bf16 + 0.1 for (_, c) in fake}}
        t[("bf16", 12)] = bf16  # the fastest bf16 chunk
        monkeypatch.setattr(precision, "pass_seconds", lambda n, ch, lc, d, p, c, _t=t: _t[(p, c)])
        assert precision.choose("auto", 30, 64, 26, cpu) == expected
    precision._CHOSEN.clear()


def test_discriminator_precision_is_cached_per_machine(
    mrisr_env: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second run on the same machine takes the first one's timings from
    ``$mrisr_results/.machine``, not a new probe whose pick could differ."""
    from mrisr.degradation.dsgan import discriminator_precision as precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "bf16_native", lambda device: True)
    probed = []

    def timings(bf16: float):
        def fake(n, ch, lc, d, p, c):
            probed.append((p, c))
            return bf16 if p == "bf16" else 1.0

        return fake

    precision._CHOSEN.clear()
    monkeypatch.setattr(precision, "pass_seconds", timings(0.5))
    assert precision.choose("auto", 30, 64, 26, cpu) == ("bf16", 30)
    assert len(probed) == 6  # two precisions x chunks of 30, 12, 24
    cache = mrisr_env["mrisr_results"] / ".machine" / "dsgan_precision.json"
    assert cache.is_file()
    precision._CHOSEN.clear()  # a new process; this time bf16 would lose
    monkeypatch.setattr(precision, "pass_seconds", timings(2.0))
    assert precision.choose("auto", 30, 64, 26, cpu) == ("bf16", 30)
    assert len(probed) == 6
    precision._CHOSEN.clear()
    assert precision.choose("auto", 20, 64, 26, cpu) == ("fp32", 20)  # another shape: probed
    assert len(probed) == 10
    precision._CHOSEN.clear()


def test_simultaneous_update_gives_each_network_its_own_gradient(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One scoring of (real, G(HR) + noise) serves both networks: G gets the gradient of
    its own loss ``1 - D(fake)`` plus the weighted regularisers, D that of
    ``(1 - D(real) + D(fake)) / 2`` with the fake held fixed, on the same crops."""
    p = resolve_params({**SHORT, "update": "simultaneous"}, 2)
    units = [_unit("a", 0), _unit("b", 1)]
    plans = [prepare_unit(i, u, p, 25) for i, u in enumerate(units)]
    tr = BatchTrainer(plans, ["a", "b"], 2, p, torch.device("cpu"))
    monkeypatch.setattr(tr.opt_g, "step", lambda: None)
    monkeypatch.setattr(tr.opt_d, "step", lambda: None)
    buffers = {k: v.clone() for k, v in tr.disc.named_buffers()}
    lam = tr.lam_t.clone()
    assert tr.step(0)
    g_joint = [w.grad.clone() for w in tr.g_weights]
    params = [q for q in tr.disc.parameters() if q.grad is not None]
    d_joint = [q.grad.clone() for q in params]

    for k, v in tr.disc.named_buffers():  # the same power iteration again
        v.copy_(buffers[k])
    tr.lam_t.copy_(lam)
    x_hr, y_lr = tr.hr_gather(0)[:, None], tr.lr_gather(0)
    dw = tr.disc.normalized_weights(1)
    g_out, _, reg = tr._g_forward(x_hr)
    fake = g_out[:, 0] + tr.noise[0]
    frozen = {k: v.detach() for k, v in dw.items()}
    g_loss = (1.0 - tr.disc(torch.stack([y_lr, fake], 1), frozen)[:, 1]).mean((1, 2)) + reg
    g_ref = torch.autograd.grad(g_loss.sum(), tr.g_weights)
    scores = tr.disc(torch.stack([y_lr, fake.detach()], 1), dw)
    d_loss = 0.5 * ((1.0 - scores[:, 0]).mean((1, 2)) + scores[:, 1].mean((1, 2)))
    d_ref = torch.autograd.grad(d_loss.sum(), params)
    for got, want in zip(g_joint, g_ref):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    for got, want in zip(d_joint, d_ref):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
