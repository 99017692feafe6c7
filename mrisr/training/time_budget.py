"""``mrisr_plan_and_preprocess --time-budget 2h``: each configuration's SR training fitted to
a wall-clock budget per configuration and fold, on this machine's measured speed.

For every configuration that trains, the step time of its planned network is measured
(:func:`mrisr.training.precision_probe.probe`: a few timed steps in the fastest native precision,
cached per machine and network). Its iteration ceiling becomes what fits in the budget less a
reserve for the periodic validations, data loading and the final validation, and at most the
planned count. Where fewer than :data:`MIN_ITERATIONS` would fit, the next smaller network
of :data:`NETWORK_LADDER` is measured instead (a smaller EDSR trained longer beats a larger
one trained for a few hundred steps). Where the plans fine-tune the generic networks shipped
with mrisr (``"initialisation": "generic"``), a network larger than the largest shipped one
starts from random weights and is kept only where all its planned iterations fit; else the
ladder steps to the shipped network, which starts from weights that already know MRI (on the
demo, 300 fine-tuning iterations of the shipped 8 x 32 validated above a 16 x 64 trained
from random weights for 7 minutes). The learning-rate milestones and the checkpoint and
validation intervals scale with the iterations, as for a trainer variant. The decision is
recorded in the plans (``decisions.time_budget``); ``EDSRTrainer`` trains it, early stopping
may stop it sooner. The degradation stage (DSGAN kernels, once per dataset) is not part of
the budget.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict

from mrisr.networks.checkpoint_io import generic_weights_for
from mrisr.networks.registry import network_spec
from mrisr.plans import Plans, SRPlan
from mrisr.training.estimate import format_duration
from mrisr.training.settings import TrainingSettings, rescaled
from mrisr.utilities.errors import MrisrError

#: (blocks, features), largest first: each about half the arithmetic of the one before
NETWORK_LADDER = ((16, 64), (8, 64), (8, 32), (4, 32), (4, 16))
#: below this many iterations the next smaller network is tried
MIN_ITERATIONS = 2000
#: the smallest ceiling a budget may give
MIN_FIT = 100
#: share of the budget kept for validations, data loading and the final validation
RESERVE = 0.10

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hours?)\s*$", re.IGNORECASE)
_UNIT = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "hours": 3600}

#: (network args, batch size, LR patch) -> seconds per training step
StepSeconds = Callable[[dict, int, int], float]
#: (registered network name, constructor args) -> whether a generic network is shipped
Shipped = Callable[[str, dict], bool]


def shipped_generic(network: str, args: dict) -> bool:
    """Whether mrisr ships a generic network of this architecture (any scale)."""
    return generic_weights_for(network, args) is not None


def parse_duration(text: str) -> float:
    """'2h', '90m', '45min', '600s', '1.5h' -> seconds (one-line MrisrError otherwise)."""
    m = _DURATION.match(str(text))
    if not m:
        raise MrisrError(f"--time-budget {text!r}: give a number and a unit, e.g. 2h, 90m, 600s")
    seconds = float(m.group(1)) * _UNIT[m.group(2).lower()]
    if seconds <= 0:
        raise MrisrError(f"--time-budget {text!r}: must be more than zero")
    return seconds


def _arithmetic(blocks: int, features: int) -> int:
    """An EDSR body's multiply-adds per pixel, up to a constant: what orders the ladder."""
    return blocks * features**2


def _ladder(blocks: int, features: int) -> list[tuple[int, int]]:
    """The planned network, then the smaller rungs of the ladder."""
    size = _arithmetic(blocks, features)
    return [(blocks, features)] + [
        (b, f)
        for b, f in NETWORK_LADDER
        if _arithmetic(b, f) < size and (b, f) != (blocks, features)
    ]


def _scaled(sr: dict, blocks: int, features: int, iterations: int) -> dict:
    ratio = iterations / sr["iterations"]
    return {
        **sr,
        "num_blocks": blocks,
        "num_features": features,
        "iterations": iterations,
        "lr_milestones": [rescaled(m, ratio) for m in sr["lr_milestones"]],
        "checkpoint_every": rescaled(sr["checkpoint_every"], ratio),
        "validate_every": rescaled(sr["validate_every"], ratio),
    }


def fit_time_budget(
    plans: Plans, budget: float, step_seconds: StepSeconds, shipped: Shipped | None = None
) -> list[str]:
    """Fit every training configuration of ``plans`` (changed in place) to ``budget``
    seconds per configuration and fold; returns one line per distinct fit. ``shipped``
    says which networks have generic weights (default: those shipped with mrisr, where the
    plans fine-tune them; none from scratch)."""
    if shipped is None and plans.initialisation == "generic":
        shipped = shipped_generic
    planned = {  # resolved before any is changed (children inherit their parent's sr)
        name: dict(plans.configuration(name).sr)
        for name in plans.configuration_names
        if plans.configuration(name).requires_training
    }
    fits: dict[str, tuple[dict, str]] = {}
    users: dict[str, list[str]] = {}
    for name, sr in planned.items():
        key = repr(sorted(sr.items()))
        if key not in fits:
            fits[key] = _fit(sr, plans.scale, budget, step_seconds, shipped)
        users.setdefault(key, []).append(name)
    for name, sr in planned.items():
        plans.data["configurations"][name]["sr"] = fits[repr(sorted(sr.items()))][0]
    lines = [f"{', '.join(users[k])}: {fits[k][1]}" for k in fits]
    plans.data.setdefault("decisions", {})["time_budget"] = (
        f"{format_duration(budget)} per configuration and fold on this machine "
        f"({100 * RESERVE:.0f} % kept for validation and data loading): " + "; ".join(lines)
    )
    return lines


def _fit(
    sr: dict, scale: int, budget: float, step_seconds: StepSeconds, shipped: Shipped | None
) -> tuple[dict, str]:
    planned = int(sr["iterations"])
    plan = TrainingSettings(**asdict(SRPlan.from_dict(sr)), scale=scale)

    def args_of(blocks: int, features: int) -> dict:
        return network_spec(plan.network).init_args(
            {"num_blocks": blocks, "num_features": features, "res_scale": plan.res_scale}, scale
        )

    rungs = _ladder(plan.num_blocks, plan.num_features)
    generic = [r for r in rungs if shipped is not None and shipped(plan.network, args_of(*r))]
    largest_generic = _arithmetic(*generic[0]) if generic else 0
    for i, (blocks, features) in enumerate(rungs):
        args = args_of(blocks, features)
        t = step_seconds(args, plan.batch_size, plan.lr_patch)
        fits = int(budget * (1 - RESERVE) / t)
        # a random start above a shipped generic network must fit all its planned
        # iterations: cut short, it loses to fine-tuning the smaller one
        # (documentation/mrisr_plan_and_preprocess.md, "A time budget")
        cut_random_start = _arithmetic(blocks, features) > largest_generic > 0
        need = planned if cut_random_start else min(MIN_ITERATIONS, planned)
        if fits >= need or i == len(rungs) - 1:
            break
    if fits < MIN_FIT:
        raise MrisrError(
            f"--time-budget {format_duration(budget)}: even a {blocks} x {features} EDSR fits "
            f"only {fits} iterations at {t:.3g} s on this machine; give at least "
            f"{format_duration(MIN_FIT * t / (1 - RESERVE))}"
        )
    its = min(planned, fits)
    line = (
        f"{blocks} x {features} EDSR, {its} of {planned} planned iterations at {t:.3g} s "
        f"= {format_duration(its * t)}"
    )
    if (blocks, features) != rungs[0]:
        line += f" (the planned {rungs[0][0]} x {rungs[0][1]} would fit too few iterations"
        if (blocks, features) in generic:
            line += "; fine-tunes the generic network shipped with mrisr"
        line += ")"
    return _scaled(sr, blocks, features, its), line
