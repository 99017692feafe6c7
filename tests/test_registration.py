"""Rigid registration of the two series of a session recovers the head's motion."""

from __future__ import annotations

import json
import os

import numpy as np
import SimpleITK as sitk

from mrisr.dataset.demo import build_demo_dataset
from mrisr.imageio.registration import rigid_register
from mrisr.metrics.fidelity import aligned_in_physical_space, compare_in_physical_space, psnr


def test_registration_recovers_the_demo_motion(tmp_path):
    raw = build_demo_dataset(tmp_path, num_pairs=2, num_test_pairs=0)
    info = json.loads((raw / "demo_acquisition.json").read_text())["cases"]
    for case in ("demo_000", "demo_001"):
        hr = sitk.ReadImage(str(raw / "imagesHR" / f"{case}.nii.gz"), sitk.sitkFloat32)
        lr = sitk.ReadImage(str(raw / "imagesLR" / f"{case}.nii.gz"), sitk.sitkFloat32)
        tf = rigid_register(hr, lr)  # HR point -> LR point
        mot = info[case]["lr_motion"]
        a, b = np.array(mot["lr_to_hr_matrix"]), np.array(mot["lr_to_hr_translation_mm"])
        size = np.array(hr.GetSize())
        pts = [
            hr.TransformContinuousIndexToPhysicalPoint((fx * size[0], fy * size[1], size[2] / 2))
            for fx in (0.25, 0.5, 0.75)
            for fy in (0.25, 0.5, 0.75)
        ]
        before = max(np.linalg.norm(a @ np.array(p) + b - np.array(p)) for p in pts)
        after = max(
            np.linalg.norm(a @ np.array(tf.TransformPoint(p)) + b - np.array(p)) for p in pts
        )
        assert before > 1.5  # the motion is real: more than one HR voxel somewhere
        assert after < 0.75  # recovered within about half an HR voxel (1.25 mm)


def test_metrics_register_the_reference(tmp_path):
    """A copy of the HR scan moved by 1.5 mm scores far better once registered."""
    raw = build_demo_dataset(tmp_path, num_pairs=1, num_test_pairs=0)
    hr = sitk.ReadImage(str(raw / "imagesHR" / "demo_000.nii.gz"), sitk.sitkFloat32)
    moved = sitk.Image(hr)
    moved.SetOrigin(tuple(np.array(hr.GetOrigin()) + np.array([1.5, -1.0, 0.0])))
    plain = compare_in_physical_space(hr, moved, register=False)
    reg = compare_in_physical_space(hr, moved)
    assert reg["psnr"] > plain["psnr"] + 5 and reg["ssim"] > 0.95
    assert np.allclose(reg["registration"][3:5], [-1.5, 1.0], atol=0.2)
    # the aligned arrays behind those scores: on the moved copy's grid, the reference
    # brought back onto it, and the same PSNR from them
    ref_n, pred_n, mask, tf = aligned_in_physical_space(hr, moved)
    assert ref_n.shape == pred_n.shape == mask.shape == hr.GetSize()[::-1]
    assert np.allclose(tf.GetParameters(), reg["registration"])
    assert psnr(ref_n, pred_n, mask) == reg["psnr"]
    assert np.abs(ref_n - pred_n)[mask].mean() < 0.1 * np.abs(pred_n[mask]).mean()


def test_validation_registers_each_pair_once_for_every_configuration(tmp_path, monkeypatch):
    """Validating several configurations on one pair aligns its HR once (the alignment is
    to the bicubic interpolation, the same for all); another bicubic image or a changed HR
    file is aligned again, and callers get their own copy of the transform."""
    from mrisr.training import validation

    calls = []

    def counted(fixed, moving):
        calls.append(1)
        return rigid_register(fixed, moving)

    monkeypatch.setattr(validation, "rigid_register", counted)
    monkeypatch.setattr(validation, "_ALIGNMENTS", {})
    raw = build_demo_dataset(tmp_path, num_pairs=1, num_test_pairs=0)
    hr_path = raw / "imagesHR" / "demo_000.nii.gz"
    hr = sitk.ReadImage(str(hr_path), sitk.sitkFloat32)
    bic = sitk.Resample(
        sitk.ReadImage(str(raw / "imagesLR" / "demo_000.nii.gz"), sitk.sitkFloat32), hr
    )
    first = validation._alignment(bic, hr, hr_path)
    first.SetTranslation((50.0, 0.0, 0.0))  # the caller's copy: the shared one is unchanged
    again = validation._alignment(bic, hr, hr_path)
    assert len(calls) == 1 and again.GetTranslation() != (50.0, 0.0, 0.0)
    validation._alignment(bic * 2.0, hr, hr_path)  # another bicubic image
    assert len(calls) == 2
    st = hr_path.stat()  # the HR file written again
    os.utime(hr_path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    validation._alignment(bic, hr, hr_path)
    assert len(calls) == 3
