"""The degradation stage: per-fold synthetic training LR, kernels on disk, resumability."""

import json

import numpy as np
import pytest
from synthetic import write_dataset

from mrisr.cli.plan_and_preprocess import main as plan_main
from mrisr.degradation.dsgan.model import load_unit_summaries
from mrisr.degradation.stage import degradation_dir, ensure_synthetic_lr
from mrisr.plans import Plans
from mrisr.preprocessing import storage
from mrisr.preprocessing.dataset import PreprocessedDataset


@pytest.fixture
def plans(mrisr_env):
    write_dataset(
        mrisr_env["mrisr_raw"],
        n_pairs=3,
        hr_only=1,
        lr_only=1,
        hr_size=(80, 80, 3),
        lr_size=(40, 40, 3),
    )
    assert plan_main(["-d", "1", "-np", "1", "--no-select"]) == 0
    p = Plans.load(mrisr_env["mrisr_preprocessed"] / "Dataset001_Synth" / "mrisrPlans.json")
    deg = p.data["configurations"]["dsgan_edsr"]["degradation"]
    deg["iterations"] = 12
    deg["lr_decay_iterations"] = [3, 6, 9]
    return p


def test_dsgan_per_slice_for_one_fold(plans):
    files = ensure_synthetic_lr(plans, "dsgan_edsr", ["case_000", "case_003"], progress=False)
    out = degradation_dir(plans, "dsgan_edsr")
    summaries = {s["unit"]: s for s in load_unit_summaries(plans, "dsgan_edsr")}
    # only the units of the requested pair were trained: one per slice
    assert sorted(summaries) == ["case_000__z000", "case_000__z001", "case_000__z002"]
    for s in summaries.values():
        assert s["status"] == "ok"
        assert s["kernel"]["sum"] == pytest.approx(1.0, abs=1e-4)
        assert len(s["kernel"]["sigma"]) == 2 and "losses" in s
    k = np.load(out / "units" / "case_000__z001_kernel.npy")
    assert k.ndim == 2 and k.min() >= 0
    assert np.load(out / "units" / "case_000__z001_kernel_raw.npy").shape == (13, 13)
    assert (out / "case_000_kernels.png").is_file()
    # synthetic LR for the pair and for the HR-only case (mean kernel), on the LR grid
    ds = PreprocessedDataset.for_plans(plans)
    assert set(files) == {"case_000", "case_003"}
    for c, f in files.items():
        lr = storage.load_array(f)
        hr = ds.load(c, "hr")
        assert lr.shape == (hr.shape[0], hr.shape[1] // 2, hr.shape[2] // 2)
        assert abs(lr.mean() - hr.mean()) < 0.05 * hr.mean()


def test_dsgan_is_resumable(plans):
    ensure_synthetic_lr(plans, "dsgan_edsr", ["case_000"], progress=False)
    units = degradation_dir(plans, "dsgan_edsr") / "units"
    m = {f.name: f.stat().st_mtime_ns for f in units.iterdir()}
    # a second fold that shares case_000 trains only case_001's units
    ensure_synthetic_lr(plans, "dsgan_edsr", ["case_000", "case_001"], progress=False)
    after = {f.name: f.stat().st_mtime_ns for f in units.iterdir()}
    assert all(after[n] == t for n, t in m.items())
    assert sum(n.startswith("case_001__") and n.endswith(".json") for n in after) == 3


def test_empty_slice_is_skipped_not_fatal(plans):
    ds = PreprocessedDataset.for_plans(plans)
    hr = ds.load("case_001", "hr")
    hr[1] = 0.0
    storage.save_array(ds.path("case_001", "hr"), hr)
    w = ds.load("case_001", "hr_weight")
    w[1] = 0
    storage.save_array(ds.path("case_001", "hr_weight"), w)
    files = ensure_synthetic_lr(plans, "dsgan_edsr", ["case_001"], progress=False)
    s = {x["unit"]: x for x in load_unit_summaries(plans, "dsgan_edsr")}
    assert s["case_001__z001"]["status"] == "skipped" and s["case_001__z001"]["message"]
    assert s["case_001__z000"]["status"] == "ok"
    assert storage.load_array(files["case_001"]).shape[0] == 3  # the slice still gets LR


@pytest.mark.parametrize("config", ["gaussian_edsr", "zerofill_edsr"])
def test_fixed_baselines(plans, config):
    files = ensure_synthetic_lr(plans, config, ["case_000", "case_001", "case_004"], progress=False)
    assert set(files) == {"case_000", "case_001"}  # case_004 is LR-only: no HR to degrade
    lr = storage.load_array(files["case_000"])
    assert lr.shape == (3, 40, 40)


def test_dsn_per_fold(plans):
    plans.data["configurations"]["dsn_edsr"]["degradation"]["iterations"] = 5
    files = ensure_synthetic_lr(plans, "dsn_edsr", ["case_000", "case_001"], progress=False)
    d = degradation_dir(plans, "dsn_edsr")
    meta = [json.loads(f.read_text()) for f in d.glob("dsn_*.json")]
    assert len(meta) == 1 and meta[0]["cases"] == ["case_000", "case_001"]
    assert storage.load_array(files["case_001"]).shape == (3, 40, 40)


def test_every_degradation_is_checked_against_the_real_lr(plans):
    """The summary holds each pair's match to its real LR; a DSGAN that matches worse than
    the fitted Gaussian (a 12-iteration GAN here) is replaced by it, and says so."""
    from mrisr.degradation.base import build_degradation
    from mrisr.degradation.stage import model_id, summary_path

    cases = ["case_000", "case_001", "case_003"]
    files = ensure_synthetic_lr(plans, "dsgan_edsr", cases, progress=False)
    s = json.loads(
        summary_path(plans, "dsgan_edsr", model_id(plans, "dsgan_edsr", cases)).read_text()
    )
    assert s["fidelity"]["num_pairs"] == 2
    assert set(s["fidelity"]["cases"]) == {"case_000", "case_001"}
    # the learned kernels' widths were calibrated on the two training pairs
    cal = s["width_calibration"]
    assert cal["pairs"] == 2 and cal["ssim_after"] >= cal["ssim_before"]
    assert all(0.69 < f < 1.44 for f in cal["factors_yx"])
    ref = s["fitted_gaussian_fidelity"]["mean"]["ssim"]
    assert s["fidelity"]["mean"]["ssim"] >= ref - 0.002
    if "fallback" in s:
        ds = PreprocessedDataset.for_plans(plans)
        gauss = build_degradation(s["fallback"]["used"], plans.scale)
        expect = _as_stored(gauss.degrade(ds.load("case_000", "hr")), s)
        assert np.allclose(storage.load_array(files["case_000"]), expect, atol=1e-6)
        assert "fitted Gaussian" in s["fallback"]["reason"]
    # the fixed baselines are checked too
    ensure_synthetic_lr(plans, "zerofill_edsr", cases, progress=False)
    z = json.loads(summary_path(plans, "zerofill_edsr", "cases").read_text())
    assert 0 < z["fidelity"]["mean"]["ssim"] <= 1 and "fallback" not in z


def test_dsgan_units_are_retrained_when_their_settings_change(plans):
    """A unit trained with other GAN parameters is not reused; the paper's configuration
    trains its own units (noise-free fakes on the denoised LR)."""
    lr_file = ensure_synthetic_lr(plans, "dsgan_edsr", ["case_000"], progress=False)["case_000"]
    made = lr_file.stat().st_mtime_ns
    units = degradation_dir(plans, "dsgan_edsr") / "units"
    first = json.loads((units / "case_000__z001.json").read_text())
    # the fakes carry the noise measured on the case's real LR: the level the SR training
    # adds (test_pair_noise: the pair's residual where there is one)
    ds = PreprocessedDataset.for_plans(plans)
    measured = ds.lr_noise_level(ds.with_lr())
    assert first["fake_noise_sigma"] == pytest.approx(measured["sigma"])
    assert first["fake_noise_sigma"] > 0
    kernel = np.load(units / "case_000__z001_kernel_raw.npy")
    plans.data["configurations"]["dsgan_edsr"]["degradation"]["iterations"] = 13
    ensure_synthetic_lr(plans, "dsgan_edsr", ["case_000"], progress=False)
    again = json.loads((units / "case_000__z001.json").read_text())
    assert again["settings"] != first["settings"]
    assert not np.array_equal(np.load(units / "case_000__z001_kernel_raw.npy"), kernel)
    # and the synthetic LR of the old section is made again, not reused
    assert lr_file.stat().st_mtime_ns != made
    # a dataset preprocessed again that reads another noise level trains its units again
    for case in ds.with_lr():
        f = ds.folder / f"{case}.json"
        props = json.loads(f.read_text())
        noise = props["lr"]["noise"]
        for k in ("sigma", "sigma_residual"):
            if noise.get(k):
                noise[k] *= 2
        f.write_text(json.dumps(props))
    lr_file.unlink()  # the synthetic LR of the old preprocessing is gone with it
    ensure_synthetic_lr(plans, "dsgan_edsr", ["case_000"], progress=False)
    louder = json.loads((units / "case_000__z001.json").read_text())
    assert louder["fake_noise_sigma"] == pytest.approx(2 * first["fake_noise_sigma"])
    paper = plans.data["configurations"]["dsgan_paper_edsr"]["degradation"]
    paper.update(iterations=12, lr_decay_iterations=[3, 6, 9])
    ensure_synthetic_lr(plans, "dsgan_paper_edsr", ["case_000"], progress=False)
    own = json.loads(
        (degradation_dir(plans, "dsgan_paper_edsr") / "units" / "case_000__z001.json").read_text()
    )
    assert own["fake_noise_sigma"] == 0.0 and own["settings"] != first["settings"]


def test_per_volume_kernel_is_the_median_of_its_seeds(plans):
    """With few units the planner asks for several GANs per unit; the unit's kernel is
    their element-wise median (per-slice plans keep one GAN per unit)."""
    from mrisr.degradation.kernels import degrade_with_kernel
    from mrisr.degradation.stage import model_id, summary_path

    assert plans.data["configurations"]["dsgan_edsr"]["degradation"]["seeds_per_unit"] == 1
    deg = plans.data["configurations"]["dsgan_edsr"]["degradation"]
    deg.update(kernel_mode="per_volume", seeds_per_unit=3, synthesis_kernel="post")
    deg.update(width_calibration="none", kernel_pooling="units")
    deg["fallback"] = None
    files = ensure_synthetic_lr(plans, "dsgan_edsr", ["case_000"], progress=False)
    units = degradation_dir(plans, "dsgan_edsr") / "units"
    names = ["case_000", "case_000__seed1", "case_000__seed2"]
    assert sorted(s["unit"] for s in load_unit_summaries(plans, "dsgan_edsr")) == names
    ks = [np.load(units / f"{n}_kernel.npy") for n in names]
    assert not np.allclose(ks[0], ks[1])  # other seeds, other estimates
    med = np.median(np.stack(ks), axis=0)
    expected = degrade_with_kernel(
        PreprocessedDataset.for_plans(plans).load("case_000", "hr"), med / med.sum(), 2
    )
    s = json.loads(
        summary_path(plans, "dsgan_edsr", model_id(plans, "dsgan_edsr", ["case_000"])).read_text()
    )
    expected = _as_stored(expected, s)
    np.testing.assert_allclose(storage.load_array(files["case_000"]), expected, atol=1e-5)
    # calibrating the widths on the registered pair reuses the GANs and stretches their
    # median kernel by the factors it reports
    from mrisr.degradation.width_calibration import stretch_kernel

    trained = (units / "case_000.json").stat().st_mtime_ns
    deg["width_calibration"] = "registered_pairs"
    files = ensure_synthetic_lr(plans, "dsgan_edsr", ["case_000"], progress=False)
    assert (units / "case_000.json").stat().st_mtime_ns == trained
    s = json.loads(
        summary_path(plans, "dsgan_edsr", model_id(plans, "dsgan_edsr", ["case_000"])).read_text()
    )
    f = s["width_calibration"]["factors_yx"]
    assert f != [1.0, 1.0]  # a 12-iteration GAN is far from the real width
    expected = degrade_with_kernel(
        PreprocessedDataset.for_plans(plans).load("case_000", "hr"),
        stretch_kernel(med / med.sum(), tuple(f)),
        2,
    )
    expected = _as_stored(expected, s)
    np.testing.assert_allclose(storage.load_array(files["case_000"]), expected, atol=1e-5)
    assert "kernel_pooling" not in s
    # with two pairs, the pooled kernel is chosen or not by the match to the real LR, and
    # the synthetic LR is made with what was chosen
    deg["kernel_pooling"] = "fidelity"
    cases = ["case_000", "case_001"]
    files = ensure_synthetic_lr(plans, "dsgan_edsr", cases, progress=False)
    summary = summary_path(plans, "dsgan_edsr", model_id(plans, "dsgan_edsr", cases))
    s = json.loads(summary.read_text())
    choice = s["kernel_pooling"]
    assert choice["pairs"] == 2 and choice["pooled"] == (
        choice["ssim_pooled"] > choice["ssim_units"]
    )
    ds = PreprocessedDataset.for_plans(plans)
    f = tuple(s["width_calibration"]["factors_yx"])
    for c in cases:
        if choice["pooled"]:
            k = np.load(summary.parent / "kernel_pooled.npy")
        else:
            ms = [np.load(units / f"{c}{x}_kernel.npy") for x in ("", "__seed1", "__seed2")]
            med = np.median(np.stack(ms), axis=0)
            k = stretch_kernel(med / med.sum(), f)
        expected = _as_stored(degrade_with_kernel(ds.load(c, "hr"), k, 2), s)
        np.testing.assert_allclose(storage.load_array(files[c]), expected, atol=1e-5)


def _as_stored(expected: np.ndarray, summary: dict) -> np.ndarray:
    """A model's output as the stage stores it: with the intensity relation it applied."""
    from mrisr.degradation.intensity_relation import IntensityRelation

    relation = IntensityRelation.applied_in(summary)
    return relation(expected) if relation is not None else expected
