"""Through-plane configurations through the cross-validation commands: plan, train a fold,
validate, compare, predict on a tiny thick-slice dataset (thick LR, isotropic HR)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk

from mrisr.cli.plan_and_preprocess import main as plan_main
from mrisr.cli.train import main as train_main
from mrisr.evaluation.comparison import find_best_configuration
from mrisr.imageio.resampling import output_slices
from mrisr.inference.export import export_model
from mrisr.inference.install import install_model
from mrisr.inference.predict_api import predict_folder
from mrisr.plans import Plans
from mrisr.training.train_api import run_training
from mrisr.utilities.errors import MrisrError

NAME = "Dataset502_Thick"
SPACING, THICKNESS = 3.0, 2.4  # mm, a gap of 0.6 mm
ORIGIN = (10.0, -20.0, 5.0)


def isotropic_object(seed: int, size=(40, 52, 50)) -> np.ndarray:
    """(z, y, x) at 1 mm: a textured ellipsoid, a little different per case."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=float) for n in size), indexing="ij")
    c = [(n - 1) / 2 for n in size]
    r = ((z - c[0]) / 17) ** 2 + ((y - c[1]) / 23) ** 2 + ((x - c[2]) / 22) ** 2
    tex = np.sin(x / (2.0 + 0.2 * seed)) * np.cos(y / 3.0 + z / 4.0)
    return (r < 1) * (100 + 40 * tex) + np.abs(rng.normal(0, 1, size))


def image(arr: np.ndarray, spacing) -> sitk.Image:
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.SetSpacing(spacing)
    img.SetOrigin(ORIGIN)
    return img


def thick_slices(obj: np.ndarray) -> np.ndarray:
    """Slabs of THICKNESS mm every SPACING mm from the 1 mm object (box profile)."""
    z = np.arange(obj.shape[0])
    centres = np.arange(0, obj.shape[0] - 1, SPACING)
    return np.stack([obj[np.abs(z - c) <= THICKNESS / 2].mean(0) for c in centres])


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    root = tmp_path_factory.mktemp("tp")
    mp = pytest.MonkeyPatch()
    for k in ("mrisr_raw", "mrisr_preprocessed", "mrisr_results"):
        (root / k).mkdir()
        mp.setenv(k, str(root / k))
    ds = root / "mrisr_raw" / NAME
    for sub in ("imagesLR", "imagesHR"):
        (ds / sub).mkdir(parents=True)
    (ds / "dataset.json").write_text(
        json.dumps({"name": "Thick", "file_ending": ".nii.gz", "slice_thickness": THICKNESS})
    )
    for i in range(3):
        obj = isotropic_object(i)
        sitk.WriteImage(image(obj, (1.0, 1.0, 1.0)), str(ds / "imagesHR" / f"case_{i}.nii.gz"))
        lr = image(thick_slices(obj), (1.0, 1.0, SPACING))
        sitk.WriteImage(lr, str(ds / "imagesLR" / f"case_{i}.nii.gz"))
    assert plan_main(["-d", "502", "-np", "1"]) == 0
    plans_file = root / "mrisr_preprocessed" / NAME / "mrisrPlans.json"
    data = json.loads(plans_file.read_text())
    for c in data["configurations"].values():  # a test budget
        c["through_plane"].update(iterations=3, seconds=None)
    plans_file.write_text(json.dumps(data))
    yield root, ds
    mp.undo()


def test_plans_of_a_thick_slice_dataset(planned, capsys):
    root, _ = planned
    plans = Plans.load(root / "mrisr_preprocessed" / NAME / "mrisrPlans.json")
    assert plans.configuration_names == [
        "learned_tp_edsr", "rect_tp_edsr", "gaussian_tp_edsr", "bspline_tp"
    ]  # fmt: skip
    assert plans.default_configuration == "learned_tp_edsr" and plans.scale == 1
    assert all(plans.configuration(n).axis == "through-plane" for n in plans.configuration_names)
    assert not plans.configuration("bspline_tp").requires_training
    assert plans.configuration("learned_tp_edsr").through_plane["hr_references"] is True
    why = plans.data["decisions"]["through_plane"]
    assert "3 of 3 LR scans are thick-slice" in why and "slices 3 mm" in why
    # nothing in-plane was preprocessed: the through-plane configurations read the raw scans
    assert not (root / "mrisr_preprocessed" / NAME / plans.data_identifier).exists()


def test_train_validate_compare_predict(planned, tmp_path, capsys):
    root, ds = planned
    assert train_main(["0", "-d", "502"]) == 0  # the plans' default: learned_tp_edsr
    printed = capsys.readouterr().out
    assert "learned_tp_edsr" in printed and "bspline_tp" in printed and "PSNR" in printed
    fold = root / "mrisr_results" / NAME / "EDSRTrainer__mrisrPlans__learned_tp_edsr" / "fold_0"
    assert (fold / "throughplane_model.pt").is_file()
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    (case,) = summary["cases"]
    m = summary["cases"][case]
    assert set(m) == {"learned_tp_edsr", "bspline_tp"} and summary["axis"] == "through-plane"
    assert np.isfinite(m["learned_tp_edsr"]["psnr"]) and 0 < m["bspline_tp"]["ssim"] <= 1
    pred = sitk.ReadImage(str(fold / "validation" / f"{case}.nii.gz"))
    n_lr = sitk.ReadImage(str(ds / "imagesLR" / f"{case}.nii.gz")).GetSize()[2]
    assert pred.GetSize()[2] == output_slices(n_lr, SPACING) and pred.GetSpacing()[2] == 1.0
    assert pred.GetOrigin() == pytest.approx(ORIGIN)

    run_training(0, "502", "bspline_tp", progress=False)
    report = find_best_configuration("Dataset502_Thick")
    psnr = report["table"]["rows"]["psnr"]
    assert set(psnr) == {"learned_tp_edsr", "bspline_tp"}
    assert report["best_configuration_by_psnr"] in psnr

    out = tmp_path / "out"
    written = predict_folder(ds / "imagesLR", out, "502", "learned_tp_edsr")
    assert [p.name for p in written] == [f"case_{i}.nii.gz" for i in range(3)]
    img = sitk.ReadImage(str(out / "case_1.nii.gz"))
    assert img.GetSpacing() == pytest.approx((1.0, 1.0, 1.0))
    rec = json.loads((out / "throughplane.json").read_text())
    assert rec["scans"]["case_1.nii.gz"]["geometry"]["thickness_source"] == "dataset.json"


def test_export_and_install_a_through_plane_model(planned, tmp_path, monkeypatch):
    root, ds = planned
    run_training(1, "502", "rect_tp_edsr", progress=False)
    zip_path = export_model("502", "rect_tp_edsr", tmp_path / "tp.zip")
    with zipfile.ZipFile(zip_path) as z:
        manifest = json.loads(z.read("mrisr_model.json"))
        names = z.namelist()
    assert manifest["checkpoint_file"] == "throughplane_model.pt" and manifest["folds"] == ["1"]
    assert f"{NAME}/EDSRTrainer__mrisrPlans__rect_tp_edsr/fold_1/throughplane_model.pt" in names
    elsewhere = tmp_path / "results"
    elsewhere.mkdir()
    monkeypatch.setenv("mrisr_results", str(elsewhere))
    folder = install_model(zip_path)
    assert (folder / "fold_1" / "throughplane_model.pt").is_file()
    readme = (folder / "README.md").read_text()
    assert "PSNR bspline_tp" in readme and "throughplane_model.pt" in readme
    out = tmp_path / "out"
    predict_folder(ds / "imagesLR", out, "502", "rect_tp_edsr")
    assert sitk.ReadImage(str(out / "case_0.nii.gz")).GetSpacing()[2] == pytest.approx(1.0)
    with pytest.raises(MrisrError, match="no trained"):
        export_model("502", "bspline_tp", tmp_path / "b.zip")
