"""Through-plane SR: thick-slice geometry, slice profiles, and the command end to end."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy.ndimage import gaussian_filter

import mrisr.throughplane.profile_gan as profile_gan
from mrisr.cli.throughplane import main as throughplane_main
from mrisr.imageio.dicom import series_files, write_series
from mrisr.imageio.resampling import output_slices
from mrisr.imageio.sitk_io import Geometry
from mrisr.planning.plan_and_preprocess_api import thick_slice_lines
from mrisr.throughplane.api import Scan, super_resolve
from mrisr.throughplane.geometry import (
    ThickSliceGeometry,
    dicom_thickness,
    output_geometry,
    slice_geometry,
    thick_axis,
)
from mrisr.throughplane.profile import (
    degradation_matrix,
    gaussian_profile,
    interpolation_matrix,
    rect_profile,
    slice_positions,
)
from mrisr.throughplane.profile_fit import fit_profile
from mrisr.utilities.errors import MrisrError

DIRECTION = tuple(np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], float).ravel())  # a rotation


def phantom(size=(36, 32, 10), spacing=(1.0, 1.0, 2.5), axis=2, seed=0) -> sitk.Image:
    """Ellipsoids with texture, thick along index ``axis``, noisy, on a rotated grid."""
    rng = np.random.default_rng(seed)
    zyx = [size[2], size[1], size[0]]
    phys = [np.arange(n) * spacing[2 - i] for i, n in enumerate(zyx)]
    z, y, x = np.meshgrid(*phys, indexing="ij")
    c = [p.mean() for p in phys]
    r = ((z - c[0]) / (0.45 * phys[0][-1])) ** 2 + ((y - c[1]) / 13) ** 2 + ((x - c[2]) / 15) ** 2
    arr = (r < 1) * (100 + 40 * np.sin(x / 2.0) * np.cos(y / 3.0 + z / 4.0))
    arr = arr + rng.normal(0, 2, arr.shape)
    img = sitk.GetImageFromArray(np.abs(arr).astype(np.float32))
    img.SetSpacing(spacing)
    img.SetOrigin((10.0, -20.0, 5.0))
    img.SetDirection(DIRECTION)
    del axis
    return img


def test_thick_slice_geometry_gap_and_non_integer_ratio():
    img = phantom(spacing=(0.9, 0.9, 3.6))
    assert thick_axis(img) == 2
    g = slice_geometry(img, "scan.nii.gz", 3.0)
    assert g.ratio == pytest.approx(4.0)
    assert g.gap == pytest.approx(0.6)
    assert g.thickness_px == pytest.approx(3.0 / 0.9)
    assumed = slice_geometry(img, "scan.nii.gz")
    assert assumed.thickness_source == "assumed" and assumed.slice_thickness == pytest.approx(3.6)
    # x is the thick axis
    xs = phantom(size=(10, 32, 36), spacing=(3.0, 1.0, 1.0))
    assert slice_geometry(xs, "x.nii.gz").axis == 0


def test_not_thick_slice_is_refused_naming_the_file():
    with pytest.raises(MrisrError, match=r"iso\.nii\.gz: not a thick-slice scan"):
        slice_geometry(phantom(spacing=(1.0, 1.0, 1.2)), "iso.nii.gz")
    with pytest.raises(MrisrError, match="more than 3x"):
        slice_geometry(phantom(), "a.nii.gz", 9.0)


def test_output_geometry_is_exact():
    img = phantom(size=(36, 32, 11), spacing=(1.0, 1.0, 3.6))
    g = slice_geometry(img, "a", 3.0)
    out = output_geometry(img, g)
    assert out.size == (36, 32, 37)  # 10 gaps of 3.6 px -> 36 px -> 37 samples
    assert out.spacing == (1.0, 1.0, 1.0)
    assert out.origin == img.GetOrigin() and out.direction == img.GetDirection()
    # the last output sample sits on the last slice centre
    last_in = np.array(img.TransformIndexToPhysicalPoint((0, 0, 10)))
    last_out = out.index_to_physical(np.array([0, 0, 36]))
    np.testing.assert_allclose(last_out, last_in, atol=1e-6)
    assert output_slices(46, 3.5999999) == 163  # float32 spacings do not lose a sample


def test_profiles_and_operators():
    assert gaussian_profile(3.0).fwhm_px() == pytest.approx(3.0, abs=0.05)
    assert rect_profile(4.0).fwhm_px() == pytest.approx(4.0, abs=0.05)
    # a 1-px box at ratio 1 is nearly the identity (the profile is read piecewise-linearly
    # between samples STEP apart: its edges are ramps STEP wide)
    d = degradation_matrix(torch.as_tensor(rect_profile(1.0).values), 12, 1.0)
    assert (
        float(torch.diagonal(d).min()) > 0.85 and int(d.argmax(1).ne(torch.arange(12)).sum()) == 0
    )
    # rows sum to one; a constant line stays constant through degrade + interpolate
    d = degradation_matrix(torch.as_tensor(gaussian_profile(3.0).values), 40, 3.6, 1.2)
    np.testing.assert_allclose(d.sum(1).numpy(), 1.0, atol=1e-6)
    pos = slice_positions(40, 3.6, 1.2)
    assert d.shape == (len(pos), 40) and pos[0] == 1.2
    u = interpolation_matrix(pos, 40)
    np.testing.assert_allclose((u @ d @ torch.full((40,), 2.0)).numpy(), 2.0, atol=1e-5)
    # the box's slice j averages the pixels it covers, equally
    d = degradation_matrix(torch.as_tensor(rect_profile(3.0).values), 20, 4.0)
    assert float(d[1, 3:6].sum()) > 0.9 and float(d[1, :2].sum() + d[1, 7:].sum()) == 0.0
    assert float(d[1, 3]) == pytest.approx(float(d[1, 5])) and float(d[1, 4]) > float(d[1, 3])


def test_dicom_thickness_with_a_gap(tmp_path):
    assert dicom_thickness({"0018|0050": "3.0"}, 3.6, "s") == 3.0
    assert dicom_thickness({}, 3.6, "s") is None
    with pytest.raises(MrisrError, match="exceeds the spacing"):
        dicom_thickness({"0018|0050": "5"}, 3.6, "series")
    img = phantom(spacing=(1.0, 1.0, 3.6))
    folder = tmp_path / "series"
    write_series(img, folder)
    for f in series_files(folder):  # the scanner's thickness: 3 mm slices, 0.6 mm gaps
        r = sitk.ImageFileReader()
        r.SetFileName(f)
        r.LoadPrivateTagsOn()
        s = r.Execute()
        s.SetMetaData("0018|0050", "3.0")
        w = sitk.ImageFileWriter()
        w.KeepOriginalImageUIDOn()
        w.SetFileName(f)
        w.Execute(s)
    scan = Scan(folder, None)
    assert scan.geometry.thickness_source == "dicom"
    assert scan.geometry.slice_thickness == pytest.approx(3.0)
    assert scan.geometry.slice_spacing == pytest.approx(3.6, abs=1e-3)
    # DICOM in -> a derived DICOM series out, on the output grid
    super_resolve([folder], tmp_path / "out", iterations=3, progress=False)
    out = sitk.ReadImage(series_files(tmp_path / "out" / "series"))
    expect = output_geometry(scan.image, scan.geometry)
    assert out.GetSize() == expect.size
    np.testing.assert_allclose(out.GetSpacing(), expect.spacing, atol=1e-3)
    np.testing.assert_allclose(out.GetOrigin(), expect.origin, atol=1e-3)
    np.testing.assert_allclose(out.GetDirection(), expect.direction, atol=1e-5)


def test_thickness_from_dataset_json(tmp_path):
    folder = tmp_path / "imagesLR"
    folder.mkdir()
    sitk.WriteImage(phantom(spacing=(1.0, 1.0, 3.6)), str(folder / "a.nii.gz"))
    (tmp_path / "dataset.json").write_text(
        json.dumps({"name": "x", "file_ending": ".nii.gz", "slice_thickness": 3.0})
    )
    g = Scan(folder / "a.nii.gz", None).geometry
    assert (g.slice_thickness, g.thickness_source) == (3.0, "dataset.json")
    assert Scan(folder / "a.nii.gz", 2.0).geometry.thickness_source == "argument"


def test_end_to_end_non_integer_ratio_and_saved_model(tmp_path):
    img = phantom(size=(36, 32, 10), spacing=(1.0, 1.0, 2.5))
    src = tmp_path / "scan.nii.gz"
    sitk.WriteImage(img, str(src))
    before = src.read_bytes()
    rec = super_resolve([src], tmp_path / "out", 2.0, "rect", save_model_to=tmp_path / "m.pt",
                        iterations=15, progress=False)  # fmt: skip
    assert src.read_bytes() == before
    out = sitk.ReadImage(str(tmp_path / "out" / "scan.nii.gz"))
    assert out.GetSize() == (36, 32, 23)  # 9 gaps x 2.5 px + 1
    assert out.GetSpacing() == pytest.approx((1.0, 1.0, 1.0))
    assert out.GetOrigin() == pytest.approx(img.GetOrigin())
    assert out.GetDirection() == pytest.approx(img.GetDirection())
    arr, ref = sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(img)
    # output slice 5 (2.5 * 2) is the input slice 2's position: same anatomy, same scale
    assert np.corrcoef(arr[5].ravel(), ref[2].ravel())[0, 1] > 0.9
    rec_json = json.loads((tmp_path / "out" / "throughplane.json").read_text())
    assert rec_json["scans"]["scan.nii.gz"]["geometry"]["ratio"] == pytest.approx(2.5)
    assert rec["profile"]["fwhm_mm"] == pytest.approx(2.0, abs=0.05)
    # the saved model applied again gives the same volume, without training
    super_resolve([src], tmp_path / "again", model=tmp_path / "m.pt", progress=False)
    again = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "again" / "scan.nii.gz")))
    np.testing.assert_allclose(again, arr, rtol=1e-5, atol=1e-3)
    # a scan of another protocol is refused by the model
    other = tmp_path / "other.nii.gz"
    sitk.WriteImage(phantom(spacing=(1.0, 1.0, 4.0)), str(other))
    with pytest.raises(MrisrError, match="other.nii.gz: slice spacing / thickness"):
        super_resolve([other], tmp_path / "o2", model=tmp_path / "m.pt", progress=False)


def test_thick_axis_along_x(tmp_path):
    img = phantom(size=(8, 30, 28), spacing=(3.0, 1.0, 1.0))
    src = tmp_path / "x.nii.gz"
    sitk.WriteImage(img, str(src))
    super_resolve([src], tmp_path / "out", None, "gaussian", iterations=5, progress=False)
    out = sitk.ReadImage(str(tmp_path / "out" / "x.nii.gz"))
    assert out.GetSize() == (22, 30, 28) and out.GetSpacing() == pytest.approx((1.0, 1.0, 1.0))


def test_cli_refuses_an_isotropic_scan(tmp_path, capsys):
    src = tmp_path / "iso.nii.gz"
    sitk.WriteImage(phantom(spacing=(1.0, 1.0, 1.0)), str(src))
    rc = throughplane_main(["-i", str(src), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert (
        err.startswith("mrisr_throughplane: error:") and "iso.nii.gz: not a thick-slice scan" in err
    )
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "iso.nii.gz").exists()


def test_hr_reference_joins_the_training_and_must_be_isotropic(tmp_path):
    src = tmp_path / "scan.nii.gz"
    sitk.WriteImage(phantom(size=(30, 28, 9), spacing=(1.0, 1.0, 3.0)), str(src))
    ref = tmp_path / "ref.nii.gz"  # isotropic at 0.8 mm: resampled to the scan's 1 mm
    sitk.WriteImage(phantom(size=(30, 30, 30), spacing=(0.8, 0.8, 0.8), seed=1), str(ref))
    rec = super_resolve([src], tmp_path / "out", 3.0, "rect", iterations=5, progress=False,
                        references=[ref], save_model_to=tmp_path / "m.pt")  # fmt: skip
    assert rec["training"]["slices"] > 9  # the reference's slices along all three axes joined
    assert (tmp_path / "out" / "scan.nii.gz").is_file()
    bad = tmp_path / "thick_ref.nii.gz"
    sitk.WriteImage(phantom(spacing=(1.0, 1.0, 3.0)), str(bad))
    with pytest.raises(MrisrError, match=r"thick_ref\.nii\.gz: an HR reference must be isotropic"):
        super_resolve([src], tmp_path / "o2", 3.0, "rect", iterations=2, progress=False,
                      references=[bad])  # fmt: skip


def test_continue_reuses_the_model_and_the_finished_scans(tmp_path):
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    sitk.WriteImage(phantom(spacing=(1.0, 1.0, 3.0)), str(a))
    sitk.WriteImage(phantom(spacing=(1.0, 1.0, 3.0), seed=2), str(b))
    out = tmp_path / "out"
    super_resolve([a, b], out, 3.0, iterations=6, progress=False)
    model = out / "throughplane_model.pt"
    first = {p: p.stat().st_mtime_ns for p in (model, out / "a.nii.gz")}
    before_b = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "b.nii.gz")))
    (out / "b.nii.gz").unlink()  # as if interrupted before b was written
    rec = super_resolve([a, b], out, 3.0, iterations=6, progress=False, resume=True)
    assert {p: p.stat().st_mtime_ns for p in first} == first  # no retraining, a kept
    assert rec["model"] == str(model) and set(rec["scans"]) == {"a.nii.gz", "b.nii.gz"}
    again_b = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "b.nii.gz")))
    np.testing.assert_allclose(again_b, before_b, rtol=1e-5, atol=1e-3)


def test_plan_summary_names_thick_slice_scans():
    def geom(spacing):
        return Geometry((64, 64, 20), spacing, (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))

    verified = SimpleNamespace(
        geometries={
            "a": {"hr": geom((1.0, 1.0, 1.0)), "lr": geom((0.9, 0.9, 3.6))},
            "b": {"hr": geom((1.0, 1.0, 1.0)), "lr": geom((0.9, 0.9, 1.2))},
        }
    )
    (line,) = thick_slice_lines(verified)
    assert "1 of 2 LR scans" in line and "slices 3.6 mm" in line and "mrisr_throughplane" in line


def test_dsgan_profile_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(profile_gan, "ITERATIONS", profile_gan.WARMUP + 5)
    src = tmp_path / "scan.nii.gz"
    sitk.WriteImage(phantom(spacing=(1.0, 1.0, 3.0)), str(src))
    rec = super_resolve([src], tmp_path / "out", 3.0, "dsgan", iterations=3, progress=False)
    prof = rec["profile"]
    assert prof["kind"] == "learned" and 0.5 < prof["fwhm_mm"] < 9.0
    values = np.asarray(prof["values"])
    assert values.max() == pytest.approx(1.0) and values.min() >= 0
    assert abs(int(np.argmax(values)) - len(values) // 2) <= 4  # centred within 1 px
    assert rec["training"]["profile_fit"]["iterations"] == profile_gan.WARMUP + 5


def isotropic_texture_scan(width, spacing, length=200, size=96, fine=4, seed=0, sigma=0.01):
    """A smooth isotropic texture sampled every 1/fine px along z, acquired as box slabs of
    ``width`` px every ``spacing`` px (averaged from the fine samples), white noise added:
    a scan whose slice profile is known exactly and made without the project's operators."""
    rng = np.random.default_rng(seed)
    obj = gaussian_filter(rng.standard_normal((length * fine, size, size)), (1.5 * fine, 1.5, 1.5))
    obj = 0.6 + 0.25 * obj / obj.std()
    z = (np.arange(length * fine) + 0.5) / fine
    centres = np.arange(width, length - width, spacing)
    slabs = np.stack([obj[np.abs(z - c) < width / 2].mean(0) for c in centres])
    return (slabs + sigma * rng.standard_normal(slabs.shape)).astype(np.float32)


@pytest.mark.parametrize("width,spacing", [(3.0, 3.6), (2.0, 4.0), (5.0, 5.0)])
def test_learned_profile_recovers_a_known_box(width, spacing):
    vol = isotropic_texture_scan(width, spacing)
    stated = 0.6 * width  # the fit must not lean on the stated thickness
    g = ThickSliceGeometry(2, 1.0, spacing, stated, "argument")
    prof, rec = fit_profile([vol], g, [0.01])
    assert prof.kind == "learned"
    assert abs(prof.fwhm_px() / width - 1) < 0.10, (prof.fwhm_px(), rec["misfit_by_width_px"])
    assert rec["segments"]["through_plane"] >= 200


def test_learned_profile_refuses_too_few_slices_naming_the_file(tmp_path, capsys):
    src = tmp_path / "short.nii.gz"
    sitk.WriteImage(phantom(size=(40, 40, 6), spacing=(1.0, 1.0, 3.0)), str(src))
    rc = throughplane_main(["-i", str(src), "-o", str(tmp_path / "o"), "--profile", "learned"])
    err = capsys.readouterr().err
    assert (
        rc != 0
        and "short.nii.gz" in err
        and "too few" in err
        and "--profile rect" in err
        and "rect_tp_edsr" in err
    )
    assert not (tmp_path / "o" / "short.nii.gz").exists()


def test_auto_profile_measures_an_unstated_thickness(tmp_path):
    vol = isotropic_texture_scan(3.0, 3.6)  # 3 mm slabs every 3.6 mm, nothing says so
    img = sitk.GetImageFromArray(vol)
    img.SetSpacing((1.0, 1.0, 3.6))
    src = tmp_path / "gap.nii.gz"
    sitk.WriteImage(img, str(src))
    rec = super_resolve([src], tmp_path / "out", iterations=2, progress=False)
    assert rec["profile"]["kind"] == "learned"
    assert abs(rec["profile"]["fwhm_mm"] / 3.0 - 1) < 0.10  # not the 3.6 mm assumed
    assert rec["training"]["profile_fit"]["auto"].startswith("learned")
    stated = super_resolve([src], tmp_path / "out2", 3.0, iterations=2, progress=False)
    assert stated["profile"]["kind"] == "rect" and stated["profile"]["fwhm_mm"] == pytest.approx(
        3.0, abs=0.13
    )
