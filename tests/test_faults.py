"""Issue 27: the fault classes that gave a traceback, a silent acceptance or a data loss.

One parametrised case per class: what an installed model zip may carry, damaged state files
and that the advised command repairs them, range checks of arguments and plans values, and
the last tracebacks. Each asserts the exit code, the one-line message naming the file, and
that nothing was installed, written or lost.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import zipfile

import numpy as np
import pytest
import torch
from cli_runs import DS, MODEL, one_line, predict, run
from cli_runs import random_checkpoint as _checkpoint
from faults import full_folder, modes, tree_state

from mrisr.cli import export_model as export_cli
from mrisr.cli import find_best_configuration as best_cli
from mrisr.cli import install_model as install_cli
from mrisr.cli import plan_and_preprocess as plan_cli
from mrisr.cli import predict as predict_cli
from mrisr.cli import train as train_cli
from mrisr.preprocessing import storage
from mrisr.training.checkpointing import save_checkpoint
from mrisr.utilities.cli_support import run_command
from mrisr.utilities.errors import MrisrError

TINY_MODEL = "Dataset001_Synth/EDSRTrainer_tiny__mrisrPlans__gaussian_edsr"
TINY_CHK = f"{TINY_MODEL}/fold_0/checkpoint_final.pth"


class Evil:
    """Any class: unpickling it needs more than weights_only allows."""


def _pickled() -> bytes:
    buf = io.BytesIO()
    torch.save({"format": 1, "network": {}, "payload": Evil()}, buf)
    return buf.getvalue()


def _rezip(model, dest, add=None, drop=(), manifest_edit=None, compress=zipfile.ZIP_DEFLATED):
    """A copy of ``model`` with members added (their hashes put in the manifest)."""
    with zipfile.ZipFile(model) as z:
        members = {n: z.read(n) for n in z.namelist()}
    manifest = json.loads(members.pop("mrisr_model.json"))
    for name in drop:
        members.pop(name)
        manifest["files"].pop(name)
    for name, data in (add or {}).items():
        members[name] = data
        manifest["files"][name] = hashlib.sha256(data).hexdigest()
    if manifest_edit:
        manifest_edit(manifest)
    with zipfile.ZipFile(dest, "w", compression=compress) as z:
        z.writestr("mrisr_model.json", json.dumps(manifest))
        for n, d in members.items():
            z.writestr(n, d)
    return dest


@pytest.fixture
def results(tmp_path, monkeypatch):
    r = tmp_path / "results"
    r.mkdir()
    monkeypatch.setenv("mrisr_results", str(r))
    return r


def _refused(zip_path, results, *expected, extra=()):
    before = tree_state(results)
    code, _, err = run(install_cli, zip_path, *extra)
    assert code == 2, err
    one_line(err, "mrisr_install_model", *expected)
    assert tree_state(results) == before  # nothing installed, nothing removed
    assert not [p for p in results.rglob(".install_*")]  # no temporary folder left


# ====================================================================== model zips
def _bomb(model, dest):
    return _rezip(model, dest, add={f"{TINY_MODEL}/fold_0/training_log.txt": b"\0" * (65 << 20)})


def _damaged_member(model, dest):
    """A stored (uncompressed) zip with bytes of the plans member flipped: its CRC fails."""
    _rezip(model, dest, compress=zipfile.ZIP_STORED)
    data = bytearray(dest.read_bytes())
    i = data.find(b'"plans_name"')
    data[i : i + 4] = b"XXXX"
    dest.write_bytes(bytes(data))
    return dest


ZIPS = {
    "extra pickled checkpoint": (
        lambda m, d: _rezip(m, d, add={f"{TINY_MODEL}/fold_0/checkpoint_best.pth": _pickled()}),
        ("checkpoint_best.pth", "is not part of the model"),
    ),
    "second model folder": (
        lambda m, d: _rezip(
            m,
            d,
            add={"Dataset001_Synth/OtherTrainer__mrisrPlans__gaussian_edsr/plans.json": b"{}"},
        ),
        ("OtherTrainer__mrisrPlans__gaussian_edsr", "is not part of the model"),
    ),
    "unlisted fold": (
        lambda m, d: _rezip(m, d, add={f"{TINY_MODEL}/fold_3/training_log.txt": b"x"}),
        ("fold_3/training_log.txt", "is not part of the model"),
    ),
    "decompression bomb": (_bomb, ("training_log.txt", "decompression bomb")),
    "damaged member": (_damaged_member, ("member", "is damaged", "export the model again")),
    "manifest files as a list": (
        lambda m, d: _rezip(m, d, manifest_edit=lambda x: x.update(files=list(x["files"]))),
        ("files must map each member to its SHA-256",),
    ),
    "manifest folds not a list": (
        lambda m, d: _rezip(m, d, manifest_edit=lambda x: x.update(folds="0")),
        ("folds must be a non-empty list",),
    ),
    "manifest trainer with a separator": (
        lambda m, d: _rezip(m, d, manifest_edit=lambda x: x.update(trainer="../x")),
        ("trainer '../x' is not a valid name",),
    ),
    "manifest nested 100 levels": (
        lambda m, d: _rezip(
            m, d, manifest_edit=lambda x: x.update(extra=json.loads("[" * 100 + "]" * 100))
        ),
        ("mrisr_model.json is not valid JSON",),
    ),
}


@pytest.mark.parametrize("case", list(ZIPS))
def test_install_refuses(exported_model, results, tmp_path, case):
    _, _, model = exported_model
    make, expected = ZIPS[case]
    _refused(make(model, tmp_path / "bad.zip"), results, *expected)


def test_install_never_touches_another_model(exported_model, results, tmp_path):
    """--overwrite with a zip that also carries a folder of an installed model B: refused,
    B (with a file of the user's) unchanged."""
    _, _, model = exported_model
    other = results / "Dataset001_Synth" / "EDSRTrainer__mrisrPlans__dsgan_edsr"
    (other / "fold_0").mkdir(parents=True)
    (other / "fold_0" / "checkpoint_final.pth").write_bytes(b"B's weights")
    (other / "notes.txt").write_text("the user's notes")
    bad = _rezip(
        model,
        tmp_path / "bad.zip",
        add={"Dataset001_Synth/EDSRTrainer__mrisrPlans__dsgan_edsr/fold_0/x.pth": _pickled()},
    )
    _refused(bad, results, "EDSRTrainer__mrisrPlans__dsgan_edsr", extra=("--overwrite",))
    assert (other / "notes.txt").read_text() == "the user's notes"


def test_install_overwrite_replaces_only_its_own_folder(exported_model, results):
    """--overwrite swaps this model's folder; a local degradation cache is kept."""
    _, _, model = exported_model
    assert run(install_cli, model)[0] == 0
    deg = results / "Dataset001_Synth" / "degradation__mrisrPlans__gaussian_edsr"
    (deg / "local.json").write_text("{}")
    (results / TINY_MODEL / "stale.txt").write_text("x")
    code, out, err = run(install_cli, model, "--overwrite")
    assert code == 0, err
    assert not (results / TINY_MODEL / "stale.txt").exists()
    assert (results / TINY_MODEL / "fold_0" / "checkpoint_final.pth").is_file()
    assert (deg / "local.json").is_file()  # the existing degradation folder is left alone
    assert (results / TINY_MODEL / "README.md").is_file()


@pytest.mark.parametrize("mode", modes())
def test_install_on_a_full_disk(exported_model, results, mode, monkeypatch):
    _, _, model = exported_model
    with full_folder(results, mode, monkeypatch):
        code, _, err = run(install_cli, model)
    assert code == 2, err
    one_line(err, "mrisr_install_model", "free disk space")
    assert not (results / TINY_MODEL).exists()


def test_install_bomb_is_refused_before_it_is_read(exported_model, results, tmp_path, monkeypatch):
    """The size caps are checked on the zip's directory: the bomb is never decompressed."""
    _, _, model = exported_model
    bad = _bomb(model, tmp_path / "bomb.zip")
    opened = []
    real_open = zipfile.ZipFile.open

    def spy(self, name, *a, **k):
        opened.append(getattr(name, "filename", name))
        return real_open(self, name, *a, **k)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    _refused(bad, results, "decompression bomb")
    assert not any(n.endswith("training_log.txt") for n in opened), opened


# ============================================================== damaged state files
def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize(
    "damage", ["truncated array", "empty mask", "damaged case JSON", "case JSON a list"]
)
def test_re_running_preprocessing_repairs_a_damaged_case(env, damage):
    """The message advises re-running mrisr_plan_and_preprocess: doing so repairs the case."""
    pre = env["mrisr_preprocessed"] / DS / "mrisrPlans_preprocessed"
    good = storage.load_array(pre / "case_002_hr.b2nd")
    if damage == "truncated array":
        _truncate(pre / "case_002_hr.b2nd")
    elif damage == "empty mask":
        (pre / "case_002_hr_mask.b2nd").write_bytes(b"")
    elif damage == "damaged case JSON":
        _truncate(pre / "case_002.json")
    else:
        (pre / "case_002.json").write_text("[1, 2]")
    if "JSON" in damage:  # every case file is read when training starts (arrays: per case)
        code, _, err = run(train_cli, "0", "-d", "1", "-c", "gaussian_edsr")
        assert code == 2, err
        line = one_line(err, "mrisr_train", "case_002.json", "re-run mrisr_plan_and_preprocess")
        assert "--clean" not in line
    kept = (pre / "case_000.json").stat().st_mtime_ns
    code, _, err = run(plan_cli, "-d", "1", "-np", "1", "--no-select")
    assert code == 0, err
    assert "case_002" in err and "redoing the case" in err
    assert np.array_equal(storage.load_array(pre / "case_002_hr.b2nd"), good)
    assert storage.intact(pre / "case_002_hr_mask.b2nd")
    assert json.loads((pre / "case_002.json").read_text())["case"] == "case_002"
    assert (pre / "case_000.json").stat().st_mtime_ns == kept  # intact cases are kept


def _fold(env):
    return env["mrisr_results"] / DS / MODEL / "fold_0"


def _tiny_fold(env):
    """Fold 0 of gaussian_edsr trained (8 iterations of EDSRTrainer_tiny) in ``env``."""
    code, _, err = run(train_cli, "0", "-d", "1", "-c", "gaussian_edsr", "-tr", "EDSRTrainer_tiny")
    assert code == 0, err
    return env["mrisr_results"] / DS / "EDSRTrainer_tiny__mrisrPlans__gaussian_edsr" / "fold_0"


@pytest.mark.parametrize(
    "damage,expected",
    [
        ("slim", "inference-only checkpoint"),
        ("shape", "do not fit"),
        ("rng", "damaged training state"),
    ],
)
def test_continue_on_a_checkpoint_it_cannot_resume(env, damage, expected):
    """--continue on an exported (slim) checkpoint, weights of another shape, a damaged RNG
    state: one line naming the file and what to do; the checkpoint is left as it was."""
    fold = _tiny_fold(env)
    chk = next(
        fold / n for n in ("checkpoint_latest.pth", "checkpoint_final.pth") if (fold / n).is_file()
    )  # the one --continue resumes from
    state = torch.load(chk, weights_only=True)
    if damage == "slim":
        state = {k: v for k, v in state.items() if k not in ("optimisation", "rng")}
    elif damage == "shape":
        name = next(iter(state["network"]))
        state["network"][name] = torch.zeros(3, 3)
    else:
        state["rng"]["torch"] = torch.zeros(7, dtype=torch.uint8)
    save_checkpoint(state, chk)
    before = chk.read_bytes()
    code, _, err = run(
        train_cli, "0", "-d", "1", "-c", "gaussian_edsr", "-tr", "EDSRTrainer_tiny", "--continue"
    )
    assert code == 2, err
    one_line(err, "mrisr_train", chk.name, expected, "delete it")
    assert chk.read_bytes() == before


def test_huge_network_args_are_refused_before_allocating(env):
    """network_args within their bounds but meaning ~19 GiB of weights, on a small file."""
    chk = _fold(env) / "checkpoint_final.pth"
    state = _checkpoint(2)
    state["network_args"] = {**state["network_args"], "num_blocks": 256, "num_features": 1024}
    save_checkpoint(state, chk)
    out = env["root"] / "out"
    code, _, err = predict(env, out)
    assert code == 2
    one_line(err, "mrisr_predict", str(chk), "do not fit the network", "GiB")
    assert not out.exists()


@pytest.fixture
def validated(env):
    return _tiny_fold(env) / "validation"


def test_truncated_validation_volume_is_not_scored(env, validated):
    sr = sorted(p for p in validated.glob("case_*.nii.gz") if "uncert" not in p.name)[0]
    _truncate(sr, 0.6)
    code, _, err = run(best_cli, "-d", "1", "-tr", "EDSRTrainer_tiny")
    assert code == 2, err
    one_line(err, "mrisr_find_best_configuration", sr.name, "damaged validation SR volume")


def test_damaged_validation_summary_in_export(env, validated, tmp_path):
    _truncate(validated / "summary.json")
    out = tmp_path / "m.zip"
    code, _, err = run(
        export_cli, "-d", "1", "-c", "gaussian_edsr", "-tr", "EDSRTrainer_tiny", "-o", out
    )
    assert code == 2, err
    one_line(err, "mrisr_export_model", "summary.json", "not valid JSON")
    assert not out.exists()


@pytest.mark.parametrize("file", ["dataset.json", "splits_final.json"])
def test_deeply_nested_json_is_one_line(env, file):
    path = (env["raw"] if file == "dataset.json" else env["mrisr_preprocessed"] / DS) / file
    path.write_text("[" * 100_000 + "]" * 100_000)
    cli, args = (
        (plan_cli, ("-d", "1", "-np", "1", "--no-select"))
        if file == "dataset.json"
        else (train_cli, ("0", "-d", "1", "-c", "gaussian_edsr"))
    )
    code, _, err = run(cli, *args)
    assert code == 2, err
    prog = "mrisr_plan_and_preprocess" if cli is plan_cli else "mrisr_train"
    one_line(err, prog, file, "nested")


# ======================================================== arguments and plans values
@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("lr_patch", 0, "lr_patch 0 is not in 4..1024"),
        ("batch_size", -4, "batch_size -4 is not in 1..4096"),
        ("learning_rate", -1, "learning_rate -1"),
        ("num_features", 1024, "GiB to train"),
    ],
)
def test_hand_edited_sr_values_are_range_checked(env, key, value, expected, monkeypatch):
    if key == "num_features":  # 256 x 1024: 1.2 TB... of a 1 GiB machine
        monkeypatch.setattr("mrisr.plans._machine_memory", lambda: 1 << 30)
    plans_file = env["mrisr_preprocessed"] / DS / "mrisrPlans.json"
    plans = json.loads(plans_file.read_text())
    sr = plans["configurations"]["gaussian_edsr"].get("sr")
    if sr is None:
        sr = next(c["sr"] for c in plans["configurations"].values() if c.get("sr"))
    sr[key] = value
    if key == "num_features":
        sr["num_blocks"] = 256
    plans_file.write_text(json.dumps(plans))
    code, _, err = run(train_cli, "0", "-d", "1", "-c", "gaussian_edsr")
    assert code == 2, err
    one_line(err, "mrisr_train", "mrisrPlans.json", "invalid plans", expected)


@pytest.mark.parametrize("size", ["-5", "3", "abc"])
def test_tile_size_is_range_checked(env, size, capsys):
    out = env["root"] / "out"
    code, _, err = predict(env, out, "--tile-size", size)
    assert code == 2
    assert "--tile-size" in err and "Traceback" not in err
    assert not out.exists()


def test_tilde_in_a_root_is_the_home_folder(env, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("mrisr_results", "~/res")
    out = tmp_path / "out"
    code, _, err = run(predict_cli, "-i", env["in"], "-o", out, "-c", "bicubic")
    assert code == 0, err
    from mrisr import paths

    assert paths.results_root() == tmp_path / "home" / "res"
    assert not (tmp_path / "~").exists()


def test_link_loop_in_the_input_is_named(env):
    loop = env["in"] / "loop.nii.gz"
    loop.symlink_to(loop)
    out = env["root"] / "out"
    code, _, err = run(predict_cli, "-i", env["in"], "-o", out, "-c", "bicubic")
    assert code == 2
    one_line(err, "mrisr_predict", "loop.nii.gz", "link loop")
    assert not out.exists()


@pytest.mark.parametrize("exc", [MrisrError("disk full"), KeyboardInterrupt()])
def test_message_starts_its_own_line_after_a_progress_bar(exc, capsys):
    from tqdm import tqdm

    def body():
        for _ in tqdm(range(5), desc="working", file=sys.stderr, mininterval=0):
            raise exc

    code = run_command("mrisr_predict", body)
    err = capsys.readouterr().err
    assert code in (2, 130)
    before = err[: err.index("mrisr_predict: ")]
    assert before == "" or before.endswith(("\r", "\n")), repr(err)
