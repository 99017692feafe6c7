"""Issue 12: no fault loses data, no bad input gets a traceback or silent acceptance.

One test (or one parametrised table) per class of fault. Each asserts the exit code, the
one-line message, and that inputs and earlier outputs are unchanged. Full and read-only
folders come from :mod:`faults` (a real tmpfs where root, patched writers elsewhere).
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from cli_runs import DS, MODEL, ROOTS, one_line, predict, run
from cli_runs import random_checkpoint as _checkpoint
from faults import full_folder, modes, read_only_folder, tree_state
from synthetic import make_scan, write_dataset

from mrisr.cli import evaluate as evaluate_cli
from mrisr.cli import find_best_configuration as best_cli
from mrisr.cli import plan_and_preprocess as plan_cli
from mrisr.cli import predict as predict_cli
from mrisr.cli import train as train_cli
from mrisr.preprocessing import storage
from mrisr.training.checkpointing import save_checkpoint
from mrisr.utilities.cli_support import run_command
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import atomic_path, save_json, save_npy, write_bytes_atomic


# ================================================================ data loss and security
@pytest.mark.parametrize("mode", modes())
def test_full_disk_during_predict_leaves_no_corrupt_output(env, mode, monkeypatch):
    """1. ITK's silent short write is caught before the rename; --continue redoes it."""
    out = env["root"] / "out"
    out.mkdir()
    (out / "case_000.nii.gz").write_bytes(b"earlier output")  # must survive the failure
    before = tree_state(env["root"] / "lr_in")
    with full_folder(out, mode, monkeypatch, free=8192):
        code, stdout, err = predict(env, out)
        assert code == 2, err
        one_line(err, "mrisr_predict", "out/", "free")
        finished = [p for p in out.glob("*.nii.gz") if p.name != "case_000.nii.gz"]
    assert (out / "case_000.nii.gz").read_bytes() == b"earlier output"
    assert not finished  # no truncated file under a final name
    assert not list(out.glob(".*tmp*"))  # no temporary left behind
    assert tree_state(env["root"] / "lr_in") == before
    # with space again, --continue treats the unreadable output as missing
    code, stdout, err = predict(env, out, "--continue")
    assert code == 0, err and "3 scan(s)" in stdout
    assert "incomplete or unreadable: redoing it" in err
    assert sitk.ReadImage(str(out / "case_000.nii.gz")).GetSize()[0] > 40


WRITERS = {
    "json": lambda p: save_json({"a": 1}, p / "x.json"),
    "bytes": lambda p: write_bytes_atomic(p / "x.txt", b"x" * 50_000),
    "blosc2": lambda p: storage.save_array(p / "x.b2nd", np.random.rand(4, 64, 64)),
    "checkpoint": lambda p: save_checkpoint(_checkpoint(2), p / "x.pth"),
    "nifti": lambda p: __import__("mrisr.imageio.sitk_io", fromlist=["write_scan"]).write_scan(
        make_scan((64, 64, 8), (1.0, 1.0, 2.0), noise=5.0), p / "x.nii.gz"
    ),
    "png": lambda p: _png(p / "x.png"),
    "npy": lambda p: save_npy(p / "x.npy", np.random.rand(64, 64)),
}


def _png(path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    plt.imshow(np.random.rand(64, 64))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


@pytest.mark.parametrize("mode", modes())
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_every_writer_on_a_full_or_read_only_folder(tmp_path, writer, mode, monkeypatch):
    """1. JSON, bytes, blosc2, checkpoints, NIfTI, PNG: a one-line error, the earlier file
    of the name unchanged, no temporary left."""
    for kind, ctx in (("full", full_folder), ("read-only", read_only_folder)):
        folder = tmp_path / kind
        folder.mkdir()
        earlier = {
            f"x{e}": b"earlier"
            for e in (".json", ".txt", ".b2nd", ".pth", ".nii.gz", ".png", ".npy")
        }
        for name, data in earlier.items():
            (folder / name).write_bytes(data)
        with ctx(folder, mode, monkeypatch) as f:
            with pytest.raises(MrisrError) as e:
                WRITERS[writer](f)
        msg = str(e.value)
        assert "\n" not in msg and str(folder) in msg, msg
        assert "incomplete" in msg or "cannot write" in msg, msg
        assert tree_state(folder) == earlier, kind


def test_writes_respect_the_umask(tmp_path):
    """Smaller promises: atomically written files get 0o666 & ~umask, not mkstemp's 0600."""
    for mask, want in ((0o022, 0o644), (0o002, 0o664), (0o077, 0o600)):
        old = os.umask(mask)
        try:
            save_json({"a": 1}, tmp_path / f"u{mask}.json")
        finally:
            os.umask(old)
        assert (tmp_path / f"u{mask}.json").stat().st_mode & 0o777 == want


@pytest.mark.parametrize(
    "layout",
    ["pre=raw", "pre inside raw", "raw inside pre", "results inside pre", "results=raw"],
)
def test_overlapping_roots_are_refused(tmp_path, monkeypatch, layout):
    """2. --clean never deletes raw scans; the raw dataset.json is never rewritten."""
    raw = tmp_path / "raw"
    pre, res = {
        "pre=raw": (raw, tmp_path / "res"),
        "pre inside raw": (raw / "pre", tmp_path / "res"),
        "raw inside pre": (tmp_path, tmp_path / "res"),
        "results inside pre": (tmp_path / "pre", tmp_path / "pre" / "res"),
        "results=raw": (tmp_path / "pre", raw),
    }[layout]
    write_dataset(raw, n_pairs=2)
    for k, v in zip(ROOTS, (raw, pre, res)):
        monkeypatch.setenv(k, str(v))
    before = tree_state(raw)
    code, _, err = run(plan_cli, "-d", "1", "-np", "1", "--no-select", "--clean")
    assert code == 2
    one_line(err, "mrisr_plan_and_preprocess", "must be separate folders")
    assert tree_state(raw) == before


@pytest.mark.parametrize("var", ROOTS)
def test_a_root_that_is_a_file(env, monkeypatch, var):
    """Tracebacks: a root that is a file."""
    f = env["root"] / "afile"
    f.write_text("not a folder")
    monkeypatch.setenv(var, str(f))
    code, _, err = run(plan_cli, "-d", "1", "-np", "1", "--no-select")
    assert code == 2
    one_line(err, "mrisr_plan_and_preprocess", f"{var}=", "is a file")
    assert f.read_text() == "not a folder"


@pytest.mark.parametrize(
    "cli,args",
    [
        (plan_cli, ["-d", "Dataset001_Synth/../../elsewhere/Dataset001_Synth", "--clean"]),
        (plan_cli, ["-d", "Dataset001_Synth/.."]),
        (train_cli, ["0", "-d", "1", "-c", "bicubic", "-p", "../../elsewhere/x"]),
        (predict_cli, ["-c", "bicubic", "-p", "../x", "-i", "IN", "-o", "OUT"]),
        (best_cli, ["-d", "1", "-tr", "../../x"]),
    ],
)
def test_path_traversal_is_refused(env, cli, args):
    """3. Dataset, plans and trainer names cannot leave their roots."""
    elsewhere = env["root"] / "elsewhere" / DS
    elsewhere.mkdir(parents=True)
    (elsewhere / "keep.txt").write_text("keep")
    args = [
        str(env["in"]) if a == "IN" else str(env["root"] / "o") if a == "OUT" else a for a in args
    ]
    before = {k: tree_state(env[k]) for k in ROOTS}
    code, _, err = run(cli, *args)
    assert code == 2, err
    prog = cli.__name__.rsplit(".", 1)[1]
    one_line(err, f"mrisr_{prog}")
    assert (elsewhere / "keep.txt").read_text() == "keep"
    assert {k: tree_state(env[k]) for k in ROOTS} == before


def test_evaluate_output_must_be_a_json_that_is_not_an_input(env, tmp_path):
    """4. -o PRED/case.nii.gz no longer overwrites a scan with JSON."""
    pred = env["raw"] / "imagesLR"
    ref = env["raw"] / "imagesHR"
    before = tree_state(env["raw"])
    for o, msg in (
        (pred / "case_000.nii.gz", "ending in .json"),
        (tmp_path / "summary.txt", "ending in .json"),
        (pred, "is a folder"),
    ):
        code, _, err = run(evaluate_cli, "-ref", ref, "-pred", pred, "-o", o, "-np", "1")
        assert code == 2
        one_line(err, "mrisr_evaluate", msg)
    assert tree_state(env["raw"]) == before


def test_changed_raw_scan_is_preprocessed_again(env):
    """5. Cases are keyed on their raw files' content hash: a changed scan is redone."""
    pre = env["mrisr_preprocessed"] / DS / "mrisrPlans_preprocessed"
    times = {p.name: p.stat().st_mtime_ns for p in pre.iterdir()}
    code, _, err = run(plan_cli, "-d", "1", "-np", "1", "--no-select")
    assert code == 0, err
    assert {p.name: p.stat().st_mtime_ns for p in pre.iterdir()} == times  # nothing changed
    lr = env["raw"] / "imagesLR" / "case_001.nii.gz"
    old = storage.load_array(pre / "case_001_lr.b2nd")
    img = make_scan((36, 32, 6), (2.7, 2.7, 2.7), seed=17, noise=4.0, blur_mm=1.5)
    sitk.WriteImage(img, str(lr))
    code, _, err = run(plan_cli, "-d", "1", "-np", "1", "--no-select")
    assert code == 0, err
    assert "case_001: raw scan(s) changed since preprocessing" in err
    after = {p.name: p.stat().st_mtime_ns for p in pre.iterdir()}
    assert after["case_001.json"] != times["case_001.json"]
    assert after["case_000.json"] == times["case_000.json"]  # unchanged cases are kept
    assert not np.allclose(storage.load_array(pre / "case_001_lr.b2nd"), old)


def test_predict_continue_with_other_arguments_is_refused(env):
    """6. --continue never keeps another configuration's outputs."""
    out = env["root"] / "out"
    code, _, err = run(predict_cli, "-i", env["in"], "-o", out, "-c", "bicubic")
    assert code == 0, err
    before = tree_state(out)
    code, _, err = predict(env, out, "--continue")
    assert code == 2
    one_line(err, "mrisr_predict", "configuration 'bicubic'", "drop --continue")
    assert tree_state(out) == before
    code, _, err = predict(env, out)  # without --continue: every scan redone
    assert code == 0, err
    assert json.loads((out / "predict_args.json").read_text())["configuration"] == "gaussian_edsr"


@pytest.mark.parametrize(
    "change,msg",
    [
        ("nan", "NaN/Inf"),
        ("inf", "NaN/Inf"),
        ("huge", "out of range"),
        ("scale0", "scale=0 is out of range"),
        ("shape", "do not fit the network"),
        ("bool", "out of range"),
        ("unknown_key", "unknown key"),
    ],
)
def test_bad_checkpoints_are_refused(env, change, msg):
    """7 and tracebacks: non-finite weights, bogus network_args (a 1.4 TB allocation was
    attempted), shape mismatch, scale 0: one line, nothing written."""
    chk = env["mrisr_results"] / DS / MODEL / "fold_0" / "checkpoint_final.pth"
    state = _checkpoint(2)
    args = dict(state["network_args"])
    if change in ("nan", "inf"):
        w = next(iter(state["network"]))
        state["network"][w] = torch.full_like(state["network"][w], float(change))
    elif change == "huge":
        args["num_features"] = 600_000
    elif change == "scale0":
        args["scale"] = 0
    elif change == "shape":
        args["num_features"] = 16
    elif change == "bool":
        args["num_blocks"] = True
    elif change == "unknown_key":
        args["kernel"] = 3
    state["network_args"] = args
    save_checkpoint(state, chk)
    out = env["root"] / "out"
    code, _, err = predict(env, out)
    assert code == 2
    one_line(err, "mrisr_predict", str(chk), msg)
    assert not out.exists()


def test_checkpoint_of_another_scale_is_refused(env):
    """A checkpoint whose network upsamples by another factor than the plans' scale (a model
    folder mixed up with another dataset's): one line naming both scales, nothing written."""
    plans = json.loads((env["mrisr_results"] / DS / MODEL / "plans.json").read_text())
    chk = env["mrisr_results"] / DS / MODEL / "fold_0" / "checkpoint_final.pth"
    save_checkpoint(_checkpoint(plans["scale"] + 1), chk)
    out = env["root"] / "out"
    code, _, err = predict(env, out)
    assert code == 2
    one_line(err, "mrisr_predict", str(chk), f"x{plans['scale'] + 1}", f"x{plans['scale']}")
    assert not out.exists()


def test_non_finite_prediction_is_not_written(env, monkeypatch):
    """7. Non-finite outputs are refused (e.g. a network overflowing in half precision)."""
    from mrisr.inference import predictor

    monkeypatch.setattr(
        predictor.SRPredictor,
        "predict_array",
        lambda self, lr, *args: np.full(
            (lr.shape[0], 2 * lr.shape[1], 2 * lr.shape[2]), np.nan, np.float32
        ),
    )
    out = env["root"] / "out"
    code, _, err = predict(env, out)
    assert code == 2
    one_line(err, "mrisr_predict", "NaN/Inf voxels")
    assert not list(out.glob("*.nii.gz"))


# ================================================================ tracebacks -> one line
@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("cli", ["train", "predict", "demo"])
def test_device_cuda_without_cuda_before_any_work(env, cli, tmp_path):
    from mrisr.cli import demo as demo_cli

    t0 = time.time()
    before = {k: tree_state(env[k]) for k in ROOTS}
    if cli == "train":
        code, _, err = run(train_cli, "0", "-d", "1", "-c", "dsgan_edsr", "--device", "cuda")
    elif cli == "predict":
        code, _, err = predict(env, tmp_path / "out", "--device", "cuda")
    else:
        code, _, err = run(demo_cli, "--workdir", tmp_path / "demo", "--device", "cuda")
    assert code == 2
    one_line(err, f"mrisr_{cli}", "no CUDA device", "--device cpu")
    assert time.time() - t0 < 5
    assert {k: tree_state(env[k]) for k in ROOTS} == before
    assert not (tmp_path / "out").exists() and not (tmp_path / "demo").exists()


@pytest.mark.parametrize(
    "edit,msg",
    [
        (lambda d: d.update(scale=0), "'scale' must be an integer"),
        (lambda d: d.update(scale=-2), "'scale' must be an integer"),
        (lambda d: d.update(scale="x"), "'scale' must be an integer"),
        (lambda d: d.update(scale=1.5), "'scale' must be an integer"),
        (lambda d: d.update(hr_inplane_spacing=0), "'hr_inplane_spacing' must be a positive"),
        (lambda d: d.pop("configurations"), "'configurations' must be"),
        (lambda d: d.update(through_plane_normal=[0, 0]), "'through_plane_normal'"),
        ("truncate", "not valid JSON"),
        ("list", "must hold a JSON object"),
    ],
)
def test_hand_edited_plans_are_validated_on_load(env, edit, msg):
    """One schema, one message, whichever command loads the plans."""
    plans = env["mrisr_preprocessed"] / DS / "mrisrPlans.json"
    data = json.loads(plans.read_text())
    if edit == "truncate":
        plans.write_text(plans.read_text()[:200])
    elif edit == "list":
        plans.write_text("[]")
    else:
        edit(data)
        plans.write_text(json.dumps(data))
    before = {k: tree_state(env[k]) for k in ROOTS}
    code, _, err = run(train_cli, "0", "-d", "1", "-c", "bicubic")
    assert code == 2
    one_line(err, "mrisr_train", str(plans), "invalid plans", msg, "mrisr_plan_and_preprocess")
    assert {k: tree_state(env[k]) for k in ROOTS} == before


@pytest.mark.parametrize("damage", ["garbage", "pickle", "truncated", "empty"])
def test_corrupt_b2nd_is_one_line(env, damage):
    import pickle

    f = env["mrisr_preprocessed"] / DS / "mrisrPlans_preprocessed" / "case_000_lr.b2nd"
    data = f.read_bytes()
    f.write_bytes(
        {
            "garbage": b"\x00garbage" * 50,
            "pickle": pickle.dumps({"evil": 1}),
            "truncated": data[: len(data) // 2],
            "empty": b"",
        }[damage]
    )
    with pytest.raises(MrisrError) as e:
        storage.load_array(f)
    assert "\n" not in str(e.value) and str(f) in str(e.value)
    assert "mrisr_plan_and_preprocess" in str(e.value)


@pytest.fixture
def validated(env):
    """Two validated configurations (bicubic, gaussian_edsr) of fold 0, as mrisr_train
    writes them (gaussian_edsr's copied from bicubic's, so no training is needed)."""
    from mrisr.training.train_api import run_training

    run_training(0, "1", "bicubic", "EDSRTrainer", progress=False)
    src = env["mrisr_results"] / DS / "EDSRTrainer__mrisrPlans__bicubic" / "fold_0" / "validation"
    dst = env["mrisr_results"] / DS / MODEL / "fold_0" / "validation"
    shutil.copytree(src, dst)
    s = json.loads((dst / "summary.json").read_text())
    s["configuration"] = "gaussian_edsr"
    s["cases"] = {c: {"gaussian_edsr": m["bicubic"], **m} for c, m in s["cases"].items()}
    (dst / "summary.json").write_text(json.dumps(s))
    return dst


def test_find_best_configuration_with_damaged_results(env, validated):
    """Corrupt summary.json: named; corrupt brisque.json: recomputed; deleted SR volume:
    named with the --val-only fix."""
    code, _, err = run(best_cli, "-d", "1")
    assert code == 0, err
    (validated / "brisque.json").write_text("{broken")
    code, _, err = run(best_cli, "-d", "1")
    assert code == 0 and "brisque.json is damaged: recomputing" in err
    assert isinstance(json.loads((validated / "brisque.json").read_text()), dict)
    sr = sorted(validated.glob("case_*.nii.gz"))[0]
    sr.unlink()
    code, _, err = run(best_cli, "-d", "1")
    assert code == 2
    one_line(err, "mrisr_find_best_configuration", "is missing", "--val-only")
    (validated / "summary.json").write_text('{"cases": ')
    code, _, err = run(best_cli, "-d", "1")
    assert code == 2
    one_line(err, "mrisr_find_best_configuration", "summary.json: not valid JSON", "--val-only")


def test_evaluate_tiny_prediction_is_one_line(tmp_path):
    """skimage's win_size ValueError on a 4x4 prediction becomes a one-line error."""
    for d in ("ref", "pred"):
        (tmp_path / d).mkdir()
        sitk.WriteImage(
            make_scan((4, 4, 3), (2.0, 2.0, 2.0), noise=3.0), str(tmp_path / d / "a.nii.gz")
        )
    before = tree_state(tmp_path)
    code, _, err = run(
        evaluate_cli, "-ref", tmp_path / "ref", "-pred", tmp_path / "pred", "-np", "1"
    )
    assert code == 2
    one_line(err, "mrisr_evaluate", "4x4 in-plane", "SSIM needs")
    assert tree_state(tmp_path) == before


def _nifti_patch(path: Path, edit) -> None:
    """Edit the header bytes of an uncompressed-in-memory NIfTI-1 file (gzip kept)."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    edit(raw)
    path.write_bytes(gzip.compress(bytes(raw)))


def _zero_spacing(b):
    pd = list(struct.unpack("<8f", b[76:108]))
    pd[1] = 0.0
    b[76:108] = struct.pack("<8f", *pd)


def _zero_dim(b):
    dims = list(struct.unpack("<8h", b[40:56]))
    dims[3] = 0
    b[40:56] = struct.pack("<8h", *dims)


def _shear(b):
    b[254:256] = struct.pack("<h", 1)  # sform_code 1 (qform kept: ITK would use it silently)
    b[280:328] = struct.pack("<12f", 2.7, 1.0, 0, 0, 0, 2.7, 0, 0, 0, 0, 2.7, 0)


@pytest.mark.parametrize(
    "damage,msg",
    [
        (_zero_spacing, "pixdim[1]=0"),
        (_zero_dim, "dim[3]=0"),
        (_shear, "sheared"),
        ("huge spacing", "exceeds 50 mm"),
    ],
)
def test_bad_headers_are_refused_before_anything_is_written(env, damage, msg):
    """Accepted silently before (zero spacing read as 1 mm, dim[3]=0, sheared sform) or a
    ValueError after plans were written (1000 mm spacing)."""
    shutil.rmtree(env["mrisr_preprocessed"] / DS)
    f = env["raw"] / "imagesLR" / "case_002.nii.gz"
    if damage == "huge spacing":
        sitk.WriteImage(make_scan((36, 32, 6), (1000.0, 1000.0, 2.7), noise=4.0), str(f))
    else:
        _nifti_patch(f, damage)
    before = tree_state(env["raw"])
    code, _, err = run(plan_cli, "-d", "1", "-np", "1", "--no-select")
    assert code == 2
    one_line(err, "mrisr_plan_and_preprocess", "imagesLR/case_002.nii.gz", msg)
    assert tree_state(env["raw"]) == before
    assert list(env["mrisr_preprocessed"].iterdir()) == []


def test_ctrl_c_in_workers_is_one_line_and_130(tmp_path):
    """Ctrl-C reaches the whole process group: workers stay quiet, the command says one
    line and exits 130."""
    ds = write_dataset(tmp_path / "raw", n_pairs=4)
    envv = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]), OMP_NUM_THREADS="1")
    for k, v in zip(ROOTS, ("raw", "pre", "res")):
        envv[k] = str(tmp_path / v)
    (tmp_path / "pre").mkdir()
    (tmp_path / "res").mkdir()
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mrisr.cli.plan_and_preprocess",
            "-d",
            "1",
            "-np",
            "2",
            "--no-select",
        ],
        env=envv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        text=True,
    )
    time.sleep(6)  # the spawned workers are running by now
    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=60)
    if p.returncode == 0:
        pytest.skip("finished before the interrupt")
    # a shell reports 130 either way: the command returns 130 or, about once in 40 runs
    # (seen when the interrupt lands as the workers finish and torch is being imported),
    # the interpreter ends by SIGINT after the command has said its line; an interrupt
    # wrapped by that import is still recognised (run_command follows the cause chain)
    assert p.returncode in (130, -signal.SIGINT), err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    # one line says so (a library's own exit log may follow it)
    said = [x for x in err.splitlines() if x.startswith("mrisr_plan_and_preprocess: interrupted")]
    assert len(said) == 1, err
    assert (ds / "dataset.json").is_file()


@pytest.mark.parametrize("mode", modes())
@pytest.mark.parametrize("kind", ["read-only", "full"])
@pytest.mark.parametrize("where", ["predict -o", "preprocessed", "results"])
def test_read_only_or_full_folders_are_one_line(env, mode, kind, where, monkeypatch):
    """Tracebacks: read-only or full output / preprocessed / results folders."""
    out = env["root"] / "out"
    folder = {
        "predict -o": out,
        "preprocessed": env["mrisr_preprocessed"],
        "results": env["mrisr_results"],
    }[where]
    folder.mkdir(exist_ok=True)
    if where == "preprocessed":  # a changed raw scan: the fingerprint and a case are redone
        lr = env["raw"] / "imagesLR" / "case_001.nii.gz"
        sitk.WriteImage(make_scan((36, 32, 6), (2.7, 2.7, 2.7), seed=9, noise=4.0), str(lr))
    before = tree_state(folder)
    ctx = read_only_folder if kind == "read-only" else full_folder
    with ctx(folder, mode, monkeypatch):
        if where == "predict -o":
            code, _, err = predict(env, out)
            prog = "mrisr_predict"
        elif where == "preprocessed":
            extra = ["--clean"] if kind == "read-only" else []  # --clean must not half-delete
            code, _, err = run(plan_cli, "-d", "1", "-np", "1", "--no-select", *extra)
            prog = "mrisr_plan_and_preprocess"
        else:
            code, _, err = run(train_cli, "0", "-d", "1", "-c", "bicubic")
            prog = "mrisr_train"
    assert code == 2, err
    fix = "make the folder writable" if kind == "read-only" else "free"
    one_line(err, prog, str(folder), fix)
    assert tree_state(folder) == before


def test_output_that_is_a_file(env):
    f = env["root"] / "out.nii.gz"
    f.write_bytes(b"precious")
    code, _, err = predict(env, f)
    assert code == 2
    one_line(err, "mrisr_predict", "is a file")
    assert f.read_bytes() == b"precious"


# ================================================================ accepted silently before
@pytest.mark.parametrize(
    "cli,args",
    [
        (plan_cli, ["-d", "1", "-np", "0"]),
        (plan_cli, ["-d", "1", "-np", "-3"]),
        (evaluate_cli, ["-ref", "a", "-pred", "b", "-np", "0"]),
        (train_cli, ["0", "-nw", "-1"]),
        (train_cli, ["0", "--num-gpus", "0"]),
        (predict_cli, ["-i", "a", "-o", "b", "--num-parts", "0"]),
        (predict_cli, ["-i", "a", "-o", "b", "--part-id", "-1"]),
    ],
)
def test_bad_counts_are_rejected(env, cli, args):
    code, _, err = run(cli, *args)
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert "error: argument" in last and "must be >=" in last, last
    assert "0..-1" not in err


def test_negative_intensities_warn(env):
    f = env["raw"] / "imagesHR" / "case_001.nii.gz"
    img = sitk.ReadImage(str(f)) - 50.0
    sitk.WriteImage(img, str(f))
    code, out, err = run(plan_cli, "-d", "1", "-np", "1", "--no-select", "--verify-only")
    assert code == 0, err
    assert "case_001.nii.gz: negative intensities" in err and "OK" in out


def test_too_small_scan_is_left_out_of_planning(env):
    plans_file = env["mrisr_preprocessed"] / DS / "mrisrPlans.json"
    before = json.loads(plans_file.read_text())["configurations"]["dsgan_edsr"]["sr"]
    lr = env["raw"] / "imagesLR" / "case_009.nii.gz"
    sitk.WriteImage(make_scan((6, 6, 6), (2.7, 2.7, 2.7), noise=4.0), str(lr))
    code, _, err = run(plan_cli, "-d", "1", "-np", "1", "--no-select")
    assert code == 0, err
    assert "left out of planning" in err and "case_009 (LR 6x6)" in err
    after = json.loads(plans_file.read_text())["configurations"]["dsgan_edsr"]["sr"]
    assert after["lr_patch"] == before["lr_patch"] > 2


def test_evaluate_pred_equals_ref_and_no_overlap_write_valid_json(env, tmp_path):
    """PSNR inf / SSIM NaN are written as null with a note: summary.json is strict JSON."""
    ref = env["raw"] / "imagesHR"
    pred = tmp_path / "pred"
    pred.mkdir()
    shutil.copy(ref / "case_000.nii.gz", pred / "case_000.nii.gz")
    far = make_scan((72, 64, 6), (1.25, 1.25, 2.7), origin=(5000.0, 5000.0, 5000.0), noise=1.0)
    sitk.WriteImage(far, str(pred / "case_001.nii.gz"))
    out = tmp_path / "summary.json"
    code, _, err = run(
        evaluate_cli, "-ref", ref, "-pred", pred, "-o", out, "-np", "1", "--no-registration"
    )
    assert code == 0, err
    text = out.read_text()
    assert "Infinity" not in text and "NaN" not in text
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    cases = {c["case"]: c for c in data["cases"]}
    same, far = cases["case_000.nii.gz"], cases["case_001.nii.gz"]
    assert same["psnr"] is None and "PSNR is infinite" in same["note"]
    assert far["psnr"] is None and far["ssim"] is None and "no physical overlap" in far["note"]
    assert data["mean"]["psnr"]["n"] == 0


def test_predict_output_inside_input_is_refused(env):
    before = tree_state(env["in"])
    code, _, err = predict(env, env["in"] / "sr")
    assert code == 2
    one_line(err, "mrisr_predict", "inside the input folder")
    assert tree_state(env["in"]) == before and not (env["in"] / "sr").exists()


def test_missing_validation_input_is_found_before_training(env):
    (env["raw"] / "imagesLR" / "case_000.nii.gz").unlink()
    (env["raw"] / "imagesLR" / "case_001.nii.gz").unlink()
    (env["raw"] / "imagesLR" / "case_002.nii.gz").unlink()
    t0 = time.time()
    code, _, err = run(train_cli, "0", "-d", "1", "-c", "gaussian_edsr", "-tr", "EDSRTrainer_tiny")
    assert code == 2
    one_line(err, "mrisr_train", "raw LR scan", "not found")
    assert time.time() - t0 < 10
    assert not (env["mrisr_results"] / DS / "EDSRTrainer_tiny__mrisrPlans__gaussian_edsr").exists()


# ================================================================ smaller promises
def test_bicubic_needs_no_results_folder(env, tmp_path):
    shutil.rmtree(env["mrisr_results"] / DS)
    out = tmp_path / "out"
    code, stdout, err = run(predict_cli, "-i", env["in"], "-o", out, "-c", "bicubic", "-d", "1")
    assert code == 0, err
    assert "3 scan(s)" in stdout and len(list(out.glob("*.nii.gz"))) == 3


def test_predict_ctrl_c_message_names_continue(capsys):
    def body():
        raise KeyboardInterrupt

    assert run_command("mrisr_predict", body) == 130
    assert "--continue" in capsys.readouterr().err


def test_ctrl_c_wrapped_by_an_import_is_still_one_line_and_130(capsys):
    """Ctrl-C while a module is being imported can surface as another exception whose
    cause is the KeyboardInterrupt (functools' __set_name__ during ``import torch``)."""

    def body():
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:
            raise RuntimeError("Error calling __set_name__") from e

    assert run_command("mrisr_plan_and_preprocess", body) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "mrisr_plan_and_preprocess: interrupted; re-run the same command to resume"
    ]

    def other():
        raise RuntimeError("a real bug")

    with pytest.raises(RuntimeError, match="a real bug"):
        run_command("mrisr_plan_and_preprocess", other)


def test_demo_foreign_dataset_hint_names_no_missing_option(tmp_path):
    from mrisr.dataset.demo import build_demo_dataset

    (tmp_path / "Dataset001_MNIDemo").mkdir()
    (tmp_path / "Dataset001_MNIDemo" / "mine.txt").write_text("mine")
    with pytest.raises(MrisrError) as e:
        build_demo_dataset(tmp_path, dataset_id=1)
    assert "--overwrite" not in str(e.value) and "--workdir" in str(e.value)
    assert (tmp_path / "Dataset001_MNIDemo" / "mine.txt").read_text() == "mine"


def test_errno_messages_name_the_fix(tmp_path):
    from mrisr.utilities.file_io import write_error

    for e, fix in (
        (errno.ENOSPC, "free disk space"),
        (errno.EROFS, "writable"),
        (errno.EACCES, "writable"),
    ):
        msg = str(write_error(tmp_path / "f", OSError(e, os.strerror(e))))
        assert fix in msg and str(tmp_path / "f") in msg
