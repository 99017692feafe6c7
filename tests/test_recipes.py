"""The recipes of documentation/architecture.md, performed as written there: the page's code
blocks become a plugin package (one file and its entry points) installed into a temporary
folder, and the commands run on it in fresh processes, as a user's would, with no file of
mrisr edited and no registry patched."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from synthetic import write_dataset

from mrisr.preprocessing import storage

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "documentation" / "architecture.md"
DS = "Dataset001_Synth"


def plugin_from_page() -> tuple[str, str]:
    """(the plugin module's source, its entry_points.txt) from the page's code blocks."""
    text = PAGE.read_text(encoding="utf-8")
    source = "\n".join(
        b.split("\n", 1)[1]
        for b in re.findall(r"```python\n(.*?)```", text, re.S)
        if b.startswith("# mrisr_box.py")
    )
    toml = next(b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if "entry-points" in b)
    entry_points = re.sub(r'\[project\.entry-points\."([^"]+)"\]', r"[\1]", toml)
    entry_points = re.sub(r'= "([^"]+)"', r"= \1", entry_points)
    return source, "\n".join(ln for ln in entry_points.splitlines() if not ln.startswith("#"))


def install_plugin(folder: Path) -> None:
    """What pip puts on sys.path for the plugin: its module and a dist-info with its entry
    points."""
    source, entry_points = plugin_from_page()
    (folder / "mrisr_box.py").write_text(source, encoding="utf-8")
    info = folder / "mrisr_box-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mrisr-box\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points + "\n")


@pytest.fixture
def user(tmp_path):
    """Run a command in a fresh process with the plugin installed: (exit code, output)."""
    plugin = tmp_path / "site"
    plugin.mkdir()
    install_plugin(plugin)
    env = {k: v for k, v in os.environ.items() if not k.startswith("mrisr_")}
    for k in ("mrisr_raw", "mrisr_preprocessed", "mrisr_results"):
        env[k] = str(tmp_path / k)
        (tmp_path / k).mkdir()
    env["PYTHONPATH"] = os.pathsep.join([str(plugin), str(REPO)])
    env["OMP_NUM_THREADS"] = "1"

    def run(command: str, *args) -> tuple[int, str]:
        code = f"import sys; from mrisr.cli.{command} import main; sys.exit(main(sys.argv[1:]))"
        r = subprocess.run(
            [sys.executable, "-c", code, *map(str, args)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        return r.returncode, r.stdout + r.stderr

    run.roots = {k: tmp_path / k for k in ("mrisr_raw", "mrisr_preprocessed", "mrisr_results")}
    run.plugin = plugin
    return run


def test_a_plugin_package_adds_a_model_its_configuration_a_trainer_and_a_metric(user, tmp_path):
    write_dataset(user.roots["mrisr_raw"], n_pairs=3, hr_size=(80, 80, 3), lr_size=(40, 40, 3))
    # recipe 1: the plugin's model plans its configuration beside the built-in ones
    code, out = user("plan_and_preprocess", "-d", 1, "-np", 1, "--no-select")
    assert code == 0, out
    plans = json.loads((user.roots["mrisr_preprocessed"] / DS / "mrisrPlans.json").read_text())
    box = plans["configurations"]["box_edsr"]
    assert box["degradation"] == {"name": "box", "width": plans["scale"]}
    assert box["label"] == "Box+EDSR" and box["sr_input"] == "denoised"
    assert box["sr"] == plans["configurations"]["dsgan_edsr"]["sr"]
    assert plans["decisions"]["box_width"].startswith(f"{plans['scale']} HR px")
    assert "dsgan_edsr" in plans["configurations"] and "bicubic" in plans["configurations"]

    # recipe 2: the plugin's trainer trains it (and recipe 4's metric validates it)
    code, out = user("train", 0, "-d", 1, "-c", "box_edsr", "-tr", "EDSRTrainer_box")
    assert code == 0, out
    fold = user.roots["mrisr_results"] / DS / "EDSRTrainer_box__mrisrPlans__box_edsr" / "fold_0"
    state = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    assert state["iteration"] == 6 and state["trainer"] == "EDSRTrainer_box"
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert 0 < summary["mean"]["box_edsr"]["mae"]["mean"] < 1
    assert summary["mean"]["box_edsr"]["psnr"]["mean"] > 10
    # the training LR is the box mean of the HR (away from the borders)
    syn = next((user.roots["mrisr_preprocessed"] / DS).rglob("synthetic/box_edsr/*"))
    relation = json.loads((syn / "summary.json").read_text()).get("intensity_relation", {})
    prep = next(p for p in (user.roots["mrisr_preprocessed"] / DS).iterdir() if p.is_dir())
    s = plans["scale"]
    for f in sorted(syn.glob(f"*_lr{storage.SUFFIX}")):
        case = f.name[: -len(f"_lr{storage.SUFFIX}")]
        hr = storage.load_array(prep / f"{case}_hr{storage.SUFFIX}")
        lr = storage.load_array(f)
        assert lr.shape == (hr.shape[0], hr.shape[1] // s, hr.shape[2] // s)
        want = hr[:, : lr.shape[1] * s, : lr.shape[2] * s]
        want = want.reshape(hr.shape[0], lr.shape[1], s, lr.shape[2], s).mean(axis=(2, 4))
        if not relation.get("applied"):
            np.testing.assert_allclose(lr[:, 2:-2, 2:-2], want[:, 2:-2, 2:-2], atol=1e-5)

    # mrisr_predict runs it, mrisr_find_best_configuration shows it (and the metric)
    scans = user.roots["mrisr_raw"] / DS / "imagesLR"
    code, out = user(
        "predict", "-i", scans, "-o", tmp_path / "sr", "-d", 1, "-c", "box_edsr",
        "-tr", "EDSRTrainer_box", "-f", 0, "--disable-tta",
    )  # fmt: skip
    assert code == 0, out
    assert len(list((tmp_path / "sr").glob("*.nii.gz"))) == 3
    code, out = user("find_best_configuration", "-d", 1, "-tr", "EDSRTrainer_box")
    assert code == 0, out
    header = next(ln for ln in out.splitlines() if ln.startswith("| metric"))
    assert "Box+EDSR" in header
    assert any(ln.startswith("| MAE ↓ |") for ln in out.splitlines())

    # recipe 3: the plugin's planner adds a configuration of existing models
    code, out = user("plan_and_preprocess", "-d", 1, "-np", 1, "--no-select",
                     "-pl", "SharpGaussianPlanner")  # fmt: skip
    assert code == 0, out
    sharp = json.loads((user.roots["mrisr_preprocessed"] / DS / "mrisrSharpPlans.json").read_text())
    assert sharp["configurations"]["gaussian1_edsr"]["degradation"]["sigma"] == 1.0
    assert {"box_edsr", "gaussian_edsr"} <= set(sharp["configurations"])


def test_a_plugin_slice_profile_reaches_mrisr_throughplane(user, tmp_path):
    """Recipe 5: ``--profile triangle`` builds the plugin's profile (FWHM = the thickness)."""
    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=float) for n in (10, 32, 36)), indexing="ij")
    arr = 100 + 40 * np.sin(x / 2.0) * np.cos(y / 3.0 + z) + rng.normal(0, 2, x.shape)
    img = sitk.GetImageFromArray(np.abs(arr).astype(np.float32))
    img.SetSpacing((1.0, 1.0, 3.0))
    sitk.WriteImage(img, str(tmp_path / "thick.nii.gz"))
    code, out = user(
        "throughplane", "-i", tmp_path / "thick.nii.gz", "-o", tmp_path / "iso",
        "--slice-thickness", 2.5, "--profile", "triangle", "--iterations", 2,
    )  # fmt: skip
    assert code == 0, out
    record = json.loads((tmp_path / "iso" / "throughplane.json").read_text())
    assert record["profile"]["kind"] == "triangle"
    assert record["profile"]["fwhm_mm"] == pytest.approx(2.5, abs=0.05)
    assert (tmp_path / "iso" / "thick.nii.gz").is_file()


def test_a_plugin_that_fails_to_load_is_named_in_one_line(user):
    (user.plugin / "mrisr_box.py").write_text("import not_a_module_anywhere\n")
    write_dataset(user.roots["mrisr_raw"], n_pairs=2, hr_size=(80, 80, 3), lr_size=(40, 40, 3))
    code, out = user("plan_and_preprocess", "-d", 1, "-np", 1, "--no-select")
    assert code != 0
    assert "Traceback" not in out
    line = next(ln for ln in out.splitlines() if "error:" in ln)
    assert re.search(r"entry point '\w+ = mrisr_box:\w+' of package 'mrisr-box'", line), line
    assert "not_a_module_anywhere" in line
