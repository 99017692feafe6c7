"""The LR series' intensity relation: recovered by quantile matching, applied to every
synthetic LR only when the series differ in contrast."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from synthetic import write_dataset

from mrisr.cli.plan_and_preprocess import main as plan_main
from mrisr.degradation.intensity_relation import MAX_NONLINEARITY, decide, fit_relation
from mrisr.degradation.stage import ensure_synthetic_lr, model_id, summary_path
from mrisr.plans import Plans
from mrisr.preprocessing import storage
from mrisr.preprocessing.dataset import PreprocessedDataset
from mrisr.utilities.file_io import load_json


def _relation(x: np.ndarray) -> np.ndarray:
    """A monotonic, non-linear contrast (as the demo's protocol family draws)."""
    return 1.5 * x**0.6 / (1.0 + 0.5 * x**0.6)


def test_nonlinear_relation_recovered_from_unpaired_samples() -> None:
    rng = np.random.default_rng(0)
    x = rng.gamma(6.0, 0.1, 200_000).astype(np.float32)  # tissue-like intensities
    y = _relation(rng.permutation(x)) + rng.normal(0, 0.005, x.size)  # same tissue, unpaired
    g = fit_relation([x], [y])
    t = np.quantile(x, np.linspace(0.05, 0.95, 19))
    assert np.max(np.abs(g(t) - _relation(t))) < 0.02
    assert (np.diff(g(np.linspace(0, 3, 301))) >= 0).all()  # monotonic, also extrapolated
    info, apply = decide(g, "test")
    assert apply and info["applied"] and info["deviation"] > MAX_NONLINEARITY


def test_same_contrast_is_left_alone() -> None:
    rng = np.random.default_rng(1)
    x = rng.gamma(6.0, 0.1, 100_000)
    g = fit_relation([x], [x * 1.02 + rng.normal(0, 0.01, x.size)])
    info, apply = decide(g, "test")
    assert not apply and "same contrast" in info["reason"]
    info, apply = decide(fit_relation([x[:10]], [x[:10]]), "test")
    assert not apply and "too few" in info["reason"]


def _quantiles(ds: PreprocessedDataset, files: dict, key: str | None) -> np.ndarray:
    vals = []
    for c, f in files.items():
        a = storage.load_array(f) if key is None else ds.load(c, key)
        vals.append(a[ds.load(c, "lr_mask").astype(bool)])
    return np.quantile(np.concatenate(vals), [0.25, 0.5, 0.75])


@pytest.mark.parametrize("contrast", [False, True])
def test_stage_gives_synthetic_lr_the_real_lr_contrast(mrisr_env, contrast: bool) -> None:
    ds_dir = write_dataset(
        mrisr_env["mrisr_raw"], n_pairs=3, hr_size=(64, 64, 4), lr_size=(32, 32, 4)
    )
    if contrast:
        for f in sorted((ds_dir / "imagesLR").glob("*.nii.gz")):
            img = sitk.ReadImage(str(f))
            a = sitk.GetArrayFromImage(img)
            out = sitk.GetImageFromArray((_relation(a / 100.0) * 100.0).astype(np.float32))
            out.CopyInformation(img)
            sitk.WriteImage(out, str(f))
    assert plan_main(["-d", "1", "-np", "1", "--no-select", "--no-time-estimate"]) == 0
    plans = Plans.load(mrisr_env["mrisr_preprocessed"] / "Dataset001_Synth" / "mrisrPlans.json")
    ds = PreprocessedDataset.for_plans(plans)
    files = ensure_synthetic_lr(plans, "gaussian_edsr", ds.cases, progress=False)
    summary = load_json(
        summary_path(plans, "gaussian_edsr", model_id(plans, "gaussian_edsr", ds.cases))
    )
    rel = summary["intensity_relation"]
    assert "3 registered pairs" in rel["method"]
    if not contrast:  # the fixed Gaussian's blur differs a little from the phantom's
        assert rel["deviation"] < 0.03
    else:  # the synthetic LR now has the real LR's intensity distribution
        assert rel["applied"] and rel["deviation"] > 0.06
        assert np.allclose(_quantiles(ds, files, None), _quantiles(ds, files, "lr_raw"), rtol=0.05)
