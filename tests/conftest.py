import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def machine_timings(tmp_path_factory):
    """The SR network's step timings on this machine (``$mrisr_results/.machine/
    precision.json``), shared by every test's fresh results folder as one machine's
    results folder shares them: the plans' time estimate and a training's precision
    probe measure a network once per session, not once per test (~9 s each)."""
    return tmp_path_factory.mktemp("machine") / "precision.json"


@pytest.fixture
def mrisr_env(tmp_path, monkeypatch, machine_timings):
    """Fresh mrisr_raw / mrisr_preprocessed / mrisr_results folders (the machine's SR
    step timings carried over, see ``machine_timings``)."""
    import shutil

    from mrisr.training.precision_probe import CACHE_FILE
    from mrisr.utilities.file_io import load_json, save_json

    roots = {k: tmp_path / k for k in ("mrisr_raw", "mrisr_preprocessed", "mrisr_results")}
    for k, p in roots.items():
        p.mkdir()
        monkeypatch.setenv(k, str(p))
    own = roots["mrisr_results"] / CACHE_FILE
    if machine_timings.is_file():
        own.parent.mkdir(parents=True)
        shutil.copy(machine_timings, own)
    yield roots
    if own.is_file():
        try:
            table = load_json(machine_timings) if machine_timings.is_file() else {}
            mine = load_json(own)
            if isinstance(table, dict) and isinstance(mine, dict):
                save_json({**table, **mine}, machine_timings)
        except (OSError, ValueError):
            pass  # a test that wrote something else there keeps it to itself


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory):
    """A tiny trained gaussian_edsr fold (with degradation artefacts) and its model zip, made
    once per session; the roots are set only while it is made (tests set their own).
    Returns (root, LR input folder, model zip)."""
    import json
    import shutil

    import numpy as np
    from synthetic import write_dataset

    from mrisr.cli.export_model import main as export_main
    from mrisr.cli.plan_and_preprocess import main as plan_main
    from mrisr.training.train_api import run_training

    root = tmp_path_factory.mktemp("export")
    mp = pytest.MonkeyPatch()
    try:
        for k in ("mrisr_raw", "mrisr_preprocessed", "mrisr_results"):
            (root / k).mkdir()
            mp.setenv(k, str(root / k))
        ds = write_dataset(root / "mrisr_raw", n_pairs=3, hr_size=(80, 80, 3), lr_size=(40, 40, 3))
        assert plan_main(["-d", "1", "-np", "1", "--no-select"]) == 0
        run_training(0, "1", "gaussian_edsr", "EDSRTrainer_tiny", progress=False)
        # degradation artefacts as a learned model leaves them (the fixed Gaussian has none)
        deg = root / "mrisr_results" / "Dataset001_Synth" / "degradation__mrisrPlans__gaussian_edsr"
        (deg / "units").mkdir(parents=True)
        (deg / "units" / "case_000.json").write_text(json.dumps({"name": "case_000", "psnr": 30}))
        np.save(deg / "units" / "case_000_kernel.npy", np.ones((5, 5), np.float32) / 25)
        inp = root / "in"
        inp.mkdir()
        shutil.copy(ds / "imagesLR" / "case_000.nii.gz", inp / "case_000.nii.gz")
        model = root / "model.zip"
        assert (
            export_main(
                ["-d", "1", "-c", "gaussian_edsr", "-tr", "EDSRTrainer_tiny", "-o", str(model)]
            )
            == 0
        )
    finally:
        mp.undo()
    return root, inp, model


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(The CLI fault tests' dataset.) A planned and preprocessed dataset and a (random-weight) 'trained' gaussian_edsr fold."""
    import json
    import shutil

    from cli_runs import DS, MODEL, ROOTS, random_checkpoint
    from synthetic import write_dataset

    from mrisr.cli import plan_and_preprocess as plan_cli
    from mrisr.training.checkpointing import save_checkpoint

    root = tmp_path_factory.mktemp("base")
    mp = pytest.MonkeyPatch()
    for k in ROOTS:
        (root / k).mkdir()
        mp.setenv(k, str(root / k))
    write_dataset(root / "mrisr_raw", n_pairs=3)
    assert plan_cli.main(["-d", "1", "-np", "1", "--no-select"]) == 0
    plans = json.loads((root / "mrisr_preprocessed" / DS / "mrisrPlans.json").read_text())
    model = root / "mrisr_results" / DS / MODEL
    (model / "fold_0").mkdir(parents=True)
    shutil.copy(root / "mrisr_preprocessed" / DS / "mrisrPlans.json", model / "plans.json")
    save_checkpoint(random_checkpoint(plans["scale"]), model / "fold_0" / "checkpoint_final.pth")
    mp.undo()
    return root


@pytest.fixture
def env(base, tmp_path, monkeypatch):
    """A private copy of ``base`` (roots set, recorded raw paths pointing into the copy)."""
    import shutil

    from cli_runs import DS, ROOTS

    root = tmp_path / "w"
    shutil.copytree(base, root, symlinks=True)
    for f in (root / "mrisr_preprocessed").rglob("*.json"):
        text = f.read_text()
        if str(base) in text:
            f.write_text(text.replace(str(base), str(root)))
    for k in ROOTS:
        monkeypatch.setenv(k, str(root / k))
    inp = root / "lr_in"
    shutil.copytree(root / "mrisr_raw" / DS / "imagesLR", inp)
    return {"root": root, "in": inp, "raw": root / "mrisr_raw" / DS, **{k: root / k for k in ROOTS}}
