"""The embedded demo dataset: layout, geometry, realism of the LR scans, re-runnability."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from skimage.filters import threshold_otsu

from mrisr.dataset import demo
from mrisr.dataset.demo import build_demo_dataset
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import load_json

NUM_PAIRS = 2
NUM_TEST_PAIRS = 1


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    return build_demo_dataset(root, seed=3, num_pairs=NUM_PAIRS, num_test_pairs=NUM_TEST_PAIRS)


def _pairs(dataset: Path) -> list[tuple[str, sitk.Image, sitk.Image]]:
    out = []
    for hr_dir, lr_dir in (("imagesHR", "imagesLR"), ("imagesHRTs", "imagesLRTs")):
        for hr_file in sorted((dataset / hr_dir).glob("*.nii.gz")):
            lr_file = dataset / lr_dir / hr_file.name
            if lr_file.exists():
                case = hr_file.name[: -len(".nii.gz")]
                out.append((case, sitk.ReadImage(str(hr_file)), sitk.ReadImage(str(lr_file))))
    return out


def _arr(img: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(img).astype(np.float64)


def _brain(img: sitk.Image) -> np.ndarray:
    a = _arr(img)
    return a > threshold_otsu(a)


def _centroid(img: sitk.Image) -> np.ndarray:
    idx = np.argwhere(_brain(img)).mean(axis=0)[::-1]  # (x, y, z) continuous index
    return np.array(img.TransformContinuousIndexToPhysicalPoint(idx.tolist()))


def _signal(img: sitk.Image) -> float:
    a = _arr(img)
    return float(np.median(a[_brain(img)]))


def _background(img: sitk.Image, distance_mm: float = 10.0) -> np.ndarray:
    """Pixels farther than ``distance_mm`` from the brain (pure noise)."""
    sx, _, sz = img.GetSpacing()
    return ndimage.distance_transform_edt(~_brain(img), sampling=(sz, sx, sx)) > distance_mm


def test_layout_and_dataset_json(dataset: Path) -> None:
    assert dataset.name == "Dataset001_MNIDemo"
    meta = load_json(dataset / "dataset.json")
    assert meta["name"] == "MNIDemo"
    assert meta["modality"] == "T1"
    assert meta["file_ending"] == ".nii.gz"
    assert meta["description"]
    assert meta["numTraining"] == NUM_PAIRS + 2

    def names(folder: str) -> set[str]:
        return {p.name[: -len(".nii.gz")] for p in (dataset / folder).glob("*.nii.gz")}

    hr, lr = names("imagesHR"), names("imagesLR")
    assert len(hr & lr) == NUM_PAIRS
    assert len(hr - lr) == 1 and len(lr - hr) == 1  # one HR-only, one LR-only session
    assert names("imagesHRTs") == names("imagesLRTs")
    assert len(names("imagesHRTs")) == NUM_TEST_PAIRS
    assert not (names("imagesHRTs") & (hr | lr))  # held out
    assert all(n.startswith("demo_") for n in hr | lr)
    # nothing half-written left beside the dataset
    assert [p.name for p in dataset.parent.iterdir()] == [dataset.name]


def test_grids_spacing_slices_and_fov(dataset: Path) -> None:
    for case, hr, lr in _pairs(dataset):
        assert hr.GetSpacing() == pytest.approx((1.25, 1.25, 2.7), abs=1e-5), case
        assert lr.GetSpacing() == pytest.approx((2.7, 2.7, 2.7), abs=1e-5), case
        assert 14 <= hr.GetSize()[2] <= 16
        assert hr.GetSize()[2] == lr.GetSize()[2]
        assert hr.GetDirection() == pytest.approx(lr.GetDirection())
        # same through-plane positions for every slice of the pair
        z_hr = [hr.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in range(hr.GetSize()[2])]
        z_lr = [lr.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in range(lr.GetSize()[2])]
        assert z_hr == pytest.approx(z_lr, abs=1e-3)
        # LR field of view 5-10 % larger than HR's (paper: 430 vs 400 mm), same centre
        fov_hr = np.array(hr.GetSize()[:2]) * 1.25
        fov_lr = np.array(lr.GetSize()[:2]) * 2.7
        assert np.all(fov_lr > 1.05 * fov_hr) and np.all(fov_lr < 1.10 * fov_hr)
        assert np.all(fov_hr >= 180)  # the brain fits
        centre = [(s - 1) / 2 for s in hr.GetSize()]
        centre_lr = [(s - 1) / 2 for s in lr.GetSize()]
        assert np.allclose(
            hr.TransformContinuousIndexToPhysicalPoint(centre),
            lr.TransformContinuousIndexToPhysicalPoint(centre_lr),
            atol=1e-3,
        )


def test_pair_aligned_in_physical_space_up_to_recorded_motion(dataset: Path) -> None:
    info = load_json(dataset / demo.PARAMS_FILE)["cases"]
    for case, hr, lr in _pairs(dataset):
        c_hr, c_lr = _centroid(hr), _centroid(lr)
        assert np.linalg.norm(c_hr - c_lr) < 4.0, case  # only the small inter-scan motion
        motion = info[case]["lr_motion"]
        predicted = np.array(motion["lr_to_hr_matrix"]) @ c_lr + np.array(
            motion["lr_to_hr_translation_mm"]
        )
        assert np.linalg.norm(predicted[:2] - c_hr[:2]) < 1.0, case
        assert abs(motion["in_plane_rotation_deg"]) <= 3.0
        assert np.all(np.abs(motion["shift_mm"]) <= [2.0, 2.0, 0.5])


def test_lr_is_genuinely_low_resolution(dataset: Path) -> None:
    """LR brought onto the HR grid lacks the fine detail HR has (beyond LR's Nyquist)."""

    def high_frequency_fraction(a: np.ndarray, spacing: float, cutoff: float) -> float:
        power = np.abs(np.fft.fft2(a - a.mean())) ** 2
        fy = np.fft.fftfreq(a.shape[-2], spacing)
        fx = np.fft.fftfreq(a.shape[-1], spacing)
        radius = np.hypot(*np.meshgrid(fy, fx, indexing="ij"))
        return float(power[..., radius > cutoff].sum() / power.sum())

    for case, hr, lr in _pairs(dataset):
        lr_on_hr = sitk.Resample(lr, hr, sitk.Transform(), sitk.sitkBSpline)
        h = _arr(hr) / _signal(hr)
        u = _arr(lr_on_hr) / _signal(lr)
        nyquist_lr = 1 / (2 * 2.7)  # 0.185 cycles/mm
        hf_hr = high_frequency_fraction(h, 1.25, 1.2 * nyquist_lr)
        hf_lr = high_frequency_fraction(u, 1.25, 1.2 * nyquist_lr)
        assert hf_lr < 0.2 * hf_hr, case


def test_lr_noise_higher_than_hr_and_coloured_by_raw_filter(dataset: Path) -> None:
    for case, hr, lr in _pairs(dataset):
        rel = {}
        corr = {}
        for kind, img in (("HR", hr), ("LR", lr)):
            a = _arr(img)
            bg = _background(img)
            assert bg.sum() > 1000
            rel[kind] = a[bg].std() / _signal(img)
            # neighbour correlation of background noise along x
            x = a - a[bg].mean()
            both = bg[:, :, 1:] & bg[:, :, :-1]
            corr[kind] = (x[:, :, 1:] * x[:, :, :-1])[both].mean() / (x[bg] ** 2).mean()
        assert rel["LR"] > 2.5 * rel["HR"], (case, rel)
        # the Hamming raw-data filter correlates LR noise; HR's mild filter barely does
        assert corr["LR"] > 0.25 and corr["HR"] < 0.15, (case, corr)


def test_intensities_positive_float32_with_scan_specific_scale(dataset: Path) -> None:
    ratios = []
    for _, hr, lr in _pairs(dataset):
        for img in (hr, lr):
            assert img.GetPixelID() == sitk.sitkFloat32
            assert _arr(img).min() >= 0
        ratios.append(_signal(hr) / _signal(lr))
    assert all(abs(r - 1) > 0.05 for r in ratios)  # LR and HR scales differ
    assert max(ratios) / min(ratios) > 1.05  # and differently per session


def test_rerun_returns_existing_dataset_without_rebuilding(dataset: Path, monkeypatch) -> None:
    before = {p: p.stat().st_mtime_ns for p in dataset.rglob("*")}

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt although the dataset was complete")

    monkeypatch.setattr(demo, "_build_into", fail)
    again = build_demo_dataset(
        dataset.parent, seed=3, num_pairs=NUM_PAIRS, num_test_pairs=NUM_TEST_PAIRS
    )
    assert again == dataset
    assert {p: p.stat().st_mtime_ns for p in dataset.rglob("*")} == before
    # other parameters on an existing dataset: a clear error, not a silent reuse
    with pytest.raises(MrisrError, match="overwrite"):
        build_demo_dataset(dataset.parent, seed=4, num_pairs=NUM_PAIRS, num_test_pairs=1)
    # the same id under another name is refused
    with pytest.raises(MrisrError, match="already used"):
        build_demo_dataset(dataset.parent, name="Other")


def test_cli_on_existing_dataset(dataset: Path, capsys) -> None:
    rc = demo.main(
        [str(dataset.parent), "--seed", "3", "--num-cases", str(NUM_PAIRS), "--num-test-pairs",
         str(NUM_TEST_PAIRS)]
    )  # fmt: skip
    assert rc == 0
    assert str(dataset) in capsys.readouterr().out
    assert demo.main([str(dataset.parent), "-d", "1000"]) == 2
    assert "dataset id" in capsys.readouterr().err


def test_deterministic_for_a_seed_and_overwrite_rebuilds(tmp_path: Path) -> None:
    kwargs = dict(num_pairs=1, num_test_pairs=0)
    a = build_demo_dataset(tmp_path / "a", seed=7, **kwargs)
    b = build_demo_dataset(tmp_path / "b", seed=7, **kwargs)
    c = build_demo_dataset(tmp_path / "c", seed=8, **kwargs)
    files = sorted(p.relative_to(a) for p in a.rglob("*.nii.gz"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.nii.gz"))
    for f in files:
        x, y = sitk.ReadImage(str(a / f)), sitk.ReadImage(str(b / f))
        assert np.array_equal(sitk.GetArrayFromImage(x), sitk.GetArrayFromImage(y)), f
        assert x.GetOrigin() == y.GetOrigin()
        z = sitk.ReadImage(str(c / f))
        assert not np.array_equal(sitk.GetArrayFromImage(x), sitk.GetArrayFromImage(z)), f

    f = a / files[0]
    inode = f.stat().st_ino
    build_demo_dataset(tmp_path / "a", seed=7, overwrite=True, **kwargs)
    assert f.stat().st_ino != inode  # rebuilt
    assert np.array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(f))),
        sitk.GetArrayFromImage(sitk.ReadImage(str(b / files[0]))),
    )
    assert [p.name for p in (tmp_path / "a").iterdir()] == [a.name]


def test_incomplete_dataset_is_rebuilt(tmp_path: Path) -> None:
    ds = build_demo_dataset(tmp_path, num_pairs=1, num_test_pairs=0)
    victim = next((ds / "imagesLR").glob("*.nii.gz"))
    victim.unlink()
    assert build_demo_dataset(tmp_path, num_pairs=1, num_test_pairs=0) == ds
    assert victim.is_file()


def test_interrupted_build_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    calls = []
    original = demo.simulate_case

    def crash_on_second_case(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(demo, "simulate_case", crash_on_second_case)
    with pytest.raises(KeyboardInterrupt):
        build_demo_dataset(tmp_path, num_pairs=1, num_test_pairs=0)
    assert list(tmp_path.iterdir()) == []


def test_missing_nilearn_is_a_one_line_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "nilearn", None)  # makes nilearn unimportable
    with pytest.raises(MrisrError) as err:
        build_demo_dataset(tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert "pip install mrisr[demo]" in message and "pip install nilearn" in message
    assert list(tmp_path.iterdir()) == []


def test_second_protocol_is_a_different_acquisition(tmp_path: Path) -> None:
    """--protocol fermi_pf: 3 mm LR pixels, Fermi filter, partial Fourier, recorded."""
    from mrisr.dataset.demo import main
    from mrisr.dataset.demo_acquisition import LR_PROTOCOLS
    from mrisr.dataset.demo_acquisition import window_2d as _window_2d

    assert (
        main([str(tmp_path), "--protocol", "fermi_pf", "--num-cases", "1", "--num-test-pairs", "0"])
        == 0
    )
    folder = tmp_path / "Dataset001_MNIDemo"
    lr = sitk.ReadImage(str(folder / "imagesLR" / "demo_000.nii.gz"))
    assert lr.GetSpacing()[:2] == pytest.approx((3.0, 3.0)) and lr.GetSize()[:2] == (72, 72)
    params = json.loads((folder / "demo_acquisition.json").read_text())
    assert params["build"]["protocol"] == "fermi_pf" and params["lr_protocol"] == "fermi_pf"
    p = LR_PROTOCOLS["fermi_pf"]
    w = _window_2d(p, np.fft.fftfreq(p.matrix, 1.0 / p.matrix).round())
    rows_acquired = (w.sum(axis=1) > 0).sum()
    assert rows_acquired == round(p.partial_fourier * p.matrix)  # 5/8 of the lines
    assert (w.sum(axis=0) > 0).all()  # every readout column
    assert w[0, 0] == pytest.approx(1.0, abs=1e-3) and w[0, p.matrix // 2] < 0.1  # radial Fermi
    with pytest.raises(MrisrError, match="unknown demo protocol"):
        build_demo_dataset(tmp_path / "x", protocol="nope")
