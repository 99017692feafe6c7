"""DICOM series in and out: raw dataset cases, mrisr_predict inputs, the SR series written."""

import contextlib
import json
import locale

import numpy as np
import pytest
import SimpleITK as sitk
from synthetic import make_scan, write_dataset

from mrisr.cli.plan_and_preprocess import main as plan_main
from mrisr.cli.predict import main as predict_main
from mrisr.imageio.dicom import read_series, write_series
from mrisr.imageio.sitk_io import read_scan

PATIENT = {
    "0010|0010": "Doe^Jane",
    "0010|0020": "PID-0042",
    "0010|0030": "19700101",
    "0010|0040": "F",
    "0020|000d": "1.2.826.0.1.3680043.8.498.1",
    "0008|0020": "20260101",
    "0008|1030": "Head MRI",
    "0020|0052": "1.2.826.0.1.3680043.8.498.2",
}
SOURCE_UID = "1.2.826.0.1.3680043.8.498.3"


def oblique(size=(36, 32, 4), spacing=(2.7, 2.7, 2.7), left_handed=False, seed=0):
    th = np.deg2rad(25)
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1.0]])
    d = rot @ np.diag([1.0, 1.0, -1.0 if left_handed else 1.0])
    return make_scan(size, spacing, direction=d.ravel(), seed=seed, noise=4.0, blur_mm=1.5)


@contextlib.contextmanager
def keep_locale():
    """Plain GDCM calls leave the process locale at "C"; the helpers undo it as mrisr does."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def write_source_series(image, folder, series_uid=SOURCE_UID, number="7"):
    """A scanner-like MR series written with plain SimpleITK (int16 slices, one per file)."""
    with keep_locale():
        return _write_source_series(image, folder, series_uid, number)


def _write_source_series(image, folder, series_uid, number):
    folder.mkdir(parents=True, exist_ok=True)
    img = sitk.Cast(sitk.RescaleIntensity(image, 0, 4000), sitk.sitkInt16)
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        tags = dict(PATIENT)
        tags.update(
            {
                "0020|000e": series_uid,
                "0008|103e": "t1_tse_tra",
                "0020|0011": number,
                "0008|0060": "MR",
                "0008|0008": "ORIGINAL\\PRIMARY",
                "0008|0018": f"{series_uid}.{k + 1}",
                "0020|0013": str(k + 1),
                "0020|0032": "\\".join(
                    f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))
                ),
                "0020|0037": "\\".join(f"{v:.8f}" for v in (*d[:, 0], *d[:, 1])),
                "0028|0030": f"{image.GetSpacing()[1]}\\{image.GetSpacing()[0]}",
                "0018|0050": str(image.GetSpacing()[2]),
            }
        )
        for key, v in tags.items():
            sl.SetMetaData(key, v)
        writer.SetFileName(str(folder / f"slice{k:03d}"))  # no ending, as scanners do
        writer.Execute(sl)
    return img


def read_back(folder):
    with keep_locale():
        return _read_back(folder)


def _read_back(folder):
    reader = sitk.ImageSeriesReader()
    ids = reader.GetGDCMSeriesIDs(str(folder))
    assert len(ids) == 1
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), ids[0]))
    reader.MetaDataDictionaryArrayUpdateOn()
    img = reader.Execute()
    tags = [
        {k: reader.GetMetaData(i, k).strip() for k in reader.GetMetaDataKeys(i)}
        for i in range(img.GetDepth())
    ]
    return img, ids[0], tags


def same_geometry(a, b, tol=1e-4):
    """Voxel grids equal in physical space (a left-handed grid may come back z-flipped)."""
    if np.linalg.det(np.reshape(a.GetDirection(), (3, 3))) < 0:
        a = sitk.Flip(a, (False, False, True))
    assert a.GetSize() == b.GetSize()
    assert np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
    assert np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
    assert np.allclose(a.GetDirection(), b.GetDirection(), atol=tol)
    return a


@pytest.mark.parametrize("left_handed", [False, True])
def test_write_series_round_trip(tmp_path, left_handed):
    encoding = locale.getpreferredencoding(False)
    img = oblique(left_handed=left_handed)
    src = write_source_series(img, tmp_path / "src")
    source = read_series(tmp_path / "src")
    assert source.series_uid == SOURCE_UID and source.image.GetDepth() == 4
    uid = write_series(img, tmp_path / "out", source, description="mrisr SR of #7")
    assert locale.getpreferredencoding(False) == encoding  # GDCM's setlocale("C") undone
    back, back_uid, tags = read_back(tmp_path / "out")
    assert back_uid == uid != SOURCE_UID
    a = same_geometry(img, back)
    peak = float(np.abs(sitk.GetArrayFromImage(img)).max())
    err = np.abs(sitk.GetArrayFromImage(a) - sitk.GetArrayFromImage(back)).max()
    assert err <= peak / 32000  # int16 with one rescale slope per series
    for t in tags:
        for k, v in PATIENT.items():
            assert t[k] == v  # patient, study and frame of reference copied
        assert t["0008|0008"] == "DERIVED\\SECONDARY"
        assert t["0008|103e"] == "mrisr SR of #7"
    assert len({t["0008|0018"] for t in tags}) == 4  # one SOP instance per slice
    assert src.GetDepth() == 4
    assert locale.getpreferredencoding(False) == encoding  # GDCM's setlocale("C") undone


def test_write_series_without_source_invents_no_patient(tmp_path):
    write_series(oblique(), tmp_path / "out")
    _, _, tags = read_back(tmp_path / "out")
    assert tags[0].get("0010|0010", "") == "" and tags[0].get("0010|0020", "") == ""
    assert len({t["0020|000d"] for t in tags}) == 1  # one study for the whole series


@pytest.fixture
def planned(mrisr_env):
    ds = write_dataset(mrisr_env["mrisr_raw"], n_pairs=2, lr_size=(36, 32, 4))
    assert plan_main(["-d", "1", "-np", "1", "--no-select"]) == 0
    (mrisr_env["mrisr_results"] / ds.name).mkdir()  # 'bicubic' predicts from the plans alone
    return mrisr_env, ds


def test_predict_dicom_in_dicom_out_matches_nifti(planned, tmp_path, capsys):
    img = oblique(left_handed=True, seed=5)
    inp = tmp_path / "in"
    write_source_series(img, inp / "series7")
    sitk.WriteImage(read_scan(inp / "series7"), str(tmp_path / "series7.nii.gz"))
    (tmp_path / "in_nii").mkdir()
    (tmp_path / "series7.nii.gz").rename(tmp_path / "in_nii" / "series7.nii.gz")
    common = ["-c", "bicubic"]
    assert predict_main(["-i", str(inp), "-o", str(tmp_path / "o_dcm"), *common]) == 0
    assert (
        predict_main(["-i", str(tmp_path / "in_nii"), "-o", str(tmp_path / "o_nii"), *common]) == 0
    )
    nii = sitk.ReadImage(str(tmp_path / "o_nii" / "series7.nii.gz"))
    sr, uid, tags = read_back(tmp_path / "o_dcm" / "series7")  # same: DICOM in -> DICOM out
    assert sr.GetSpacing()[0] == pytest.approx(1.25, abs=1e-4)
    a = same_geometry(nii, sr)
    peak = float(np.abs(sitk.GetArrayFromImage(a)).max())
    assert np.abs(sitk.GetArrayFromImage(a) - sitk.GetArrayFromImage(sr)).max() <= peak / 32000
    assert uid != SOURCE_UID and tags[0]["0008|0008"] == "DERIVED\\SECONDARY"
    assert tags[0]["0010|0010"] == "Doe^Jane" and tags[0]["0020|000d"] == PATIENT["0020|000d"]
    assert "mrisr SR x2 bicubic of #7 t1_tse_tra" == tags[0]["0008|103e"]
    assert SOURCE_UID in tags[0]["0008|2111"]  # derivation description names the source UID
    # the input folder itself holding one series; NIfTI out on request
    out3 = tmp_path / "o3"
    code = predict_main(
        ["-i", str(inp / "series7"), "-o", str(out3), "--output-format", "nifti", *common]
    )
    assert code == 0
    same = sitk.ReadImage(str(out3 / "series7.nii.gz"))
    assert np.allclose(same.GetOrigin(), nii.GetOrigin(), atol=1e-4)
    args = json.loads((out3 / "predict_args.json").read_text())
    assert args["output_format"] == "nifti"
    capsys.readouterr()


def test_two_series_in_one_folder_is_an_error(planned, tmp_path, capsys):
    inp = tmp_path / "in"
    write_source_series(oblique(), inp, series_uid="1.2.3.4.1")
    write_source_series(oblique(seed=2), inp / "tmp", series_uid="1.2.3.4.2")
    for f in (inp / "tmp").iterdir():
        f.rename(inp / f"b_{f.name}")
    (inp / "tmp").rmdir()
    code = predict_main(["-i", str(inp), "-o", str(tmp_path / "o"), "-c", "bicubic"])
    err = capsys.readouterr().err
    assert code == 2 and "1.2.3.4.1" in err and "1.2.3.4.2" in err and "2 DICOM series" in err
    assert len(err.strip().splitlines()) == 1


def test_raw_dataset_case_as_dicom_folder(mrisr_env, capsys):
    ds = write_dataset(mrisr_env["mrisr_raw"], n_pairs=2, lr_size=(36, 32, 4))
    lr_file = ds / "imagesLR" / "case_001.nii.gz"
    img = sitk.ReadImage(str(lr_file))
    lr_file.unlink()
    write_source_series(img, ds / "imagesLR" / "case_001")
    assert plan_main(["-d", "1", "-np", "1", "--no-select"]) == 0
    props = json.loads(
        (
            mrisr_env["mrisr_preprocessed"]
            / "Dataset001_Synth"
            / "mrisrPlans_preprocessed"
            / "case_001.json"
        ).read_text()
    )
    assert props["is_pair"] and props["source_files"]["lr"].endswith("imagesLR/case_001")
    capsys.readouterr()
