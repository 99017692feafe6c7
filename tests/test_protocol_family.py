"""The demo's protocol family (``--protocol random:SEED``): reproducible draws that cover
the documented ranges, and each effect really in the simulated scans."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mrisr.dataset.demo import build_demo_dataset
from mrisr.dataset.demo_acquisition import HR_PROTOCOL, LR_PROTOCOL, gfactor_map, window_2d
from mrisr.dataset.demo_protocol_family import (
    MIN_STORED_RATIO,
    RATIO,
    draw,
    expand,
    family_seed,
    resolve,
)
from mrisr.utilities.errors import MrisrError

DRAWS = [draw(s) for s in range(200)]


def _first(pred) -> int:
    return next(s for s, d in enumerate(DRAWS) if pred(d.protocol, d.anatomy))


def _build(tmp_path: Path, seed: int) -> Path:
    return build_demo_dataset(
        tmp_path / str(seed), num_pairs=1, num_test_pairs=0, protocol=f"random:{seed}"
    )


def _lr(folder: Path) -> sitk.Image:
    return sitk.ReadImage(str(folder / "imagesLR" / "demo_000.nii.gz"))


def test_draws_are_reproducible_and_differ_between_seeds() -> None:
    assert draw(7) == draw(7) and draw(7) != draw(8)
    assert resolve("random:7") == draw(7) and resolve("default").protocol == LR_PROTOCOL
    assert family_seed("random:12") == 12 and family_seed("random:x") is None


def test_draws_cover_the_documented_ranges() -> None:
    ratios = [d.protocol.spacing / HR_PROTOCOL.spacing for d in DRAWS]
    assert RATIO[0] - 0.05 <= min(ratios) and max(ratios) <= RATIO[1] + 0.05
    assert sum(abs(r - round(r)) > 0.1 for r in ratios) > 100  # mostly non-integer
    protocols = [d.protocol for d in DRAWS]
    assert {p.window for p in protocols} == {"none", "hamming", "tukey", "fermi"}
    assert {d.anatomy for d in DRAWS} == {"axial", "coronal"}
    for effect in (
        lambda p: p.partial_fourier < 1,
        lambda p: p.phase_resolution < 1,
        lambda p: p.has_contrast_relation,
        lambda p: p.gfactor_max > 1,
        lambda p: p.background == "masked",
        lambda p: p.storage_factor > 1,
    ):
        n = sum(map(effect, protocols))
        assert 20 <= n <= 180  # each effect on some, never on all
    assert MIN_STORED_RATIO >= 1.5  # mrisr's integrity check refuses LR/HR ratios below 1.5
    for p in protocols:  # the stored grid still reads as a downsampling of the HR
        assert p.stored_spacing / HR_PROTOCOL.spacing >= MIN_STORED_RATIO - 1e-9
        assert abs(p.fine_matrix * p.fine_spacing - p.fov) < 1e-6


def test_same_seed_builds_the_same_scans(tmp_path: Path) -> None:
    seed = _first(lambda p, a: p.has_contrast_relation and p.gfactor_max > 1)
    a, b = _build(tmp_path / "a", seed), _build(tmp_path / "b", seed)
    assert np.array_equal(sitk.GetArrayFromImage(_lr(a)), sitk.GetArrayFromImage(_lr(b)))
    info = json.loads((a / "demo_acquisition.json").read_text())
    assert info["build"]["protocol"] == f"random:{seed}"
    assert info["protocols"]["LR"]["intensity_gamma"] == draw(seed).protocol.intensity_gamma
    truth = info["cases"]["demo_000"]["truth"]["LR"]
    # the g-factor map is highest at the centre, where the tissue is
    assert truth["noise_sigma_tissue"] > 1.05 * truth["noise_sigma"]


def test_finer_stored_grid_headers_state_less_than_was_acquired(tmp_path: Path) -> None:
    seed = _first(lambda p, a: p.storage_factor > 1.4)
    p = draw(seed).protocol
    lr = _lr(_build(tmp_path, seed))
    assert lr.GetSpacing()[0] == pytest.approx(p.stored_spacing)
    assert lr.GetSpacing()[0] < p.spacing / 1.4
    assert lr.GetSize()[0] == p.stored_matrix
    # beyond the acquired band the spectrum is nearly empty (zero-filled interpolation;
    # the magnitude of the noisy complex image leaks a little there, never as much as
    # within the band)
    arr = sitk.GetArrayFromImage(lr).astype(float)
    spec = np.abs(np.fft.fft(arr, axis=2)).mean(axis=(0, 1))
    f = np.abs(np.fft.fftfreq(p.stored_matrix, p.stored_spacing))
    band = 0.5 / p.spacing
    assert spec[f > 1.3 * band].mean() < 0.15 * spec[(f > 0) & (f < 0.5 * band)].mean()


def test_masked_background_is_zero_outside_the_head(tmp_path: Path) -> None:
    seed = _first(lambda p, a: p.background == "masked")
    arr = sitk.GetArrayFromImage(_lr(_build(tmp_path, seed)))
    corners = arr[:, :4, :4]
    assert (corners == 0).all() and (arr > 0).mean() > 0.1


def test_contrast_relation_is_monotonic_and_fixed_at_zero_and_one() -> None:
    p = replace(LR_PROTOCOL, intensity_gamma=1.5, intensity_saturation=1.0)
    x = np.linspace(0, 2, 201)
    y = p.intensity_relation(x)
    assert y[0] == 0 and y[100] == pytest.approx(1.0) and (np.diff(y) > 0).all()
    assert not np.allclose(y, x, atol=0.05)  # another contrast
    assert LR_PROTOCOL.intensity_relation(x) is x


def test_gfactor_map_and_phase_resolution() -> None:
    p = replace(LR_PROTOCOL, gfactor_max=1.8, phase_resolution=0.8)
    g = gfactor_map(p)
    assert g.max() == pytest.approx(1.8, abs=0.02) and g.min() < 1.2
    assert g[p.matrix // 2, p.matrix // 2] > g[0, 0]
    w = window_2d(p, np.fft.fftfreq(p.matrix, 1.0 / p.matrix).round())
    assert (w.sum(axis=1) > 0).sum() == pytest.approx(0.8 * p.matrix, abs=1)  # fewer y lines
    assert (w.sum(axis=0) > 0).all()  # every readout column


def test_protocol_lists_and_bad_names() -> None:
    assert expand("default,random:3-5") == ["default", "random:3", "random:4", "random:5"]
    with pytest.raises(MrisrError, match="random:SEED"):
        expand("random:abc")
    with pytest.raises(MrisrError, match="is empty"):
        expand("random:5-3")
    with pytest.raises(MrisrError, match="unknown demo protocol 'x'"):
        build_demo_dataset("/nonexistent", protocol="x")
