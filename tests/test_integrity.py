"""Every integrity error: one line naming the file and the fix, exit code 2, nothing written."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from synthetic import make_scan, write_dataset

from mrisr.cli.plan_and_preprocess import main


def run_cli(capsys, *args):
    code = main(["-np", "1", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_fails(capsys, env, expected_in_msg, file_hint=None):
    code, _, err = run_cli(capsys, "-d", "1")
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("mrisr_plan_and_preprocess: error: ")
    for s in expected_in_msg:
        assert s in last, last
    if file_hint:
        assert file_hint in last
    # nothing written
    assert list(env["mrisr_preprocessed"].iterdir()) == []
    return last


@pytest.fixture
def ds(mrisr_env):
    return write_dataset(mrisr_env["mrisr_raw"], n_pairs=2)


def test_valid_dataset_passes_verify_only(mrisr_env, ds, capsys):
    code, out, _ = run_cli(capsys, "-d", "1", "--verify-only")
    assert code == 0
    assert "OK" in out
    assert list(mrisr_env["mrisr_preprocessed"].iterdir()) == []


def test_missing_dataset_json(mrisr_env, ds, capsys):
    (ds / "dataset.json").unlink()
    assert_fails(capsys, mrisr_env, ["dataset.json is missing", "file_ending"], "dataset.json")


def test_invalid_dataset_json(mrisr_env, ds, capsys):
    (ds / "dataset.json").write_text("{name: oops")
    assert_fails(capsys, mrisr_env, ["not valid JSON"], "dataset.json")


def test_dataset_json_without_file_ending(mrisr_env, ds, capsys):
    (ds / "dataset.json").write_text(json.dumps({"name": "X"}))
    assert_fails(capsys, mrisr_env, ["file_ending"], "dataset.json")


def test_unreadable_image(mrisr_env, ds, capsys):
    (ds / "imagesHR" / "case_000.nii.gz").write_bytes(b"this is not an image")
    assert_fails(capsys, mrisr_env, ["not a readable image"], "imagesHR/case_000.nii.gz")


def test_truncated_image(mrisr_env, ds, capsys):
    f = ds / "imagesLR" / "case_001.nii.gz"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    assert_fails(capsys, mrisr_env, ["truncated"], "imagesLR/case_001.nii.gz")


def test_wrong_file_ending(mrisr_env, ds, capsys):
    sitk.WriteImage(make_scan((20, 20, 6), (2.7, 2.7, 2.7)), str(ds / "imagesLR" / "extra.mha"))
    assert_fails(capsys, mrisr_env, ["wrong file ending", ".nii.gz"], "imagesLR/extra.mha")


def test_4d_image(mrisr_env, ds, capsys):
    arr = np.random.rand(2, 6, 32, 36).astype(np.float32)
    img = sitk.GetImageFromArray(arr, isVector=False)
    sitk.WriteImage(img, str(ds / "imagesLR" / "case_000.nii.gz"))
    assert_fails(capsys, mrisr_env, ["4D image"], "imagesLR/case_000.nii.gz")


def test_nan_voxels(mrisr_env, ds, capsys):
    f = ds / "imagesHR" / "case_001.nii.gz"
    img = sitk.ReadImage(str(f))
    arr = sitk.GetArrayFromImage(img)
    arr[2, 10, 10] = np.nan
    arr[3, 5, 5] = np.inf
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    sitk.WriteImage(out, str(f))
    assert_fails(capsys, mrisr_env, ["2 voxel(s) are NaN or Inf"], "imagesHR/case_001.nii.gz")


def test_constant_image(mrisr_env, ds, capsys):
    f = ds / "imagesLR" / "case_000.nii.gz"
    img = sitk.ReadImage(str(f))
    out = sitk.GetImageFromArray(np.full(sitk.GetArrayFromImage(img).shape, 7, np.float32))
    out.CopyInformation(img)
    sitk.WriteImage(out, str(f))
    assert_fails(capsys, mrisr_env, ["image is empty", "7.0"], "imagesLR/case_000.nii.gz")


def test_lr_not_coarser_than_hr(mrisr_env, ds, capsys):
    sitk.WriteImage(
        make_scan((72, 64, 6), (1.25, 1.25, 2.7)), str(ds / "imagesLR" / "case_000.nii.gz")
    )
    assert_fails(capsys, mrisr_env, ["not coarser", "imagesLR/ vs imagesHR/"], "case_000.nii.gz")


def test_through_plane_mismatch(mrisr_env, ds, capsys):
    sitk.WriteImage(
        make_scan((36, 32, 3), (2.7, 2.7, 5.4)), str(ds / "imagesLR" / "case_001.nii.gz")
    )
    last = assert_fails(
        capsys, mrisr_env, ["through-plane spacing", "2D"], "imagesLR/case_001.nii.gz"
    )
    assert "in-plane" in last


def test_pair_not_overlapping(mrisr_env, ds, capsys):
    f = ds / "imagesLR" / "case_000.nii.gz"
    img = sitk.ReadImage(str(f))
    img.SetOrigin((500.0, 500.0, 0.0))  # a wrong header: the scan sits elsewhere in space
    sitk.WriteImage(img, str(f))
    assert_fails(
        capsys,
        mrisr_env,
        ["do not overlap in physical space", "origin and direction"],
        "imagesLR/case_000.nii.gz",
    )


def test_no_lr_scans(mrisr_env, ds, capsys):
    for f in (ds / "imagesLR").iterdir():
        f.unlink()
    assert_fails(capsys, mrisr_env, ["no LR scans"], "imagesLR")


def test_no_hr_scans(mrisr_env, ds, capsys):
    for f in (ds / "imagesHR").iterdir():
        f.unlink()
    assert_fails(capsys, mrisr_env, ["no HR scans"], "imagesHR")


def test_all_problems_are_listed(mrisr_env, ds, capsys):
    (ds / "imagesHR" / "case_000.nii.gz").write_bytes(b"garbage")
    (ds / "imagesLR" / "case_001.nii.gz").write_bytes(b"garbage")
    code, _, err = run_cli(capsys, "-d", "1", "--verify-only")
    assert code == 2
    assert "imagesHR/case_000.nii.gz" in err and "imagesLR/case_001.nii.gz" in err
    assert "+1 more problem" in err.strip().splitlines()[-1]


def test_unset_environment_variable(monkeypatch, capsys):
    monkeypatch.delenv("mrisr_raw", raising=False)
    code, _, err = run_cli(capsys, "-d", "1")
    assert code == 2
    assert "mrisr_raw is not set" in err and "export mrisr_raw=" in err


def test_unknown_dataset_and_planner(mrisr_env, ds, capsys):
    code, _, err = run_cli(capsys, "-d", "7")
    assert code == 2 and "no dataset with id 7" in err and "Dataset001_Synth" in err
    code, _, err = run_cli(capsys, "-d", "1", "-pl", "NoSuchPlanner")
    assert code == 2 and "unknown planner 'NoSuchPlanner'" in err and "DefaultPlanner" in err
