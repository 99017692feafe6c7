"""The plateau rule of early stopping (issue 31): when it goes on, drops the learning rate
early, or stops."""

import math

import pytest

from mrisr.training.early_stopping import CONTINUE, DROP, STOP, PlateauRule

RULE = PlateauRule(patience=3, min_delta=0.02, min_fraction=0.25, validations=20)


def decide(psnr, iteration=None, ceiling=2000, phase_start=0, drops_left=2, rule=RULE):
    its = [100 * (i + 1) for i in range(len(psnr))]
    return rule.decide(its, psnr, iteration or its[-1], ceiling, phase_start, drops_left)[0]


def test_improving_goes_on():
    assert decide([20.0, 20.5, 20.8, 21.0, 21.1, 21.2]) == CONTINUE


def test_plateau_drops_the_learning_rate_while_drops_are_left_then_stops():
    flat = [20.0, 21.0, 21.5, 21.51, 21.49, 21.5]
    assert decide(flat, drops_left=2) == DROP
    assert decide(flat, drops_left=0) == STOP


def test_a_gain_below_min_delta_is_no_gain_and_one_above_is():
    assert decide([20.0, 21.0, 21.5, 21.51, 21.519, 21.5]) == DROP
    assert decide([20.0, 21.0, 21.5, 21.51, 21.521, 21.5]) == CONTINUE


def test_nothing_is_decided_before_the_minimum_budget():
    flat = [21.5] * 6
    assert decide(flat, ceiling=10_000) == CONTINUE  # 600 < 25 % of 10000
    assert decide(flat, ceiling=2000) == DROP


def test_each_learning_rate_phase_gets_patience_validations():
    flat = [21.5] * 6
    assert decide(flat, phase_start=400) == CONTINUE  # only 2 validations after the drop
    assert decide(flat, phase_start=300) == DROP


def test_non_finite_validations_are_left_out():
    assert decide([20.0, math.nan, 21.0, 21.0, math.inf, 21.0, 21.0]) == DROP
    assert decide([math.nan] * 6) == CONTINUE


@pytest.mark.parametrize("planned,ceiling,want", [(400, 4800, 240), (100, 4800, 100), (4, 8, 1)])
def test_validation_interval_is_short_enough_for_the_rule(planned, ceiling, want):
    assert RULE.validate_every(planned, ceiling) == want
