"""mrisr_predict and mrisr_find_best_configuration on a tiny trained model."""

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from synthetic import make_scan, write_dataset
from test_predictor import _landmark_scan, _peak

from mrisr.cli.find_best_configuration import main as best_main
from mrisr.cli.plan_and_preprocess import main as plan_main
from mrisr.cli.predict import main as predict_main
from mrisr.cli.throughplane import main as throughplane_main
from mrisr.imageio.resampling import output_slices
from mrisr.imageio.sitk_io import Geometry
from mrisr.training.train_api import run_training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    mp = pytest.MonkeyPatch()
    for k in ("mrisr_raw", "mrisr_preprocessed", "mrisr_results"):
        (root / k).mkdir()
        mp.setenv(k, str(root / k))
    ds = write_dataset(root / "mrisr_raw", n_pairs=5, hr_size=(80, 80, 3), lr_size=(40, 40, 3))
    assert plan_main(["-d", "1", "-np", "1", "--no-select"]) == 0
    for fold in (0, 1):
        run_training(fold, "1", "gaussian_edsr", "EDSRTrainer_tiny", progress=False)
        run_training(fold, "1", "bicubic", "EDSRTrainer_tiny", progress=False)
    yield root, ds
    mp.undo()


def _run(capsys, *args):
    code = predict_main(list(args))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_predict_writes_sr_scans_with_correct_geometry(trained, tmp_path, capsys):
    root, ds = trained
    inp = tmp_path / "in"
    inp.mkdir()
    lr, target = _landmark_scan()
    sitk.WriteImage(lr, str(inp / "landmark.nii.gz"))
    shutil.copy(ds / "imagesLR" / "case_000.nii.gz", inp / "case_000.nii.gz")
    out = tmp_path / "out"
    code, stdout, err = _run(
        capsys,
        "-i",
        str(inp),
        "-o",
        str(out),
        "-c",
        "gaussian_edsr",
        "-tr",
        "EDSRTrainer_tiny",
        "--disable-tta",
    )
    assert code == 0, err
    assert "2 scan(s)" in stdout
    args = json.loads((out / "predict_args.json").read_text())
    assert args["folds"] == ["0", "1"] and args["tta"] is False  # every trained fold by default
    sr = sitk.ReadImage(str(out / "case_000.nii.gz"))
    g = Geometry.of(sr)
    assert g.spacing == pytest.approx((1.25, 1.25, 2.7))
    assert sr.GetSize() == (86, 86, 3)  # 2 x floor(40 x 2.7 mm / 2.5 mm): the scan's own FOV
    # bicubic (no training) puts the landmark where it belongs, within one HR voxel
    out_b = tmp_path / "out_b"
    assert (
        _run(capsys, "-i", str(inp), "-o", str(out_b), "-c", "bicubic", "-tr", "EDSRTrainer_tiny")[
            0
        ]
        == 0
    )
    peak = _peak(sitk.ReadImage(str(out_b / "landmark.nii.gz")))
    assert np.linalg.norm(peak - target) < 1.25


def test_predict_parts_and_continue(trained, tmp_path, capsys):
    root, ds = trained
    inp = tmp_path / "in"
    shutil.copytree(ds / "imagesLR", inp)
    out = tmp_path / "out"
    common = [
        "-i",
        str(inp),
        "-o",
        str(out),
        "-c",
        "gaussian_edsr",
        "-tr",
        "EDSRTrainer_tiny",
        "-f",
        "0",
        "--disable-tta",
    ]
    assert _run(capsys, *common, "--num-parts", "2", "--part-id", "0")[0] == 0
    assert len(list(out.glob("*.nii.gz"))) == 3  # 5 scans, part 0 of 2
    m = {f.name: f.stat().st_mtime_ns for f in out.glob("*.nii.gz")}
    code, stdout, _ = _run(capsys, *common, "--continue")
    assert code == 0 and "2 scan(s)" in stdout
    assert all((out / n).stat().st_mtime_ns == t for n, t in m.items())


def test_predict_bad_input(trained, tmp_path, capsys):
    root, ds = trained
    inp = tmp_path / "in"
    inp.mkdir()
    base = ["-c", "gaussian_edsr", "-tr", "EDSRTrainer_tiny"]
    code, _, err = _run(capsys, "-i", str(inp), "-o", str(tmp_path / "o"), *base)
    assert code == 2 and "input folder is empty" in err
    code, _, err = _run(capsys, "-i", str(tmp_path / "missing"), "-o", str(tmp_path / "o"), *base)
    assert code == 2 and "does not exist" in err
    code, _, err = _run(capsys, "-i", str(inp), "-o", str(inp), *base)
    assert code == 2 and "inputs are never overwritten" in err
    (inp / "notes.txt").write_text("hello")
    code, _, err = _run(capsys, "-i", str(inp), "-o", str(tmp_path / "o"), *base)
    assert code == 2 and "notes.txt: not an image file" in err
    (inp / "notes.txt").unlink()
    arr = np.random.rand(2, 3, 20, 20).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(arr, isVector=False), str(inp / "fourd.nii.gz"))
    code, _, err = _run(capsys, "-i", str(inp), "-o", str(tmp_path / "o"), *base)
    assert code == 2 and "fourd.nii.gz: 4D image" in err
    (inp / "fourd.nii.gz").unlink()
    sitk.WriteImage(make_scan((40, 40, 3), (2.7, 2.7, 2.7)), str(inp / "ok.nii.gz"))
    code, _, err = _run(capsys, "-i", str(inp), "-o", str(tmp_path / "o"), "-c", "dsgan_edsr")
    assert code == 2 and "mrisr_train" in err and "dsgan_edsr" in err
    code, _, err = _run(capsys, "-i", str(inp), "-o", str(tmp_path / "o"), *base, "-f", "3")
    assert code == 2 and "mrisr_train 3" in err
    # far from the trained spacing: a warning with the numbers, and a prediction
    sitk.WriteImage(make_scan((20, 20, 3), (5.4, 5.4, 2.7)), str(inp / "ok.nii.gz"))
    code, _, err = _run(capsys, "-i", str(inp), "-o", str(tmp_path / "o2"), *base, "--disable-tta")
    assert code == 0 and "5.4 mm is far from" in err and (tmp_path / "o2" / "ok.nii.gz").is_file()


def test_find_best_configuration(trained, capsys):
    root, _ = trained
    assert best_main(["-d", "1", "-tr", "EDSRTrainer_tiny"]) == 0
    out = capsys.readouterr().out
    assert "| metric | Bicubic | GB+EDSR |" in out and "BRISQUE" in out and "PSNR" in out
    report = json.loads(
        (root / "mrisr_results" / "Dataset001_Synth" / "comparison.json").read_text()
    )
    rows = report["table"]["rows"]
    assert report["table"]["cases"] and len(report["table"]["cases"]) == 2  # folds 0 and 1
    for key in ("psnr", "ssim", "brisque"):
        assert np.isfinite(rows[key]["bicubic"]["mean"]) and np.isfinite(
            rows[key]["gaussian_edsr"]["mean"]
        )
        assert sum(r["best"] for r in rows[key].values()) == 1
    assert (root / "mrisr_results" / "Dataset001_Synth" / "comparison_fig4.png").is_file()
    assert (root / "mrisr_results" / "Dataset001_Synth" / "mscn_fig5.png").is_file()


def test_in_plane_then_through_plane_to_an_isotropic_volume(trained, tmp_path, capsys):
    """The combined pipeline: in-plane SR of a real LR scan, then through-plane SR of the
    result; its slice thickness is unstated (too few slices to measure: the spacing)."""
    root, ds = trained
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(ds / "imagesLR" / "case_000.nii.gz", inp / "case_000.nii.gz")
    sr_dir, iso_dir = tmp_path / "sr", tmp_path / "iso"
    code, _, err = _run(capsys, "-i", str(inp), "-o", str(sr_dir), "-c", "gaussian_edsr",
                        "-tr", "EDSRTrainer_tiny", "--disable-tta")  # fmt: skip
    assert code == 0, err
    sr = sitk.ReadImage(str(sr_dir / "case_000.nii.gz"))
    args = ["-i", str(sr_dir / "case_000.nii.gz"), "-o", str(iso_dir), "--iterations", "2"]
    assert throughplane_main(args) == 0
    iso = sitk.ReadImage(str(iso_dir / "case_000.nii.gz"))
    assert iso.GetSpacing() == pytest.approx((1.25, 1.25, 1.25))
    assert iso.GetSize() == (*sr.GetSize()[:2], output_slices(3, 2.7 / 1.25))
    assert iso.GetOrigin() == pytest.approx(sr.GetOrigin())
    assert iso.GetDirection() == pytest.approx(sr.GetDirection())
