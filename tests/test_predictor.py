"""The shared inference core: geometry of SR output, TTA, fold averaging, intensity units."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from synthetic import make_scan, write_dataset

from mrisr.cli.plan_and_preprocess import main as plan_main
from mrisr.imageio.sitk_io import Geometry
from mrisr.inference.predictor import SRPredictor, bicubic_scan
from mrisr.metrics.fidelity import compare_in_physical_space
from mrisr.plans import Plans


class Upsample(torch.nn.Module):
    """Stands in for EDSR: bicubic x2 (same grid convention as pixel shuffle)."""

    def __init__(self, bias: float = 0.0):
        super().__init__()
        self.bias = bias

    def forward(self, x):
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic") + self.bias


class Asymmetric(torch.nn.Module):
    """A network that is not equivariant: TTA must average it back to symmetry."""

    def forward(self, x):
        y = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        ramp = torch.linspace(0, 1, y.shape[-1]).view(1, 1, 1, -1)
        return y + ramp


@pytest.fixture
def plans(mrisr_env):
    write_dataset(mrisr_env["mrisr_raw"], n_pairs=2)
    assert plan_main(["-d", "1", "-np", "1", "--no-select"]) == 0
    return Plans.load(mrisr_env["mrisr_preprocessed"] / "Dataset001_Synth" / "mrisrPlans.json")


def _landmark_scan():
    th = np.deg2rad(30)
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1.0]])
    direction = (rot @ np.diag([1.0, -1.0, 1.0])).ravel()
    img = make_scan((41, 37, 5), (2.7, 2.7, 2.7), direction=direction, seed=3, noise=0.3)
    g = Geometry.of(img)
    target = g.index_to_physical(np.array([23.0, 11.0, 2.0])) + np.array([0.7, -0.4, 0.0])
    arr = sitk.GetArrayFromImage(img)
    zz, yy, xx = np.indices(arr.shape)
    pts = g.index_to_physical(np.stack([xx, yy, zz], -1))
    d2 = ((pts - target) ** 2).sum(-1)
    arr = arr + 3000.0 * np.exp(-d2 / (2 * 2.5**2))
    out = sitk.GetImageFromArray(arr.astype(np.float32))
    out.CopyInformation(img)
    return out, target


def _peak(img):
    arr = sitk.GetArrayFromImage(img)
    g = Geometry.of(img)
    w = np.where(arr > 0.5 * arr.max(), arr, 0)
    zz, yy, xx = np.indices(arr.shape)
    c = np.array([(xx * w).sum(), (yy * w).sum(), (zz * w).sum()]) / w.sum()
    return g.index_to_physical(c)


def test_landmark_lands_at_the_same_physical_point(plans):
    lr, target = _landmark_scan()
    sr = SRPredictor(plans, [Upsample()], tta=False).predict_scan(lr)
    g = Geometry.of(sr)
    assert g.spacing[:2] == pytest.approx((1.25, 1.25)) and g.spacing[2] == pytest.approx(2.7)
    assert np.allclose(g.direction, Geometry.of(lr).direction)  # input axis order kept
    assert sr.GetSize()[2] == lr.GetSize()[2]
    err = np.linalg.norm(_peak(sr) - target)
    assert err < 1.25, err  # within one HR voxel
    assert np.linalg.norm(_peak(bicubic_scan(lr, plans)) - target) < 1.25


def test_intensity_units_are_restored(plans):
    lr, _ = _landmark_scan()
    sr = SRPredictor(plans, [Upsample()], tta=False).predict_scan(lr)
    # the integral of intensity over the (centred) phantom is preserved: same units
    va, vb = np.prod(lr.GetSpacing()), np.prod(sr.GetSpacing())
    a, b = sitk.GetArrayFromImage(lr).sum() * va, sitk.GetArrayFromImage(sr).sum() * vb
    assert b == pytest.approx(a, rel=0.05)


def test_tta_and_fold_averaging(plans):
    x = np.random.default_rng(0).random((3, 20, 24)).astype(np.float32)
    p_plain = SRPredictor(plans, [Asymmetric()], tta=False).predict_array(x)
    p_tta = SRPredictor(plans, [Asymmetric()], tta=True).predict_array(x)
    # TTA averages the ramp over flips/rotations: the result is the mean ramp 0.5
    assert p_tta.shape == (3, 40, 48)
    assert not np.allclose(p_plain, p_tta)
    nearest = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    assert np.allclose(p_tta - nearest, 0.5, atol=1e-5)
    folds = SRPredictor(plans, [Upsample(0.0), Upsample(1.0)], tta=False).predict_array(x)
    one = SRPredictor(plans, [Upsample(0.0)], tta=False).predict_array(x)
    assert np.allclose(folds, one + 0.5, atol=1e-5)


def test_metrics_in_physical_space(plans):
    hr = make_scan((72, 64, 6), (1.25, 1.25, 2.7), seed=1)
    same = compare_in_physical_space(hr, hr)
    assert same["psnr"] == float("inf") and same["ssim"] == pytest.approx(1.0)
    # an intensity-scaled copy on another grid still matches well (normalised per image)
    lr = make_scan((36, 32, 6), (2.7, 2.7, 2.7), seed=1, blur_mm=1.5)
    sr = bicubic_scan(sitk.Cast(lr * 3.0, sitk.sitkFloat32), plans)
    m = compare_in_physical_space(hr, sr)
    assert 20 < m["psnr"] < 60 and 0.5 < m["ssim"] < 1.0
