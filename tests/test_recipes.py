"""The three recipes of documentation/architecture.md, run as written there: a new
degradation model, a new trainer variant and a new metric each plug in by registration
alone (here registered from the test, and removed again, instead of a file in the
package)."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from synthetic import make_scan, write_dataset

from mrisr.cli.evaluate import main as evaluate_main
from mrisr.cli.plan_and_preprocess import main as plan_main
from mrisr.degradation.base import DEGRADATIONS, KernelDegradation, build_degradation
from mrisr.degradation.intensity_relation import IntensityRelation
from mrisr.degradation.stage import ensure_synthetic_lr, summary_path
from mrisr.evaluation.comparison import comparison_table, table_markdown
from mrisr.metrics.registry import METRICS, Metric
from mrisr.paths import fold_folder, results_folder
from mrisr.plans import Plans
from mrisr.preprocessing import storage
from mrisr.preprocessing.dataset import PreprocessedDataset
from mrisr.training.train_api import run_training
from mrisr.training.trainer import TRAINERS
from mrisr.training.variants import EDSRTrainer_tiny


# ---------------------------------------------------------------- recipe 1: degradation model
class BoxDegradation(KernelDegradation):
    """Mean over a width x width HR window centred on the LR pixel, then decimation."""

    name = "box"

    def __init__(self, params: dict, scale: int):
        super().__init__(params, scale)
        w = int(self.params.get("width", scale))
        k = np.zeros((2 * w + 1, 2 * w + 1), np.float32)  # odd, centred on HR pixel s*i
        k[w : w + w, w : w + w] = 1.0 / (w * w)
        self.kernel = k


# ---------------------------------------------------------------- recipe 2: trainer variant
class EDSRTrainer_recipe(EDSRTrainer_tiny):
    """Six iterations (the test-suite's tiny network)."""

    iterations = 6


# ---------------------------------------------------------------- recipe 3: metric
def mae(reference, prediction, mask) -> float:
    """Mean absolute error over mask (normalised intensities)."""
    return float(np.abs(reference[mask].astype(np.float64) - prediction[mask]).mean())


MAE = Metric(
    name="mae",
    label="MAE",
    higher_is_better=False,
    width=7,
    fmt=".4f",
    mean_fmt="{:.4f}+-{:.4f}",
    table_fmt="{:.4f} ± {:.4f}",
    reference=True,
    compute=mae,
    order=3,
)


@pytest.fixture
def registered(monkeypatch):
    """The three example components registered for one test (the registries are restored)."""
    monkeypatch.setitem(DEGRADATIONS._items, "box", BoxDegradation)
    monkeypatch.setitem(TRAINERS._items, "EDSRTrainer_recipe", EDSRTrainer_recipe)
    monkeypatch.setitem(METRICS._items, "mae", MAE)


def test_a_new_degradation_model_and_trainer_variant_plug_in(mrisr_env, registered):
    write_dataset(mrisr_env["mrisr_raw"], n_pairs=3, hr_size=(80, 80, 3), lr_size=(40, 40, 3))
    assert plan_main(["-d", "1", "-np", "1", "--no-select"]) == 0
    plans_file = mrisr_env["mrisr_preprocessed"] / "Dataset001_Synth" / "mrisrPlans.json"
    plans = Plans.load(plans_file)
    # the planner method's output: one configuration using the new model
    plans.data["configurations"]["box_edsr"] = {
        "inherits_from": "dsgan_paper_edsr",
        "degradation": {"name": "box", "width": plans.scale},
    }
    plans.save(plans_file)
    plans = Plans.load(plans_file)
    assert isinstance(build_degradation({"name": "box"}, plans.scale), BoxDegradation)

    cases = ["case_000", "case_001"]
    files = ensure_synthetic_lr(plans, "box_edsr", cases, progress=False)
    ds = PreprocessedDataset.for_plans(plans)
    s = plans.scale
    relation = IntensityRelation.applied_in(
        json.loads(summary_path(plans, "box_edsr", "cases").read_text())
    )
    for c in cases:
        hr = ds.load(c, "hr")
        lr = storage.load_array(files[c])
        assert lr.shape == (hr.shape[0], hr.shape[1] // s, hr.shape[2] // s)
        # LR pixel i is the mean of HR pixels s*i .. s*i+s-1 (away from the borders)
        want = hr[:, : lr.shape[1] * s, : lr.shape[2] * s]
        want = want.reshape(hr.shape[0], lr.shape[1], s, lr.shape[2], s).mean(axis=(2, 4))
        want = relation(want) if relation is not None else want  # the stage's contrast fit
        np.testing.assert_allclose(lr[:, 2:-2, 2:-2], want[:, 2:-2, 2:-2], atol=1e-5)
    summary = json.loads(summary_path(plans, "box_edsr", "cases").read_text())
    assert summary["model"]["name"] == "box"

    # the trainer variant trains the new configuration through the public API
    run_training(0, "1", "box_edsr", "EDSRTrainer_recipe", progress=False)
    fold = fold_folder(
        results_folder("Dataset001_Synth", "EDSRTrainer_recipe", "mrisrPlans", "box_edsr"), 0
    )
    state = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    assert state["iteration"] == 6 and state["trainer"] == "EDSRTrainer_recipe"
    assert state["network_class"] == "EDSR" and state["network_args"]["scale"] == s
    assert (fold / "validation" / "summary.json").is_file()


def test_a_new_metric_reaches_evaluate_and_the_comparison_table(tmp_path, capsys, registered):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    for i in range(2):
        hr = make_scan((64, 64, 3), (1.25, 1.25, 2.7), seed=i)
        sitk.WriteImage(hr, str(ref / f"c{i}.nii.gz"))
        lr = make_scan((30, 30, 3), (2.7, 2.7, 2.7), seed=i, blur_mm=1.0 + i)
        up = sitk.Resample(lr, hr, sitk.Transform(), sitk.sitkBSpline, 0.0, sitk.sitkFloat32)
        sitk.WriteImage(up, str(pred / f"c{i}.nii.gz"))
    assert evaluate_main(["-ref", str(ref), "-pred", str(pred), "-np", "1"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((pred / "summary.json").read_text())
    cases = {c["case"]: c for c in summary["cases"]}
    assert cases["c0.nii.gz"]["mae"] < cases["c1.nii.gz"]["mae"]  # more blur, larger error
    assert summary["mean"]["mae"]["n"] == 2
    assert "MAE" in out.splitlines()[0]

    results = {
        cfg: {
            f"c{i}": {"psnr": 30.0 + k + i, "ssim": 0.8, "brisque": 40.0, "mae": v + 0.01 * i}
            for i in range(3)
        }
        for k, (cfg, v) in enumerate([("bicubic", 0.05), ("gaussian_edsr", 0.03)])
    }
    table = comparison_table(results)
    assert table["rows"]["mae"]["gaussian_edsr"]["best"]  # lower is better
    assert "| MAE ↓ |" in table_markdown(table)
