"""Shareable models (export -> install into empty roots -> identical prediction), refusals of
unsafe zips, and uncertainty maps written by mrisr_predict."""

import io
import json
import shutil
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from test_dicom import read_back

from mrisr.cli.install_model import main as install_main
from mrisr.cli.predict import main as predict_main
from mrisr.imageio.sitk_io import Geometry

MODEL = "Dataset001_Synth/EDSRTrainer_tiny__mrisrPlans__gaussian_edsr"
TINY = ["-c", "gaussian_edsr", "-tr", "EDSRTrainer_tiny"]


class Evil:
    """Any class: unpickling it needs more than weights_only allows."""


@pytest.fixture(scope="module")
def trained(exported_model):
    """The session's exported model, with its roots set for this module's tests."""
    root, inp, model = exported_model
    mp = pytest.MonkeyPatch()
    for k in ("mrisr_raw", "mrisr_preprocessed", "mrisr_results"):
        mp.setenv(k, str(root / k))
    yield root, inp, model
    mp.undo()


def _predict(inp, out, *extra):
    return predict_main(["-i", str(inp), "-o", str(out), "-d", "1", *TINY, *extra])


def test_export_install_predict_identical(trained, tmp_path, monkeypatch, capsys):
    root, inp, model = trained
    with zipfile.ZipFile(model) as z:
        names = set(z.namelist())
        manifest = json.loads(z.read("mrisr_model.json"))
        readme = z.read("README.md").decode()
        state = torch.load(
            io.BytesIO(z.read(f"{MODEL}/fold_0/checkpoint_final.pth")), weights_only=True
        )
    for f in (
        "plans.json",
        "dataset.json",
        "dataset_fingerprint.json",
        "fold_0/validation/summary.json",
    ):
        assert f"{MODEL}/{f}" in names
    assert "Dataset001_Synth/degradation__mrisrPlans__gaussian_edsr/units/case_000.json" in names
    assert manifest["folds"] == ["0"] and set(manifest["files"]) == names - {"mrisr_model.json"}
    assert "| fold | cases | PSNR gaussian_edsr" in readme and "\n| 0 | 1 |" in readme
    assert "optimisation" not in state and "network" in state  # inference-only checkpoint
    validation = root / "mrisr_results" / MODEL / "fold_0" / "validation"
    assert list(validation.glob("case_*_uncertainty.nii.gz"))  # validation maps, for the figure
    assert _predict(inp, tmp_path / "a") == 0
    for k in ("mrisr_raw", "mrisr_preprocessed", "mrisr_results"):  # another machine
        (tmp_path / "new" / k).mkdir(parents=True)
        monkeypatch.setenv(k, str(tmp_path / "new" / k))
    assert install_main([str(model)]) == 0
    assert _predict(inp, tmp_path / "b") == 0
    a = sitk.ReadImage(str(tmp_path / "a" / "case_000.nii.gz"))
    b = sitk.ReadImage(str(tmp_path / "b" / "case_000.nii.gz"))
    assert Geometry.of(a) == Geometry.of(b)
    assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    assert not list((tmp_path / "new" / "mrisr_preprocessed").iterdir())
    assert install_main([str(model)]) == 2 and "--overwrite" in capsys.readouterr().err
    assert install_main([str(model), "--overwrite"]) == 0


def _tampered(model, dest, replace=None, add=None, keep_hashes=False):
    """A copy of ``model`` with members replaced/added, manifest hashes updated."""
    import hashlib

    with zipfile.ZipFile(model) as z:
        members = {n: z.read(n) for n in z.namelist()}
    manifest = json.loads(members.pop("mrisr_model.json"))
    for name, data in {**(replace or {}), **(add or {})}.items():
        members[name] = data
        if not keep_hashes:
            manifest["files"][name] = hashlib.sha256(data).hexdigest()
    with zipfile.ZipFile(dest, "w") as z:
        z.writestr("mrisr_model.json", json.dumps(manifest))
        for n, d in members.items():
            z.writestr(n, d)
    return dest


def test_install_refuses_unsafe_zips(trained, tmp_path, monkeypatch, capsys):
    _, _, model = trained
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setenv("mrisr_results", str(results))
    chk = f"{MODEL}/fold_0/checkpoint_final.pth"
    buf = io.BytesIO()
    torch.save({"format": 1, "network": {}, "payload": Evil()}, buf)
    with zipfile.ZipFile(model) as z:
        plans = json.loads(z.read(f"{MODEL}/plans.json"))
        good_chk = z.read(chk)
    del plans["scale"]
    cases = {
        "escapes the target folder": _tampered(
            model, tmp_path / "1.zip", add={"Dataset001_Synth/../../evil.txt": b"x"}
        ),
        "not weights-only loadable": _tampered(
            model, tmp_path / "2.zip", replace={chk: buf.getvalue()}
        ),
        "invalid plans": _tampered(
            model, tmp_path / "3.zip", replace={f"{MODEL}/plans.json": json.dumps(plans).encode()}
        ),
        "does not match its manifest hash": _tampered(
            model, tmp_path / "4.zip", replace={chk: good_chk + b"\0"}, keep_hashes=True
        ),
    }
    for message, bad in cases.items():
        capsys.readouterr()
        assert install_main([str(bad)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not any(results.iterdir()), list(results.iterdir())  # nothing installed, no tmp
    assert not (tmp_path / "evil.txt").exists()


def test_predict_saves_uncertainty(trained, tmp_path, capsys):
    root, inp, _ = trained
    model = root / "mrisr_results" / MODEL
    shutil.copytree(model / "fold_0", model / "fold_1")  # two identical folds
    try:
        out = tmp_path / "same"
        assert _predict(inp, out, "-f", "0", "1", "--disable-tta", "--save-uncertainty") == 0
        sr = sitk.ReadImage(str(out / "case_000.nii.gz"))
        sd = sitk.ReadImage(str(out / "case_000_uncertainty.nii.gz"))
        assert Geometry.of(sd) == Geometry.of(sr)
        assert np.all(sitk.GetArrayFromImage(sd) == 0)  # the members agree everywhere
        out = tmp_path / "tta"
        code = _predict(inp, out, "-f", "0", "--save-uncertainty", "--output-format", "dicom")
        assert code == 0
        sr, _, tags = read_back(out / "case_000")
        sd, _, sd_tags = read_back(out / "case_000_uncertainty")
        assert np.allclose(sd.GetOrigin(), sr.GetOrigin(), atol=1e-4)
        assert sd.GetSize() == sr.GetSize() and sitk.GetArrayFromImage(sd).max() > 0
        assert sd_tags[0]["0008|103e"].startswith("mrisr SR uncertainty (sd) of")
        assert tags[0]["0008|103e"] == "mrisr SR x2 gaussian_edsr of case_000.nii.gz"
        assert json.loads((out / "predict_args.json").read_text())["save_uncertainty"] is True
    finally:
        shutil.rmtree(model / "fold_1")
