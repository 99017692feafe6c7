"""--time-budget (issue 31): each configuration's SR training fitted to a wall-clock budget
on the measured speed: the ceiling, a smaller network where needed, one-line errors."""

import json

import pytest
from cli_runs import DS, run

from mrisr.cli import plan_and_preprocess as plan_cli
from mrisr.plans import Plans
from mrisr.training.time_budget import MIN_ITERATIONS, RESERVE, fit_time_budget, parse_duration
from mrisr.utilities.errors import MrisrError


def step_seconds(args, batch, patch):
    """A fake machine: 1 ms per 1000 multiply-adds of a block-feature unit."""
    return args["num_blocks"] * args["num_features"] ** 2 / 1e6


@pytest.fixture
def plans(env):
    return Plans.load(env["mrisr_preprocessed"] / DS / "mrisrPlans.json")


def trained(plans):
    return [n for n in plans.configuration_names if plans.configuration(n).requires_training]


@pytest.mark.parametrize(
    "text,seconds", [("2h", 7200), ("90m", 5400), ("45min", 2700), ("600s", 600), ("1.5h", 5400)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["2", "-1h", "0s", "two hours", "5d"])
def test_bad_durations_are_one_line(text):
    with pytest.raises(MrisrError, match="--time-budget"):
        parse_duration(text)


def test_a_generous_budget_keeps_the_plan(plans):
    before = {n: dict(plans.configuration(n).sr) for n in trained(plans)}
    fit_time_budget(plans, 10**9, step_seconds)
    for n, sr in before.items():
        assert plans.configuration(n).sr == sr
    assert "time_budget" in plans.data["decisions"]


def test_the_ceiling_is_what_fits_and_the_schedule_scales(plans):
    plans.data["initialisation"] = "scratch"  # no shipped network to step down to
    name = trained(plans)[0]
    sr = dict(plans.configuration(name).sr)
    t = step_seconds({"num_blocks": sr["num_blocks"], "num_features": sr["num_features"]}, 0, 0)
    want = max(MIN_ITERATIONS, sr["iterations"] // 2)
    budget = want * t / (1 - RESERVE) + 1e-6
    assert want < sr["iterations"]
    lines = fit_time_budget(plans, budget, step_seconds)
    new = plans.configuration(name).sr
    assert new["iterations"] == want
    assert (new["num_blocks"], new["num_features"]) == (sr["num_blocks"], sr["num_features"])
    ratio = want / sr["iterations"]
    assert new["lr_milestones"] == [round(m * ratio) for m in sr["lr_milestones"]]
    assert any(f"{want} of {sr['iterations']} planned iterations" in ln for ln in lines)
    assert not any(f"{want} of {want} planned" in ln for ln in lines)  # inherited sr: as planned
    plans.save(plans.path)
    Plans.load(plans.path)  # still valid plans


def test_a_tight_budget_takes_a_smaller_network(plans):
    name = trained(plans)[0]
    sr = dict(plans.configuration(name).sr)
    t = step_seconds({"num_blocks": sr["num_blocks"], "num_features": sr["num_features"]}, 0, 0)
    fit_time_budget(plans, 500 * t, step_seconds)  # ~450 steps of the planned network
    new = plans.configuration(name).sr
    assert new["num_blocks"] * new["num_features"] ** 2 < sr["num_blocks"] * sr["num_features"] ** 2
    assert new["iterations"] >= min(MIN_ITERATIONS, sr["iterations"]) or new["num_features"] == 16


def test_a_budget_too_small_for_any_network_is_one_line(plans):
    with pytest.raises(MrisrError, match="give at least"):
        fit_time_budget(plans, 1e-3, step_seconds)


def test_plan_and_preprocess_with_a_time_budget(env):
    code, out, err = run(plan_cli, "-d", "1", "-np", "1", "--no-select", "--time-budget", "20s")
    assert code == 0, err
    plans = json.loads((env["mrisr_preprocessed"] / DS / "mrisrPlans.json").read_text())
    assert "time_budget" in plans["decisions"] and "time_budget" in out
    code, _, err = run(plan_cli, "-d", "1", "--time-budget", "soon")
    assert code == 2 and "--time-budget 'soon'" in err


def test_a_tight_budget_steps_down_to_the_shipped_generic_network(plans):
    """Where the planned 16 x 64 fits too few iterations and 8 x 64 from random weights
    would fit a cut-short training, plans that fine-tune take the shipped 8 x 32 generic
    network instead; plans from scratch keep the ladder's next rung; a budget that fits the
    planned training in full keeps it."""
    name = trained(plans)[0]
    sr = dict(plans.configuration(name).sr)
    assert (sr["num_blocks"], sr["num_features"]) == (16, 64)
    assert plans.initialisation == "generic"
    t = step_seconds({"num_blocks": 16, "num_features": 64}, 0, 0)
    budget = 1500 * t / (1 - RESERVE)  # 16 x 64: 1500 steps; 8 x 64: 3000
    scratch = Plans(json.loads(json.dumps(plans.data)))
    scratch.data["initialisation"] = "scratch"
    lines = fit_time_budget(plans, budget, step_seconds)
    new = plans.configuration(name).sr
    assert (new["num_blocks"], new["num_features"]) == (8, 32)
    assert new["iterations"] == min(sr["iterations"], int(budget * (1 - RESERVE) / (t / 8)))
    assert any("fine-tunes the generic network" in ln for ln in lines)
    fit_time_budget(scratch, budget, step_seconds)
    assert (
        scratch.configuration(name).sr["num_blocks"],
        scratch.configuration(name).sr["num_features"],
    ) == (8, 64)
    full = Plans(json.loads(json.dumps(scratch.data)))
    full.data["initialisation"] = "generic"
    before = dict(full.configuration(name).sr)
    fit_time_budget(
        full,
        before["iterations"]
        * step_seconds({"num_blocks": 8, "num_features": 64}, 0, 0)
        / (1 - RESERVE)
        + 1,
        step_seconds,
    )
    assert full.configuration(name).sr["num_features"] == 64  # all 8 x 64 iterations fit
