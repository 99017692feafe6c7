"""mrisr_demo end to end on tiny budgets: every stage runs, the report has both tables,
and a second run reuses every finished stage."""

from __future__ import annotations

import json

import pytest

from mrisr.cli import demo
from mrisr.evaluation.comparison import columns_of
from mrisr.planning.planners import DemoPlanner
from mrisr.plans import Plans


@pytest.fixture
def tiny_demo(monkeypatch):
    monkeypatch.setattr(demo, "TRAINER", "EDSRTrainer_tiny")
    small = {"dsgan": {"iterations": 12}}
    monkeypatch.setattr(DemoPlanner, "model_options", small)
    monkeypatch.setattr(demo, "THROUGHPLANE_SECONDS", 0.5)


def test_demo_runs_every_stage_and_reuses_them(tmp_path, tiny_demo, capsys, monkeypatch):
    for k in ("mrisr_raw", "mrisr_preprocessed", "mrisr_results"):
        monkeypatch.delenv(k, raising=False)
    work = tmp_path / "work"
    assert demo.main(["--workdir", str(work)]) == 0
    out = capsys.readouterr().out
    for i in range(1, demo.N_STAGES + 1):
        assert f"[{i}/{demo.N_STAGES}]" in out
    report = (work / "demo_report.md").read_text()
    assert "## Held-out test scans" in report and "## Cross-validation" in report
    demo_plans = Plans.load(work / "mrisr_preprocessed/Dataset001_MNIDemo/mrisrDemoPlans.json")
    labels = dict(columns_of(demo_plans))
    configurations = demo_plans.configuration_names  # the demo trains every one
    assert "dsn_edsr" not in configurations  # the demo planner leaves the DSN out (budget)
    assert {"dsgan_edsr", "kspace_edsr", "gaussian_edsr", "bicubic"} <= set(configurations)
    for config in configurations:  # a column for every configuration the demo trains
        assert f" {labels[config]} |" in report.split("## Cross-validation")[0]
    assert "| PSNR ↑ |" in report and "| SSIM ↑ |" in report and "| BRISQUE ↓ |" in report
    # the held-out scans were super-resolved by every configuration onto the HR grid
    for config in configurations:
        ev = json.loads((work / "predictions" / config / "evaluation.json").read_text())
        assert len(ev["cases"]) == 2
        assert all(20 < c["psnr"] < 60 for c in ev["cases"]) or config != "bicubic"
    plans = json.loads(
        (work / "mrisr_preprocessed/Dataset001_MNIDemo/mrisrDemoPlans.json").read_text()
    )
    assert plans["configurations"]["dsgan_edsr"]["degradation"]["kernel_mode"] == "per_volume"
    results = work / "mrisr_results" / "Dataset001_MNIDemo"
    assert (results / "comparison_fig4.png").stat().st_size > 1000
    assert (results / "mscn_fig5.png").stat().st_size > 1000
    # the through-plane stage: a thick-slice scan to 1 mm, scored against its truth
    tp = report.split("## Through-plane SR")[1]
    assert "thickness from dataset.json" in tp and "| B-spline |" in tp
    assert "| mrisr_throughplane |" in tp
    assert (work / "throughplane" / "throughplane.png").stat().st_size > 1000
    mtimes = {p: p.stat().st_mtime for p in results.rglob("checkpoint_final.pth")}
    assert len(mtimes) == len(configurations) - 1  # every configuration but bicubic

    # second run: nothing trained again, predictions reused
    assert demo.main(["--workdir", str(work)]) == 0
    out = capsys.readouterr().out
    assert out.count("trained and validated (reused)") == len(configurations)
    assert {p: p.stat().st_mtime for p in results.rglob("checkpoint_final.pth")} == mtimes
