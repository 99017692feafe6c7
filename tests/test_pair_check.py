"""Pairs whose LR and HR share no structure are flagged by preprocessing, named in
mrisr_plan_and_preprocess's output and left out of validation and fidelity; the comparison
says when its cases cannot rank two configurations."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from synthetic import write_dataset

from mrisr.cli.plan_and_preprocess import main as plan_main
from mrisr.degradation.stage import fidelity_to_real_lr
from mrisr.evaluation.comparison import comparison_table, table_markdown
from mrisr.plans import Plans
from mrisr.preprocessing import storage
from mrisr.preprocessing.dataset import PreprocessedDataset
from mrisr.preprocessing.pair_check import check_pair
from mrisr.training.train_api import _fold_split


def _phantom(rng: np.random.Generator, shape=(4, 64, 64)) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    hr = ndimage.gaussian_filter(rng.random(shape), (0, 3, 3)) * 100
    mask = np.zeros(shape, bool)
    mask[:, 8:56, 8:56] = True
    hr[~mask] = 0
    return hr.astype(np.float32), mask


def test_shared_structure_survives_another_contrast_and_noise() -> None:
    rng = np.random.default_rng(0)
    hr, mask = _phantom(rng)
    lr = hr.reshape(4, 32, 2, 32, 2).mean(axis=(2, 4))
    lr_mask = mask[:, ::2, ::2]
    other_contrast = np.sqrt(lr) * 7 + rng.normal(0, 0.3, lr.shape)  # monotonic, noisy
    ok = check_pair(other_contrast, lr_mask, hr, mask, 2)
    assert ok["shares_structure"] and ok["rank_correlation"] > 0.8 and ok["reason"] == ""


def test_unrelated_or_empty_lr_is_flagged() -> None:
    rng = np.random.default_rng(1)
    hr, mask = _phantom(rng)
    other, _ = _phantom(np.random.default_rng(99))
    lr_other = other.reshape(4, 32, 2, 32, 2).mean(axis=(2, 4))
    bad = check_pair(lr_other, mask[:, ::2, ::2], hr, mask, 2)
    assert not bad["shares_structure"] and "share no structure" in bad["reason"]
    empty = check_pair(
        np.zeros((4, 32, 32), np.float32),
        np.zeros((4, 32, 32), bool),
        np.zeros_like(hr),
        np.zeros_like(mask),
        2,
    )
    assert not empty["shares_structure"] and "near-empty" in empty["reason"]


def test_flagged_pair_named_and_left_out_of_validation_and_fidelity(
    mrisr_env, tmp_path, capsys
) -> None:
    ds_dir = write_dataset(
        mrisr_env["mrisr_raw"], n_pairs=5, hr_size=(64, 64, 4), lr_size=(32, 32, 4)
    )
    bad = ds_dir / "imagesLR" / "case_004.nii.gz"
    img = sitk.ReadImage(str(bad))
    noise = np.random.default_rng(3).rayleigh(4.0, sitk.GetArrayFromImage(img).shape)
    out = sitk.GetImageFromArray(noise.astype(np.float32))
    out.CopyInformation(img)
    sitk.WriteImage(out, str(bad))

    assert plan_main(["-d", "1", "-np", "1", "--no-select", "--no-time-estimate"]) == 0
    text = capsys.readouterr().out
    assert "pairs left out" in text and "case_004" in text and "share no structure" in text

    plans = Plans.load(mrisr_env["mrisr_preprocessed"] / "Dataset001_Synth" / "mrisrPlans.json")
    ds = PreprocessedDataset.for_plans(plans)
    assert list(ds.flagged_pairs()) == ["case_004"]
    assert not ds.is_registered_pair("case_004") and ds.is_registered_pair("case_000")
    left_out_seen = False
    for fold in range(5):
        _, train, val, _, left_out = _fold_split("Dataset001_Synth", ds, fold, True)
        assert "case_004" not in val
        left_out_seen |= "case_004" in left_out
        assert "case_004" in train or "case_004" in left_out
    assert left_out_seen

    files = {}
    for c in ds.pairs():
        files[c] = tmp_path / f"{c}{storage.SUFFIX}"
        storage.save_array(files[c], ds.load(c, "lr_raw"))
    fid = fidelity_to_real_lr(ds, files)
    assert "case_004" not in fid["cases"] and fid["num_pairs"] == 4
    assert "case_004" in fid["left_out"]


def test_comparison_says_when_it_cannot_separate_configurations() -> None:
    rng = np.random.default_rng(0)
    cases = [f"c{i}" for i in range(6)]
    base = rng.uniform(20, 24, 6)

    def res(offset, jitter):
        return {
            c: {"psnr": float(b + offset + j), "ssim": 0.7, "brisque": 40.0}
            for c, b, j in zip(cases, base, jitter)
        }

    results = {
        "bicubic": res(0.0, np.zeros(6)),
        "dsgan_edsr": res(1.5, np.array([0.05, -0.05, 0.03, -0.03, 0.0, 0.01])),
        "gaussian_edsr": res(1.45, np.array([0.6, -0.6, 0.5, -0.5, 0.4, -0.4])),  # level
    }
    labels = [("bicubic", "Bicubic"), ("dsgan_edsr", "DSGAN+EDSR"), ("gaussian_edsr", "GB+EDSR")]
    text = table_markdown(comparison_table(results, labels))
    assert "DSGAN+EDSR is best, but these 6 cases cannot separate it from GB+EDSR" in text
    assert "Bicubic" not in text.splitlines()[-1]
    del results["gaussian_edsr"]
    assert "separated from every other column" in table_markdown(comparison_table(results))


def test_summary_describes_whatever_configurations_a_planner_made(mrisr_env) -> None:
    """No configuration name is assumed: plans without dsgan_edsr or gaussian_edsr (a
    planner of one's own) still get their summary."""
    from mrisr.dataset.integrity import verify_dataset
    from mrisr.planning.plan_and_preprocess_api import summary_text

    raw = write_dataset(mrisr_env["mrisr_raw"], n_pairs=2, hr_size=(64, 64, 4), lr_size=(32, 32, 4))
    assert plan_main(["-d", "1", "-np", "1", "--no-select", "--no-time-estimate"]) == 0
    path = mrisr_env["mrisr_preprocessed"] / "Dataset001_Synth" / "mrisrPlans.json"
    plans = Plans.load(path)
    verified = verify_dataset(raw)
    full = summary_text("Dataset001_Synth", verified, plans)
    assert "DSGAN" in full and "Gaussian sigma" in full
    for name in ("dsgan_edsr", "gaussian_edsr", "dsgan_paper_edsr"):
        children = [
            c for c, v in plans.data["configurations"].items() if v.get("inherits_from") == name
        ]
        for c in [name, *children]:
            plans.data["configurations"].pop(c, None)
    text = summary_text("Dataset001_Synth", verified, plans)
    assert "DSGAN " not in text and "Gaussian sigma" not in text
    assert "configurations   " + ", ".join(plans.configuration_names) in text
