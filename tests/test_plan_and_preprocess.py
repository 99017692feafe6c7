"""Fingerprint numbers, plans content, preprocessing geometry, idempotence, resumability."""

import hashlib
import json
import time

import numpy as np
import pytest
import SimpleITK as sitk
from synthetic import make_scan, write_dataset

from mrisr.cli.plan_and_preprocess import main
from mrisr.imageio.sitk_io import Geometry
from mrisr.plans import Plans
from mrisr.preprocessing import preprocessor, storage
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import atomic_path, load_json


def pre_dir(env):
    return env["mrisr_preprocessed"] / "Dataset001_Synth"


@pytest.fixture
def planned(mrisr_env, capsys):
    write_dataset(mrisr_env["mrisr_raw"], n_pairs=3, hr_only=1, lr_only=1)
    assert main(["-d", "1", "-np", "1", "--no-select"]) == 0
    out = capsys.readouterr().out
    return mrisr_env, out


def test_fingerprint_numbers(planned):
    env, _ = planned
    fp = load_json(pre_dir(env) / "dataset_fingerprint.json")
    cases = {c["name"]: c for c in fp["cases"]}
    assert len(cases) == 5
    pair = cases["case_000"]
    assert pair["hr"]["inplane_spacing"] == pytest.approx([1.25, 1.25])
    assert pair["hr"]["through_plane_spacing"] == pytest.approx(2.7)
    assert pair["hr"]["through_plane_axis"] == 2
    assert pair["hr"]["shape_zyx"] == [6, 64, 72]
    assert pair["hr"]["extent_mm"] == pytest.approx([90.0, 80.0, 16.2])
    assert pair["lr"]["inplane_spacing"] == pytest.approx([2.7, 2.7])
    assert pair["pair"]["inplane_ratio"] == pytest.approx([2.16, 2.16])
    assert pair["pair"]["through_plane_ratio"] == pytest.approx(1.0)
    assert pair["pair"]["slices_match"] is True
    assert pair["pair"]["overlap"] == pytest.approx(1.0, abs=0.02)
    assert pair["pair"]["scale"] == 2
    # the phantom's foreground is 100 +- blobs: the 99.5th percentile sits well above 100
    assert 100 < pair["hr"]["intensity"]["p99_5"] < 250
    # LR was written with noise sd 4 (HR: 1): the estimate must see it
    assert 2.0 < cases["case_000"]["lr"]["noise_sigma"] < 6.0
    assert cases["case_003"]["lr"] is None and cases["case_003"]["pair"] is None  # HR only
    assert cases["case_004"]["hr"] is None  # LR only
    assert len(pair["pair"]["gaussian_fit_ssim"]) == len(fp["gaussian_fit_sigmas"])


def test_plans_content(planned):
    env, out = planned
    plans = Plans.load(pre_dir(env) / "mrisrPlans.json")
    assert plans.scale == 2
    assert plans.hr_spacing == pytest.approx(1.25)
    assert plans.lr_spacing == pytest.approx(2.5)
    assert set(plans.configuration_names) == {
        "dsgan_edsr",
        "dsgan_paper_edsr",
        "kspace_edsr",
        "gaussian_edsr",
        "zerofill_edsr",
        "dsn_edsr",
        "bicubic",
    }
    dsgan = plans.configuration("dsgan_edsr").degradation
    assert dsgan["name"] == "dsgan" and dsgan["kernel_mode"] == "per_slice"
    assert (dsgan["hr_crop"], dsgan["lr_crop"], dsgan["iterations"]) == (64, 26, 3000)
    assert dsgan["schedule"]["bicubic_threshold"] == pytest.approx(0.1)
    # inheritance: gaussian_edsr inherits the EDSR section, replaces the degradation
    g = plans.configuration("gaussian_edsr")
    assert g.sr == plans.configuration("dsgan_edsr").sr
    assert g.degradation["name"] == "gaussian" and g.degradation["fitted"] is True
    # LR was simulated with a 1.5 mm Gaussian: ~1.2 HR px plus pixel integration
    assert 0.8 <= g.degradation["sigma"] <= 1.6
    zf = plans.configuration("zerofill_edsr").degradation
    assert zf["keep_fraction"] == [0.5, 0.5]
    assert plans.configuration("bicubic").requires_training is False
    sr = plans.configuration("dsgan_edsr").sr
    assert sr["lr_patch"] * 2 == sr["hr_patch"]
    assert sr["lr_patch"] <= 32  # the LR scans are only 32 px high after resampling to 2.5 mm
    assert (sr["num_blocks"], sr["num_features"]) == (16, 64)
    assert plans.denoising["method"] == "nlm" and plans.denoising["h"] > 0
    with pytest.raises(MrisrError, match="valid names: dsgan_edsr"):
        plans.configuration("nope")
    # the printed summary explains the decisions
    for s in ("x2", "2.5 mm", "per_slice", "Gaussian sigma", "NLM", "why:"):
        assert s in out


def test_one_registration_per_pair(planned, monkeypatch):
    """The fingerprint registers each pair once; preprocessing applies that transform, and
    the plans record the real LR spacing the predictor's warning compares inputs with."""
    env, _ = planned
    fp = load_json(pre_dir(env) / "dataset_fingerprint.json")
    plans = Plans.load(pre_dir(env) / "mrisrPlans.json")
    assert plans.real_lr_spacing == pytest.approx(2.7)
    for c in fp["cases"]:
        props = load_json(pre_dir(env) / "mrisrPlans_preprocessed" / f"{c['name']}.json")
        if c["pair"] is None:
            assert "registration_to_hr" not in (props.get("lr") or {})
            continue
        reg, used = c["pair"]["registration"], props["lr"]["registration_to_hr"]
        assert used["parameters"] == reg["parameters"]
        assert used["center"] == reg["fixed_parameters"][:3]
    # preprocessing again from the kept fingerprint registers nothing
    monkeypatch.setattr(preprocessor, "rigid_register", lambda *a: pytest.fail("registered"))
    assert main(["-d", "1", "-np", "1", "--no-select", "--no-time-estimate"]) == 0
    for f in (pre_dir(env) / "mrisrPlans_preprocessed").glob("*.json"):
        f.unlink()  # the case is redone
    assert main(["-d", "1", "-np", "1", "--no-select", "--no-time-estimate"]) == 0


def test_kernel_mode_follows_the_data(mrisr_env, capsys):
    ds = write_dataset(mrisr_env["mrisr_raw"], n_pairs=2)
    # shift the LR slices by half a slice: pairs no longer match slice by slice
    for f in (ds / "imagesLR").iterdir():
        img = sitk.ReadImage(str(f))
        o = list(img.GetOrigin())
        o[2] += 1.35
        img.SetOrigin(o)
        sitk.WriteImage(img, str(f))
    assert main(["-d", "Dataset001_Synth", "-np", "1", "--no-select"]) == 0
    plans = Plans.load(pre_dir(mrisr_env) / "mrisrPlans.json")
    assert plans.configuration("dsgan_edsr").degradation["kernel_mode"] == "per_volume"


def test_unpaired_dataset_plans_per_dataset(mrisr_env, capsys):
    write_dataset(mrisr_env["mrisr_raw"], n_pairs=0, hr_only=2, lr_only=2)
    assert main(["-d", "1", "-np", "1", "--no-select"]) == 0
    plans = Plans.load(pre_dir(mrisr_env) / "mrisrPlans.json")
    assert plans.configuration("dsgan_edsr").degradation["kernel_mode"] == "per_dataset"
    assert plans.scale == 2
    g = plans.configuration("gaussian_edsr").degradation
    assert g["fitted"] is False and g["sigma"] == 1.5


def _centroid_physical(arr_zyx, geom: Geometry, frac=0.5):
    w = np.where(arr_zyx > frac * arr_zyx.max(), arr_zyx, 0.0)
    zz, yy, xx = np.indices(arr_zyx.shape)
    c = np.array([(xx * w).sum(), (yy * w).sum(), (zz * w).sum()]) / w.sum()
    return geom.index_to_physical(c)


def test_landmark_lands_at_the_same_physical_point(mrisr_env, capsys, monkeypatch):
    """LR with another origin, field of view and direction than HR: a bright landmark placed
    at a known physical point ends up at that point after preprocessing (< half an LR voxel).
    The headers' geometry alone: pair registration (tested in test_registration) is off."""
    from mrisr.planning.planners import DefaultPlanner

    monkeypatch.setattr(DefaultPlanner, "plan_registration", lambda self: False)
    ds = write_dataset(mrisr_env["mrisr_raw"], n_pairs=1)
    target = np.array([11.3, -7.9, 1.35])  # physical point (mm), on a slice plane
    th = np.deg2rad(25)
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1.0]])
    direction = (rot @ np.diag([-1.0, 1.0, 1.0])).ravel()  # rotated and mirrored
    lr = make_scan((44, 40, 6), (2.7, 2.7, 2.7), direction=direction, seed=0, noise=0.5)
    lr.SetOrigin(tuple(np.asarray(lr.GetOrigin()) + np.array([3.1, -2.2, 0.0])))
    # put a landmark: a small Gaussian blob at the target, in the LR's own voxels
    g = Geometry.of(lr)
    arr = sitk.GetArrayFromImage(lr)
    # slice planes: HR slices are at z = -6.75 + 2.7 k; keep the LR slices on them
    zz, yy, xx = np.indices(arr.shape)
    pts = g.index_to_physical(np.stack([xx, yy, zz], -1))
    d2 = ((pts[..., :2] - target[:2]) ** 2).sum(-1) + ((pts[..., 2] - target[2]) ** 2) * 100
    arr = arr + 2000.0 * np.exp(-d2 / (2 * 2.0**2))
    out = sitk.GetImageFromArray(arr.astype(np.float32))
    out.CopyInformation(lr)
    sitk.WriteImage(out, str(ds / "imagesLR" / "case_000.nii.gz"))
    hr = sitk.ReadImage(str(ds / "imagesHR" / "case_000.nii.gz"))
    # the LR slices coincide with the HR slices (the method is 2D)
    assert hr.GetOrigin()[2] == pytest.approx(out.GetOrigin()[2])

    assert main(["-d", "1", "-np", "1", "--no-select"]) == 0
    folder = pre_dir(mrisr_env) / "mrisrPlans_preprocessed"
    props = load_json(folder / "case_000.json")
    lr_work = Geometry.from_json(props["lr"]["working_geometry"])
    hr_work = Geometry.from_json(props["hr"]["working_geometry"])
    assert lr_work.spacing[:2] == pytest.approx((2.5, 2.5))
    assert hr_work.spacing[:2] == pytest.approx((1.25, 1.25))
    assert lr_work.direction == pytest.approx(hr_work.direction)
    assert lr_work.size[0] * 2 == hr_work.size[0] and lr_work.size[1] * 2 == hr_work.size[1]
    arr_lr = storage.load_array(folder / "case_000_lr.b2nd")
    z = int(np.argmax(arr_lr.reshape(arr_lr.shape[0], -1).max(1)))
    sl = np.zeros_like(arr_lr)
    sl[z] = arr_lr[z]
    found = _centroid_physical(sl, lr_work)
    assert found[2] == pytest.approx(target[2], abs=0.01)  # the landmark's slice plane
    assert np.linalg.norm(found[:2] - target[:2]) < 0.5 * 2.5
    # pixel-shuffle convention: LR pixel i covers HR pixels 2i, 2i+1
    p0 = lr_work.index_to_physical(np.zeros(3))
    h0 = hr_work.index_to_physical(np.array([0.5, 0.5, 0.0]))
    assert np.allclose(p0, h0, atol=1e-6)


def _digest(folder):
    h = {}
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h[str(f.relative_to(folder))] = (
                hashlib.sha1(f.read_bytes()).hexdigest(),
                f.stat().st_mtime_ns,
            )
    return h


def test_rerun_is_idempotent(planned, capsys, caplog):
    env, _ = planned
    before = _digest(pre_dir(env))
    time.sleep(0.01)
    assert main(["-d", "1", "-np", "1", "--no-select"]) == 0
    after = _digest(pre_dir(env))
    # same files, same content; preprocessed cases and the fingerprint are not rewritten
    assert before.keys() == after.keys()
    assert all(before[k][0] == after[k][0] for k in before)
    untouched = [
        k for k in before if k.startswith("mrisrPlans_preprocessed/") or "fingerprint" in k
    ]
    assert untouched and all(before[k][1] == after[k][1] for k in untouched)


def test_clean_recomputes(planned, capsys):
    env, _ = planned
    fp = pre_dir(env) / "dataset_fingerprint.json"
    m = fp.stat().st_mtime_ns
    assert main(["-d", "1", "-np", "1", "--no-select", "--clean"]) == 0
    assert fp.stat().st_mtime_ns != m


def test_failure_leaves_nothing_half_written_and_resumes(mrisr_env, capsys, monkeypatch):
    write_dataset(mrisr_env["mrisr_raw"], n_pairs=3)
    real = preprocessor._save_scan
    calls = {"n": 0}

    def flaky(files, key, scan, sampling):
        calls["n"] += 1
        if calls["n"] == 4:  # second case, LR part: crash mid-case
            raise KeyboardInterrupt
        return real(files, key, scan, sampling)

    monkeypatch.setattr(preprocessor, "_save_scan", flaky)
    assert main(["-d", "1", "-np", "1", "--no-select"]) == 130
    folder = pre_dir(mrisr_env) / "mrisrPlans_preprocessed"
    assert (folder / "case_000.json").is_file()
    assert not (folder / "case_001.json").exists()  # interrupted case is not marked done
    assert not list(folder.glob(".*tmp*"))  # no temporary leftovers
    monkeypatch.setattr(preprocessor, "_save_scan", real)
    m0 = (folder / "case_000_hr.b2nd").stat().st_mtime_ns
    assert main(["-d", "1", "-np", "1", "--no-select"]) == 0
    assert all((folder / f"case_00{i}.json").is_file() for i in range(3))
    assert (folder / "case_000_hr.b2nd").stat().st_mtime_ns == m0  # done case reused


def test_atomic_path_keeps_previous_file_on_error(tmp_path):
    f = tmp_path / "x.json"
    f.write_text('{"ok": 1}')
    with pytest.raises(MrisrError, match=r"x.json: cannot write \(disk full\)"):  # one line
        with atomic_path(f) as tmp:
            tmp.write_text('{"half')
            raise RuntimeError("disk full")
    assert json.loads(f.read_text()) == {"ok": 1}
    assert list(tmp_path.iterdir()) == [f]


def test_2d_images_are_one_slice_volumes(mrisr_env, capsys):
    ds = write_dataset(mrisr_env["mrisr_raw"], n_pairs=2)
    for sub, size, sp in (
        ("imagesHR", (72, 64, 1), (1.25, 1.25, 2.7)),
        ("imagesLR", (36, 32, 1), (2.7, 2.7, 2.7)),
    ):
        for i in range(2):
            img3 = make_scan(size, sp, seed=i)
            img2 = img3[:, :, 0]
            sitk.WriteImage(img2, str(ds / sub / f"case_00{i}.nii.gz"))
    assert main(["-d", "1", "-np", "1", "--no-select"]) == 0
    folder = pre_dir(mrisr_env) / "mrisrPlans_preprocessed"
    assert storage.load_array(folder / "case_000_lr.b2nd").shape[0] == 1
    assert storage.load_array(folder / "case_000_hr.b2nd").shape[1:] == (64, 72)
