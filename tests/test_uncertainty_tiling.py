"""Uncertainty maps (sd over the ensemble, no extra passes) and tiled inference of large slices."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from synthetic import write_dataset
from test_predictor import Asymmetric, Upsample, _landmark_scan

from mrisr.cli.plan_and_preprocess import main as plan_main
from mrisr.imageio.sitk_io import Geometry
from mrisr.inference.predictor import SRPredictor
from mrisr.inference.tiling import axis_tiles, margin_for, receptive_radius
from mrisr.networks.edsr import EDSR
from mrisr.plans import Plans


@pytest.fixture
def plans(mrisr_env):
    write_dataset(mrisr_env["mrisr_raw"], n_pairs=2)
    assert plan_main(["-d", "1", "-np", "1", "--no-select"]) == 0
    return Plans.load(mrisr_env["mrisr_preprocessed"] / "Dataset001_Synth" / "mrisrPlans.json")


class Nearest(torch.nn.Module):
    """Exactly equivariant under rotations and flips: every TTA member agrees."""

    def forward(self, x):
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


class Counting(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.calls, self.shapes = net, 0, []

    def forward(self, x):
        self.calls += 1
        self.shapes.append(tuple(x.shape[-2:]))
        return self.net(x)


def test_uncertainty_zero_where_members_agree(plans):
    x = np.random.default_rng(0).random((3, 20, 24)).astype(np.float32)
    _, sd = SRPredictor(plans, [Upsample(), Upsample()], tta=False).predict_array(x, True)
    assert sd.shape == (3, 40, 48) and np.all(sd == 0)  # identical folds
    _, sd = SRPredictor(plans, [Nearest(), Nearest()], tta=True).predict_array(x, True)
    assert np.all(sd == 0)  # identical folds, TTA members equal too
    _, sd = SRPredictor(plans, [Upsample(0.0), Upsample(1.0)], tta=False).predict_array(x, True)
    assert np.allclose(sd, 0.5, atol=1e-5)  # population sd of {y, y + 1}
    mean, sd = SRPredictor(plans, [Asymmetric()], tta=True).predict_array(x, True)
    assert (sd > 1e-3).mean() > 0.99  # the TTA members disagree nearly everywhere
    assert np.allclose(mean, SRPredictor(plans, [Asymmetric()], tta=True).predict_array(x))


def test_uncertainty_costs_no_extra_network_pass(plans):
    x = np.random.default_rng(1).random((5, 16, 16)).astype(np.float32)
    nets = [Counting(Upsample()), Counting(Upsample(0.5))]
    p = SRPredictor(plans, nets, tta=True, batch_size=2)
    p.predict_array(x)
    plain = [n.calls for n in nets]
    p.predict_array(x, return_std=True)
    assert [n.calls - c for n, c in zip(nets, plain)] == plain == [24, 24]  # 3 batches x 8


def test_uncertainty_scan_has_the_sr_geometry(plans):
    lr, _ = _landmark_scan()
    sr, sd = SRPredictor(plans, [Asymmetric()], tta=True).predict_scan(lr, return_std=True)
    assert Geometry.of(sd) == Geometry.of(sr)
    arr = sitk.GetArrayFromImage(sd)
    assert arr.min() >= 0 and arr.max() > 0


def test_tiles_cover_the_slice_once():
    for n, tile in ((100, 16), (17, 16), (16, 16), (5, 16), (64, 0)):
        tiles = axis_tiles(n, tile, 4)
        cores = np.zeros(n, int)
        for t in tiles:
            cores[t.a : t.b] += 1
            assert 0 <= t.lo <= t.a < t.b <= t.hi <= n and t.b - t.a <= max(tile, n * (tile <= 0))
        assert np.all(cores == 1)


def test_receptive_radius_of_edsr():
    net = EDSR(scale=2, num_blocks=16, num_features=8)
    assert receptive_radius(net) == pytest.approx(35.5)  # 1 + 32 + 1 + 1 LR px + 1 HR px
    assert receptive_radius(EDSR(scale=4, num_blocks=1, num_features=8)) == pytest.approx(5.75)
    assert margin_for([net]) == 38


def test_tiled_equals_untiled(plans):
    torch.manual_seed(0)
    net = EDSR(scale=2, num_blocks=3, num_features=8).eval()
    with torch.no_grad():
        for p in net.parameters():  # random but not tiny weights: a real receptive field
            p.mul_(3.0)
    x = np.random.default_rng(2).random((3, 45, 38)).astype(np.float32)
    whole = SRPredictor(plans, [net], tta=True, tile_size=0, mixed_precision=False)
    counting = Counting(net)
    tiled = SRPredictor(plans, [counting], tta=True, tile_size=12, mixed_precision=False)
    a, sa = whole.predict_array(x, return_std=True)
    b, sb = tiled.predict_array(x, return_std=True)
    rng = float(a.max() - a.min())
    assert rng > 0.1
    assert np.abs(a - b).max() < 1e-3 * rng and np.abs(sa - sb).max() < 1e-3 * rng
    m = tiled.margin
    assert max(max(s) for s in counting.shapes) <= 12 + 2 * m < 45  # memory bounded by tile
    assert len(set(counting.shapes)) > 1  # really tiled
