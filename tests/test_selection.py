"""The selection rule (issue 30/31): the screen names the plans' default configuration and
those worth training; mrisr_train / mrisr_predict without -c use it."""

import json

import pytest
from synthetic import write_dataset

from mrisr.cli.plan_and_preprocess import main as plan_main
from mrisr.cli.predict import main as predict_main
from mrisr.cli.train import main as train_main
from mrisr.evaluation.comparison import columns_of
from mrisr.plans import Plans
from mrisr.training import selection
from mrisr.training.train_api import load_plans
from mrisr.utilities.errors import MrisrError

DS = "Dataset001_Synth"


@pytest.fixture
def planned(mrisr_env):
    write_dataset(mrisr_env["mrisr_raw"], n_pairs=3)
    assert plan_main(["-d", "1", "-np", "1", "--no-select", "--no-time-estimate"]) == 0
    return mrisr_env


def _fake_screen(psnr_of: dict):
    """A screen whose validation PSNR per configuration is known (bicubic at 20 dB)."""

    def screen(plans, name, trainer, device, progress):
        cases = {
            c: {
                name: {"psnr": psnr_of[name] + d, "ssim": 0.8},
                "bicubic": {"psnr": 20 + d, "ssim": 0.7},
            }
            for c, d in (("case_000", 0.0),)
        }
        return {"cases": cases}

    return screen


def test_a_candidate_clearly_better_becomes_the_default(planned, monkeypatch):
    scores = {"dsgan_edsr": 21.0, "gaussian_edsr": 21.2, "dsn_edsr": 22.5, "zerofill_edsr": 20.5}
    monkeypatch.setattr(selection, "screen", _fake_screen(scores))
    plans = load_plans(DS)
    rec = selection.select_configuration(plans, candidates=list(scores))
    assert rec["default"] == "dsn_edsr" and rec["runner_up"] == "gaussian_edsr"
    assert rec["worth_training"] == ["dsn_edsr"]  # nothing else within 0.3 dB of 22.5
    assert rec["scores"]["dsn_edsr"]["gain_psnr"] == pytest.approx(2.5)
    again = Plans.load(plans.path)  # saved, valid, and read back
    assert again.default_configuration == "dsn_edsr"
    assert (
        "+1.50 dB above the planner's default dsgan_edsr"
        in again.data["decisions"]["default_configuration"]
    )


def test_the_planners_default_stays_within_the_margin(planned, monkeypatch):
    scores = {"dsgan_edsr": 21.0, "gaussian_edsr": 21.2, "zerofill_edsr": 19.0}
    monkeypatch.setattr(selection, "screen", _fake_screen(scores))
    rec = selection.select_configuration(load_plans(DS), candidates=list(scores))
    assert rec["default"] == "dsgan_edsr" and rec["best_screened"] == "gaussian_edsr"
    assert rec["worth_training"] == ["dsgan_edsr", "gaussian_edsr"]
    assert "no candidate more than 0.3 dB better" in rec["reason"]
    assert load_plans(DS).worth_training == ["dsgan_edsr", "gaussian_edsr"]


def test_no_candidate_above_bicubic_is_said(planned, monkeypatch):
    scores = {"dsgan_edsr": 19.0, "gaussian_edsr": 19.5}
    monkeypatch.setattr(selection, "screen", _fake_screen(scores))
    rec = selection.select_configuration(load_plans(DS), candidates=list(scores))
    assert rec["default"] == "gaussian_edsr"
    assert "no candidate beat bicubic" in rec["reason"]


def test_real_screen_and_commands_without_c_follow_the_default(planned, tmp_path, capsys):
    plans = load_plans(DS)
    assert plans.default_configuration == "dsgan_edsr"  # before any measurement
    rec = selection.select_configuration(
        plans, candidates=["gaussian_edsr", "zerofill_edsr"], trainer="EDSRTrainer_tiny"
    )
    # the scores are the screens' validations (fold 0's held-out pair), as mrisr_train wrote them
    for name in ("gaussian_edsr", "zerofill_edsr"):
        summary = json.loads(
            (
                planned["mrisr_results"]
                / DS
                / f"EDSRTrainer_tiny__mrisrPlans__{name}"
                / "fold_0"
                / "validation"
                / "summary.json"
            ).read_text()
        )
        assert rec["scores"][name]["psnr"] == pytest.approx(summary["mean"][name]["psnr"]["mean"])
    chosen = rec["default"]
    assert chosen == max(rec["scores"], key=lambda n: rec["scores"][n]["psnr"])  # no dsgan screened
    # mrisr_train without -c trains the default; mrisr_predict without -c predicts with it
    assert train_main(["0", "-d", "1", "-tr", "EDSRTrainer_tiny", "--no-early-stop"]) == 0
    assert chosen in capsys.readouterr().out
    out = tmp_path / "out"
    raw = planned["mrisr_raw"] / DS / "imagesLR"
    assert predict_main(["-i", str(raw), "-o", str(out), "-d", "1", "-tr", "EDSRTrainer_tiny"]) == 0
    assert json.loads((out / "predict_args.json").read_text())["configuration"] == chosen


def test_plans_with_an_unknown_default_are_refused(planned):
    plans = load_plans(DS)
    plans.data["default_configuration"] = "nope_edsr"
    plans.save(plans.path)
    with pytest.raises(MrisrError, match="'default_configuration' 'nope_edsr' is not one of"):
        Plans.load(plans.path)


def test_plan_and_preprocess_selects_by_default_and_prints_it(mrisr_env, monkeypatch, capsys):
    write_dataset(mrisr_env["mrisr_raw"], n_pairs=3)
    screened = []

    def screen(plans, name, trainer, device, progress):
        screened.append(name)
        return _fake_screen({name: 23.0 if name == "gaussian_edsr" else 21.0})(
            plans, name, trainer, device, progress
        )

    monkeypatch.setattr(selection, "screen", screen)
    assert plan_main(["-d", "1", "-np", "1", "--no-time-estimate"]) == 0
    out = capsys.readouterr().out
    plans = load_plans(DS)
    assert set(screened) == {n for n in plans.configuration_names if n != "bicubic"}
    assert plans.default_configuration == "gaussian_edsr"
    assert "default          gaussian_edsr: +3.00 dB over bicubic" in out
    assert "worth training   gaussian_edsr" in out


def test_the_comparison_columns_follow_the_plans_and_their_default(planned):
    plans = load_plans(DS)
    cols = columns_of(plans)
    assert cols[0] == ("bicubic", "Bicubic") and cols[-1] == ("dsgan_edsr", "DSGAN+EDSR")
    assert {n for n, _ in cols} == set(plans.configuration_names)
    # a configuration a user adds is a column under its name (a label is not inherited)
    plans.data["configurations"]["mine_edsr"] = {"inherits_from": "gaussian_edsr"}
    plans.data["default_configuration"] = "gaussian_edsr"
    cols = dict(columns_of(plans))
    assert cols["mine_edsr"] == "mine_edsr" and cols["gaussian_edsr"] == "GB+EDSR"
    assert columns_of(plans)[-1][0] == "gaussian_edsr"
