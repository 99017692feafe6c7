"""SR training: EDSR, data pipeline, results layout, resuming, checkpoint safety, CLI errors."""

import errno
import json
import math
import os
import shutil
import signal

import numpy as np
import pytest
import torch
from synthetic import write_dataset

from mrisr.cli.plan_and_preprocess import main as plan_main
from mrisr.cli.train import main as train_main
from mrisr.networks.edsr import EDSR
from mrisr.plans import Plans
from mrisr.preprocessing import storage
from mrisr.preprocessing.dataset import PreprocessedDataset
from mrisr.training import checkpointing
from mrisr.training import precision_probe as precision
from mrisr.training.data import (
    PatchSampler,
    SRPatchLoader,
    TrainingVolume,
    batch_iterator,
    close_iterator,
)
from mrisr.training.early_stopping import PlateauRule
from mrisr.training.train_api import results_folder, run_training
from mrisr.training.trainer import TRAINERS
from mrisr.training.variants import EDSRTrainer_tiny
from mrisr.utilities.errors import MrisrError

DS = "Dataset001_Synth"
ROOTS = ("mrisr_raw", "mrisr_preprocessed", "mrisr_results")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """One tiny preprocessed dataset (5 pairs, 1 HR-only, 1 LR-only) for the module."""
    base = tmp_path_factory.mktemp("prepared")
    with pytest.MonkeyPatch.context() as mp:
        for k in ROOTS:
            (base / k).mkdir()
            mp.setenv(k, str(base / k))
        write_dataset(
            base / "mrisr_raw",
            n_pairs=5,
            hr_only=1,
            lr_only=1,
            hr_size=(48, 48, 3),
            lr_size=(24, 24, 3),
        )
        assert plan_main(["-d", "1", "-np", "1", "--no-select"]) == 0
        f = base / "mrisr_preprocessed" / DS / "mrisrPlans.json"
        plans = Plans.load(f)
        deg = plans.data["configurations"]["dsgan_edsr"]["degradation"]
        deg["iterations"] = 12  # a DSGAN that runs in about a second
        deg["lr_decay_iterations"] = [3, 6, 9]
        plans.save(f)
    return base


@pytest.fixture
def env(prepared, tmp_path, monkeypatch):
    """A private copy of the preprocessed dataset and an empty results folder."""
    roots = {
        "mrisr_raw": prepared / "mrisr_raw",
        "mrisr_preprocessed": tmp_path / "mrisr_preprocessed",
        "mrisr_results": tmp_path / "mrisr_results",
    }
    shutil.copytree(prepared / "mrisr_preprocessed", roots["mrisr_preprocessed"])
    roots["mrisr_results"].mkdir()
    for k, p in roots.items():
        monkeypatch.setenv(k, str(p))
    return roots


def train(fold=0, configuration="gaussian_edsr", trainer="EDSRTrainer_tiny", **kw):
    return run_training(fold, configuration=configuration, trainer=trainer, progress=False, **kw)


def fold_dir(configuration="gaussian_edsr", fold=0, trainer="EDSRTrainer_tiny"):
    return results_folder(DS, trainer, "mrisrPlans", configuration) / f"fold_{fold}"


def error_line(capsys) -> str:
    """The command's one error line (log lines aside); no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.startswith("mrisr_train: error:")]
    assert len(lines) == 1, err
    return lines[0]


def weights(path):
    return torch.load(path, weights_only=True)["network"]


# ---------------------------------------------------------------------------- EDSR
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_output_shape(scale):
    net = EDSR(scale, num_blocks=2, num_features=8, res_scale=0.1)
    y = net(torch.rand(2, 1, 7, 9))
    assert y.shape == (2, 1, scale * 7, scale * 9)


def test_edsr_is_the_baseline_by_default():
    net = EDSR(2)
    n = sum(p.numel() for p in net.parameters())
    assert len(net.body) == 17 and net.head.out_channels == 64
    assert 1.2e6 < n < 1.4e6  # baseline EDSR x2, one channel in and out


# ---------------------------------------------------------------------------- data
def test_patches_are_aligned_augmented_and_reproducible(env):
    """LR crop (y, x) pairs with HR crop (s*y, s*x); same batches with or without workers."""
    ds = PreprocessedDataset(env["mrisr_preprocessed"] / DS / "mrisrPlans_preprocessed")
    vols = []
    for c in ds.with_hr()[:2]:
        hr = ds.load(c, "hr")
        lr = hr.reshape(hr.shape[0], hr.shape[1] // 2, 2, hr.shape[2] // 2, 2).mean(axis=(2, 4))
        f = env["mrisr_preprocessed"] / f"{c}_blockmean.b2nd"
        storage.save_array(f, lr)
        vols.append(TrainingVolume(c, ds.path(c, "hr"), f, ds.path(c, "hr_weight")))
    sampler = PatchSampler(vols, 2, 8, 6, seed=3)

    def batches(workers, start, n):
        it = batch_iterator(SRPatchLoader(vols, sampler, start, workers), workers)
        try:
            return [next(it) for _ in range(n)]
        finally:
            close_iterator(it)

    single = batches(0, 5, 4)
    multi = batches(2, 7, 2)
    for b in single:
        lr, hr = b["data"], b["target"]
        assert lr.shape == (6, 1, 8, 8) and hr.shape == (6, 1, 16, 16)
        down = hr.reshape(6, 1, 8, 2, 8, 2).mean(axis=(3, 5))
        np.testing.assert_allclose(down, lr, atol=1e-5)  # aligned after the dihedral op too
    assert len({int(e) for b in single for e in b["dihedral"]}) > 1
    for a, b in zip(single[2:], multi):  # batch 7 and 8, whoever made them
        assert a["iteration"] == b["iteration"]
        np.testing.assert_array_equal(a["data"], b["data"])
        np.testing.assert_array_equal(a["target"], b["target"])


# ---------------------------------------------------------------------------- training
def test_training_writes_the_results_layout(env, capsys):
    assert train_main(["0", "-c", "gaussian_edsr", "-tr", "EDSRTrainer_tiny"]) == 0
    out = capsys.readouterr().out
    assert "gaussian_edsr" in out and "bicubic" in out and "PSNR" in out
    top = results_folder(DS, "EDSRTrainer_tiny", "mrisrPlans", "gaussian_edsr")
    for f in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        assert (top / f).is_file()
    fd = top / "fold_0"
    for f in (
        "checkpoint_latest.pth",
        "checkpoint_best.pth",
        "checkpoint_final.pth",
        "progress.png",
        "training_log.txt",
        "validation/summary.json",
    ):
        assert (fd / f).is_file(), f
    assert not list(fd.rglob(".*tmp*"))
    ck = torch.load(fd / "checkpoint_final.pth", weights_only=True)
    assert ck["trainer"] == "EDSRTrainer_tiny" and ck["configuration"] == "gaussian_edsr"
    assert ck["iteration"] == 8 and ck["plans_name"] == "mrisrPlans"
    assert len(ck["history"]["loss"]) == 4 and ck["history"]["val_psnr"]
    log = (fd / "training_log.txt").read_text()
    assert "validation PSNR" in log
    # issue 11: the measured precision and the time estimate are in the log
    assert ck["precision"] in ("fp32", "bf16") and f"precision {ck['precision']} (probe" in log
    assert "time estimate: 8 iterations at " in log and "training loop took" in log
    # validation: the fold's pair, SR volume written, finite numbers for SR and bicubic
    splits = PreprocessedDataset.for_plans(Plans.load(top / "plans.json"))
    import json

    summary = json.loads((fd / "validation" / "summary.json").read_text())
    val = json.loads((env["mrisr_preprocessed"] / DS / "splits_final.json").read_text())[0]["val"]
    assert sorted(summary["cases"]) == val and summary["held_out"]
    for c in val:
        assert (fd / "validation" / f"{c}.nii.gz").is_file()
        assert splits.properties[c]["is_pair"]
        for m in ("gaussian_edsr", "bicubic"):
            r = summary["cases"][c][m]
            assert math.isfinite(r["psnr"]) and 5 < r["psnr"] < 60 and 0 < r["ssim"] <= 1
    assert summary["mean"]["bicubic"]["psnr"]["mean"] > 15
    # the validation case never reached the degradation stage
    synth = env["mrisr_preprocessed"] / DS / "mrisrPlans_preprocessed" / "synthetic"
    made = {p.name.split("_lr")[0] for p in synth.rglob("*_lr.b2nd")}
    assert made and not made & set(val)


def test_dsgan_configuration_trains_its_degradation_first(env, caplog):
    caplog.set_level("INFO")
    s = train(1, "dsgan_edsr")
    assert "running it first" in caplog.text
    assert math.isfinite(s["mean"]["dsgan_edsr"]["psnr"]["mean"])
    units = env["mrisr_results"] / DS / "degradation__mrisrPlans__dsgan_edsr" / "units"
    trained = {f.name.split("__")[0] for f in units.glob("*.json")}
    assert trained and not trained & set(s["cases"])  # no DSGAN unit on validation pairs


def test_bicubic_only_validates_and_fold_all(env):
    s = train(2, "bicubic")
    fd = fold_dir("bicubic", 2)
    assert (fd / "validation" / "summary.json").is_file()
    assert not list(fd.glob("*.pth")) and s["held_out"]
    assert math.isfinite(s["mean"]["bicubic"]["psnr"]["mean"])
    s = train("all", "bicubic")
    assert not s["held_out"] and s["num_cases"] == 5


def enable_training_noise(env, sigma=0.05):
    """gaussian_edsr with the realistic degradation: Rician noise on every patch, raw LR."""
    f = env["mrisr_preprocessed"] / DS / "mrisrPlans.json"
    plans = Plans.load(f)
    plans.data["configurations"]["gaussian_edsr"].update(
        training_noise={
            "model": "rician",
            "sigma_jitter": 0.3,
            "kernel_width_jitter": 0.1,
            "bias": 0.1,
        },
        sr_input="raw",
    )
    plans.save(f)
    folder = env["mrisr_preprocessed"] / DS / "mrisrPlans_preprocessed"
    for props in folder.glob("*.json"):
        d = json.loads(props.read_text())
        if d["has_lr"]:
            d["lr"]["noise"] = {"sigma": sigma, "rho": None}
            props.write_text(json.dumps(d))


def test_training_noise_changes_the_patches_reproducibly(env):
    enable_training_noise(env)
    ds = PreprocessedDataset.for_plans(
        Plans.load(env["mrisr_preprocessed"] / DS / "mrisrPlans.json")
    )
    from mrisr.training.variants import EDSRTrainer_tiny as T

    plans = Plans.load(env["mrisr_preprocessed"] / DS / "mrisrPlans.json")
    trainer = T(plans, "gaussian_edsr", 0, env["mrisr_results"] / "x", progress=False)
    deg = trainer.build_patch_degradation(ds, ds.with_hr())
    assert deg is not None and deg.sigma == pytest.approx(0.05)
    assert (
        "training LR noise: Rician, sigma 0.05"
        in (env["mrisr_results"] / "x" / "training_log.txt").read_text()
    )
    vols = [
        TrainingVolume(c, ds.path(c, "hr"), ds.path(c, "lr"), ds.path(c, "hr_weight"))
        for c in ds.with_hr()
        if ds.properties[c]["has_lr"]
    ]
    sampler = PatchSampler(vols, 2, 8, 4, seed=7)
    clean = SRPatchLoader(vols, sampler, 0, 0).batch(3)
    noisy = SRPatchLoader(vols, sampler, 0, 0, degradation=deg).batch(3)
    again = SRPatchLoader(vols, sampler, 0, 0, degradation=deg).batch(3)
    assert np.array_equal(noisy["data"], again["data"])
    assert np.array_equal(noisy["target"], again["target"])
    diff = noisy["data"] - clean["data"]
    assert 0.02 < diff.std() < 0.2  # noise of about the measured level (and the bias)
    assert not np.array_equal(
        noisy["data"], SRPatchLoader(vols, sampler, 0, 0, degradation=deg).batch(4)["data"]
    )


@pytest.mark.parametrize(
    "interruption,noise", [("crash", False), ("ctrl-c", False), ("crash", True)]
)
def test_continue_reaches_the_same_weights(env, monkeypatch, interruption, noise):
    if noise:
        enable_training_noise(env)
    train(3, num_workers=1)
    reference = weights(fold_dir(fold=3) / "checkpoint_final.pth")
    ref_log = torch.load(fold_dir(fold=3) / "checkpoint_final.pth", weights_only=True)
    second = env["mrisr_results"].parent / "second"
    # the same machine's precision choice (a timing probe: under load it may pick another)
    cache = precision.CACHE_FILE
    (second / cache).parent.mkdir(parents=True)
    shutil.copy(env["mrisr_results"] / cache, second / cache)
    monkeypatch.setenv("mrisr_results", str(second))

    def stop(self, iteration, loss):
        if iteration == 5:
            if interruption == "ctrl-c":  # takes effect at the end of the iteration
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise RuntimeError("crash")

    monkeypatch.setattr(EDSRTrainer_tiny, "on_iteration_end", stop)
    with pytest.raises(KeyboardInterrupt if interruption == "ctrl-c" else RuntimeError):
        train(3, num_workers=0)
    latest = torch.load(fold_dir(fold=3) / "checkpoint_latest.pth", weights_only=True)
    assert latest["iteration"] == (5 if interruption == "ctrl-c" else 4)
    assert not (fold_dir(fold=3) / "checkpoint_final.pth").exists()
    monkeypatch.undo()
    monkeypatch.setenv("mrisr_results", str(env["mrisr_results"].parent / "second"))
    for k in ("mrisr_raw", "mrisr_preprocessed"):
        monkeypatch.setenv(k, str(env[k]))
    assert train_main(["3", "-c", "gaussian_edsr", "-tr", "EDSRTrainer_tiny", "--continue"]) == 0
    final = torch.load(fold_dir(fold=3) / "checkpoint_final.pth", weights_only=True)
    assert final["iteration"] == 8
    for k, v in reference.items():
        assert torch.equal(v, final["network"][k]), k
    assert final["history"]["iteration"] == ref_log["history"]["iteration"]
    assert "resuming at iteration" in (fold_dir(fold=3) / "training_log.txt").read_text()


def test_checkpoint_writes_are_atomic(env, monkeypatch):
    train(4)
    fd = fold_dir(fold=4)
    before = (fd / "checkpoint_latest.pth").read_bytes()
    real_save = torch.save

    def disk_full(obj, f, *a, **k):
        real_save(obj, f, *a, **k)  # bytes reach the temporary file ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk is full

    monkeypatch.setattr(torch, "save", disk_full)
    state = torch.load(fd / "checkpoint_final.pth", weights_only=True)
    with pytest.raises(
        MrisrError, match=r"cannot write \(No space left on device\); free disk space"
    ):
        checkpointing.save_checkpoint(state, fd / "checkpoint_latest.pth")
    assert (fd / "checkpoint_latest.pth").read_bytes() == before
    assert not [p for p in fd.iterdir() if p.name.startswith(".")]
    checkpointing.read_checkpoint(fd / "checkpoint_latest.pth")  # still valid


def test_damaged_or_foreign_checkpoint_on_continue(env, capsys):
    train(0)
    fd = fold_dir(fold=0)
    snapshot = {p.name: p.read_bytes() for p in fd.iterdir() if p.is_file()}
    (fd / "checkpoint_latest.pth").write_bytes(b"not a checkpoint")
    snapshot["checkpoint_latest.pth"] = b"not a checkpoint"
    args = ["0", "-c", "gaussian_edsr", "-tr", "EDSRTrainer_tiny", "--continue"]
    assert train_main(args) == 2
    assert "unreadable checkpoint" in error_line(capsys)
    assert {p.name: p.read_bytes() for p in fd.iterdir() if p.is_file()} == snapshot
    # a checkpoint of another trainer copied into this fold
    other = fold_dir(fold=0, trainer="EDSRTrainer_5iters")
    other.mkdir(parents=True)
    shutil.copy(fd / "checkpoint_final.pth", other / "checkpoint_latest.pth")
    assert train_main(["0", "-c", "gaussian_edsr", "-tr", "EDSRTrainer_5iters", "--continue"]) == 2
    assert "EDSRTrainer_tiny" in error_line(capsys)
    # ... or of another configuration
    cfg = fold_dir("zerofill_edsr", 0)
    cfg.mkdir(parents=True)
    shutil.copy(fd / "checkpoint_final.pth", cfg / "checkpoint_latest.pth")
    assert train_main(["0", "-c", "zerofill_edsr", "-tr", "EDSRTrainer_tiny", "--continue"]) == 2
    assert "configuration" in error_line(capsys)


def test_val_only(env, capsys):
    args = ["1", "-c", "gaussian_edsr", "-tr", "EDSRTrainer_tiny"]
    assert train_main(args + ["--val-only"]) == 2
    assert "checkpoint_final.pth not found" in error_line(capsys)
    train(1)
    summary = fold_dir(fold=1) / "validation" / "summary.json"
    summary.unlink()
    assert train_main(args + ["--val-only", "--disable-tta"]) == 0
    assert summary.is_file()


@pytest.mark.parametrize(
    "args, listed",
    [
        (["7"], "valid folds: 0, 1, 2, 3, 4, all"),
        (["0", "-tr", "NoSuchTrainer"], "EDSRTrainer_2000iters"),
        (["0", "-c", "nosuch"], "gaussian_edsr"),
    ],
)
def test_unknown_names_list_the_valid_ones(env, capsys, args, listed):
    assert train_main(args) == 2
    err = error_line(capsys)
    assert listed in err and "valid" in err


def test_dataset_is_needed_when_there_are_several(env, capsys):
    (env["mrisr_preprocessed"] / "Dataset002_Other").mkdir()
    assert train_main(["0", "-c", "bicubic"]) == 2
    assert "choose one with -d" in error_line(capsys)
    assert train_main(["0", "-c", "bicubic", "-d", "1", "--disable-tta"]) == 0


def test_bad_user_splits_file_is_reported(env, capsys):
    f = env["mrisr_preprocessed"] / DS / "splits_final.json"
    f.write_text('[{"train": ["case_000", "case_001"], "val": ["case_005"]}]')  # HR-only
    assert train_main(["0", "-c", "bicubic"]) == 2
    err = error_line(capsys)
    assert str(f) in err and "case_005" in err


def test_requested_precision_is_used_and_checked(env, capsys, monkeypatch):
    args = ["0", "-c", "gaussian_edsr", "-tr", "EDSRTrainer_tiny"]
    assert train_main([*args, "--precision", "fp32"]) == 0
    fd = results_folder(DS, "EDSRTrainer_tiny", "mrisrPlans", "gaussian_edsr") / "fold_0"
    ck = torch.load(fd / "checkpoint_final.pth", weights_only=True)
    assert ck["precision"] == "fp32"
    assert "precision fp32 (requested)" in (fd / "training_log.txt").read_text()
    from mrisr.training import precision_probe as precision

    monkeypatch.setattr(precision, "native_precisions", lambda device: ["fp32"])
    capsys.readouterr()
    assert train_main([*args, "--precision", "bf16"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mrisr_train: error: --precision bf16: this cpu does not")


# ------------------------------------------------------------------ early stopping
@TRAINERS.register
class EDSRTrainer_tiny_plateau(EDSRTrainer_tiny):
    """The tiny trainer with early stopping and a rule that sees a plateau at every
    validation it may judge: drops at iterations 2 and 3 (the planned 4 and 6), stop at 4."""

    early_stopping = True
    checkpoint_every = 1
    plateau_rule = PlateauRule(patience=1, min_delta=100.0, min_fraction=0.0)


def test_early_stopping_drops_the_learning_rate_then_stops(env, capsys):
    train(trainer="EDSRTrainer_tiny_plateau")
    folder = fold_dir(trainer="EDSRTrainer_tiny_plateau")
    final = torch.load(folder / "checkpoint_final.pth", weights_only=True)
    assert final["iteration"] == 4
    assert final["early_stopping"]["drops"] == [2, 3]
    assert final["early_stopping"]["stopped_at"] == 4
    assert "plateau" in final["early_stopping"]["why"]
    assert final["history"]["val_iteration"] == [1, 2, 3, 4]  # validated at every iteration
    lr = final["optimisation"]["optimizer"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(1e-4 * 0.5 * 0.5)
    log = (folder / "training_log.txt").read_text()
    assert "(planned at iteration 4)" in log and "(planned at iteration 6)" in log
    assert "stopping early at 4 of 8 iterations" in log
    assert "training done: 4 iterations of 8 (stopped early)" in log
    # --continue: complete as it is; --no-early-stop: the rest of the ceiling
    assert (
        train_main(["0", "-c", "gaussian_edsr", "-tr", "EDSRTrainer_tiny_plateau", "--continue"])
        == 0
    )
    assert "training already complete" in capsys.readouterr().err
    assert (
        train_main(
            [
                "0",
                "-c",
                "gaussian_edsr",
                "-tr",
                "EDSRTrainer_tiny_plateau",
                "--continue",
                "--no-early-stop",
            ]
        )
        == 0
    )
    assert torch.load(folder / "checkpoint_final.pth", weights_only=True)["iteration"] == 8


def test_early_stopping_resumes_bit_exact(env, monkeypatch):
    train(trainer="EDSRTrainer_tiny_plateau", num_workers=0)
    folder = fold_dir(trainer="EDSRTrainer_tiny_plateau")
    reference = torch.load(folder / "checkpoint_final.pth", weights_only=True)
    shutil.rmtree(folder)

    def crash(self, iteration, loss):
        if iteration == 3:
            raise RuntimeError("crash")

    with monkeypatch.context() as m:
        m.setattr(EDSRTrainer_tiny_plateau, "on_iteration_end", crash)
        with pytest.raises(RuntimeError):
            train(trainer="EDSRTrainer_tiny_plateau", num_workers=0)
    latest = torch.load(folder / "checkpoint_latest.pth", weights_only=True)
    assert latest["iteration"] == 2 and latest["early_stopping"]["drops"] == [2]
    train(trainer="EDSRTrainer_tiny_plateau", num_workers=0, continue_training=True)
    final = torch.load(folder / "checkpoint_final.pth", weights_only=True)
    assert final["iteration"] == 4 and final["early_stopping"] == reference["early_stopping"]
    for k, v in reference["network"].items():
        assert torch.equal(v, final["network"][k]), k


# ---------------------------------------------------------------------------- starting weights
def test_pretrained_weights_are_loaded_by_name_and_shape(tmp_path):
    from mrisr.networks.checkpoint_io import load_pretrained_weights

    args = {"num_blocks": 4, "num_features": 32, "res_scale": 1.0, "in_channels": 1}
    torch.manual_seed(1)
    source = EDSR(scale=2, **args)
    torch.save(source.state_dict(), tmp_path / "x2.pt")
    torch.manual_seed(2)
    net = EDSR(scale=2, **args)
    record = load_pretrained_weights(net, tmp_path / "x2.pt")
    assert record["tensors_loaded"] == record["tensors"] and record["parameter_fraction"] == 1
    for k, v in net.state_dict().items():
        assert torch.equal(v, source.state_dict()[k]), k
    # weights of a x3 network: the body is loaded, the x2 upsampler keeps its initialisation
    torch.manual_seed(3)
    torch.save({"format": 1, "network": EDSR(scale=3, **args).state_dict()}, tmp_path / "x3.pt")
    torch.manual_seed(2)
    fresh = EDSR(scale=2, **args)
    record = load_pretrained_weights(fresh, tmp_path / "x3.pt")
    assert 0.5 < record["parameter_fraction"] < 1 and record["kept_initialised"]
    torch.manual_seed(2)
    initial = EDSR(scale=2, **args).state_dict()
    for k in record["kept_initialised"]:
        assert torch.equal(fresh.state_dict()[k], initial[k]), k
    assert not torch.equal(fresh.state_dict()["head.weight"], initial["head.weight"])


def test_pretrained_weights_start_a_fold_and_are_recorded(env, capsys, tmp_path):
    assert train_main(["0", "-c", "gaussian_edsr", "-tr", "EDSRTrainer_tiny"]) == 0
    start = fold_dir(fold=0) / "checkpoint_final.pth"
    capsys.readouterr()
    args = ["1", "-c", "gaussian_edsr", "-tr", "EDSRTrainer_tiny", "-pretrained_weights", start]
    assert train_main([str(a) for a in args]) == 0
    ck = torch.load(fold_dir(fold=1) / "checkpoint_final.pth", weights_only=True)
    record = ck["pretrained_weights"]
    assert record["file"] == str(start) and record["tensors_loaded"] == record["tensors"]
    assert "starting from pretrained weights" in (fold_dir(fold=1) / "training_log.txt").read_text()
    scratch = ["2", "-c", "gaussian_edsr", "-tr", "EDSRTrainer_tiny"]
    assert train_main(scratch) == 0
    assert (
        torch.load(fold_dir(fold=2) / "checkpoint_final.pth", weights_only=True)[
            "pretrained_weights"
        ]
        is None
    )
    capsys.readouterr()

    # a new training only; a file of other weights or none at all: one line, nothing trained
    assert train_main([str(a) for a in [*args[:1], *args[1:], "--continue"]]) != 0
    assert "--continue" in error_line(capsys)
    torch.save({"other.weight": torch.zeros(3, 3)}, tmp_path / "foreign.pt")
    assert train_main(["3", *args[1:-1], str(tmp_path / "foreign.pt")]) != 0
    line = error_line(capsys)
    assert "foreign.pt" in line and "another network" in line
    assert train_main(["3", *args[1:-1], str(tmp_path / "missing.pt")]) != 0
    line = error_line(capsys)
    assert "missing.pt" in line and "not found" in line
    assert not (fold_dir(fold=3) / "checkpoint_final.pth").exists()


def test_the_shipped_generic_network_loads_and_says_how_it_was_made():
    from mrisr.networks.checkpoint_io import load_pretrained_weights, pretrained_weights_file

    f = pretrained_weights_file("generic")
    assert f.is_file() and f.stat().st_size < 5e6
    recipe = json.loads(f.with_suffix(".json").read_text())
    assert len(recipe["protocols"]) >= 6
    assert all(len(p["scans_sha256"]) == 64 for p in recipe["protocols"])
    assert load_pretrained_weights(EDSR(**recipe["network_args"]), f)["parameter_fraction"] == 1
    x3 = {**recipe["network_args"], "scale": 3}  # another scale: the body is loaded
    assert 0.5 < load_pretrained_weights(EDSR(**x3), f)["parameter_fraction"] < 1


def test_generic_weights_are_refused_by_a_network_of_another_size(env, capsys):
    args = ["0", "-c", "gaussian_edsr", "-tr", "EDSRTrainer_tiny", "-pretrained_weights", "generic"]
    assert train_main(args) != 0
    line = error_line(capsys)
    assert "edsr_generic_8x32.pt" in line and "another network" in line


def test_new_trainings_fine_tune_the_generic_network_of_their_size(
    env, capsys, tmp_path, monkeypatch
):
    """Plans fine-tune by default: a new training starts from the shipped generic network
    of its size; --from-scratch, plans planned --from-scratch, or no generic network of that
    size: random weights, said in the log and recorded in the checkpoint."""
    from mrisr.networks import checkpoint_io

    plans_file = env["mrisr_preprocessed"] / DS / "mrisrPlans.json"
    plans = Plans.load(plans_file)
    assert plans.initialisation == "generic" and "initialisation" in plans.data["decisions"]
    # a generic network of the tiny trainer's size, shipped in a stand-in folder
    shipped = tmp_path / "pretrained"
    shipped.mkdir()
    args = {"scale": 2, "num_blocks": 2, "num_features": 16, "res_scale": 1.0, "in_channels": 1}
    torch.manual_seed(7)
    generic = EDSR(**args).state_dict()
    torch.save(generic, shipped / "edsr_generic_2x16.pt")
    recipe = {"network_class": "EDSR", "network_args": args}
    (shipped / "edsr_generic_2x16.json").write_text(json.dumps(recipe))
    monkeypatch.setattr(checkpoint_io, "PRETRAINED_DIR", shipped)

    started = {}
    real_load = checkpoint_io.load_pretrained_weights

    def spy(network, path):
        record = real_load(network, path)
        started[str(path)] = {k: v.clone() for k, v in network.state_dict().items()}
        return record

    monkeypatch.setattr("mrisr.training.trainer.load_pretrained_weights", spy)
    assert train_main(["0", "-c", "gaussian_edsr", "-tr", "EDSRTrainer_tiny"]) == 0
    record = torch.load(fold_dir(fold=0) / "checkpoint_final.pth", weights_only=True)[
        "pretrained_weights"
    ]
    assert record["source"] == "generic" and record["file"].endswith("edsr_generic_2x16.pt")
    assert record["parameter_fraction"] == 1
    for k, v in started[record["file"]].items():  # it started from exactly those weights
        assert torch.equal(v, generic[k]), k
    assert "starting from generic weights" in (fold_dir(fold=0) / "training_log.txt").read_text()

    # --from-scratch: random weights, whatever the plans say
    assert (
        train_main(["1", "-c", "gaussian_edsr", "-tr", "EDSRTrainer_tiny", "--from-scratch"]) == 0
    )
    ck = torch.load(fold_dir(fold=1) / "checkpoint_final.pth", weights_only=True)
    assert ck["pretrained_weights"] is None
    log = (fold_dir(fold=1) / "training_log.txt").read_text()
    assert "starting from random weights (--from-scratch)" in log
    # no generic network of this size: random weights, and the log says why
    (shipped / "edsr_generic_2x16.json").write_text(
        json.dumps({**recipe, "network_args": {**args, "num_features": 32}})
    )
    assert train_main(["2", "-c", "gaussian_edsr", "-tr", "EDSRTrainer_tiny"]) == 0
    assert (
        "no generic network of 2 blocks x 16 features"
        in (fold_dir(fold=2) / "training_log.txt").read_text()
    )
    capsys.readouterr()
    # both starting weights and none: one line, nothing trained
    bad = ["3", "-c", "gaussian_edsr", "-tr", "EDSRTrainer_tiny", "--from-scratch"]
    assert train_main([*bad, "-pretrained_weights", "generic"]) != 0
    assert "--from-scratch" in error_line(capsys)
    assert not (fold_dir(fold=3) / "checkpoint_final.pth").exists()


def test_plans_from_scratch_are_recorded_and_followed(env, monkeypatch):
    from mrisr.cli.plan_and_preprocess import plan_from_scratch
    from mrisr.plans import plans_problem

    plans_file = env["mrisr_preprocessed"] / DS / "mrisrPlans.json"
    plans = Plans.load(plans_file)
    plan_from_scratch(plans)
    again = Plans.load(plans_file)
    assert again.initialisation == "scratch"
    assert "--from-scratch" in again.data["decisions"]["initialisation"]
    assert plans_problem({**again.data, "initialisation": "imagenet"}).startswith(
        "'initialisation' must be one of generic, scratch"
    )
    # plans written before the choice was recorded trained from scratch, and still do
    del again.data["initialisation"]
    assert again.initialisation == "scratch"
    assert train_main(["0", "-c", "gaussian_edsr", "-tr", "EDSRTrainer_tiny"]) == 0
    log = (fold_dir(fold=0) / "training_log.txt").read_text()
    assert "starting from random weights (the plans' initialisation is scratch)" in log


def test_the_generic_network_is_found_by_architecture_not_scale():
    from mrisr.networks.checkpoint_io import generic_weights_for, pretrained_weights_file

    quality = {"num_blocks": 8, "num_features": 32, "res_scale": 1.0, "in_channels": 1}
    x2 = pretrained_weights_file("generic")
    # each scale takes the network shipped for it, else the x2 one
    assert generic_weights_for("edsr", {**quality, "scale": 2}) == x2
    x3 = generic_weights_for("edsr", {**quality, "scale": 3})
    assert x3 == x2.with_name("edsr_generic_8x32_x3.pt")
    assert json.loads(x3.with_suffix(".json").read_text())["network_args"]["scale"] == 3
    assert generic_weights_for("edsr", {**quality, "scale": 4}) == x2
    assert generic_weights_for("edsr", {**quality, "num_features": 64, "scale": 2}) is None
