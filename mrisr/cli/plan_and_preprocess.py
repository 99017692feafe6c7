"""``mrisr_plan_and_preprocess``: verify, fingerprint, plan and preprocess datasets."""

from __future__ import annotations

import argparse
import time

from mrisr.planning.planners import PLANNERS
from mrisr.utilities.cli_support import int_at_least, run_command, setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mrisr_plan_and_preprocess",
        description="Check a raw dataset, fingerprint it, write plans.json with every "
        "configuration, and preprocess the data for training.",
    )
    p.add_argument(
        "-d",
        nargs="+",
        metavar="ID",
        help="dataset id(s) or name(s); default: all under $mrisr_raw",
    )
    p.add_argument(
        "-np", type=int_at_least(1), default=2, metavar="N", help="worker processes (default 2)"
    )
    p.add_argument(
        "-pl",
        default="DefaultPlanner",
        metavar="PLANNER",
        help=f"planner class (default DefaultPlanner; known: {', '.join(PLANNERS.declared_names())})",
    )
    p.add_argument("--verify-only", action="store_true", help="run only the integrity check")
    p.add_argument(
        "--clean", action="store_true", help="recompute the fingerprint and preprocess from scratch"
    )
    p.add_argument(
        "--no-time-estimate",
        action="store_true",
        help="skip the estimate of each configuration's training time (a few timed steps "
        "of each planned network on this CPU, cached under $mrisr_results)",
    )
    p.add_argument(
        "--time-budget",
        metavar="T",
        help="fit each configuration's SR training to T per fold on this machine's measured "
        "speed (e.g. 2h, 90m): the iteration ceiling, and a smaller network where needed",
    )
    p.add_argument(
        "--no-select",
        action="store_true",
        help="skip the selection rule (a short screening training of every configuration on "
        "fold 0, validated on its real LR pairs) that names the plans' default configuration "
        "and those worth training",
    )
    p.add_argument(
        "--from-scratch",
        action="store_true",
        help="plan SR trainings that start from random weights (default: fine-tune the "
        "generic network shipped with mrisr where one of the planned size exists)",
    )
    p.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda", "mps"], help="device of the screen"
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        from mrisr.planning.plan_and_preprocess_api import (
            dataset_names,
            plan_and_preprocess,
            summary_text,
        )

        budget = None
        if args.time_budget is not None:
            from mrisr.training.time_budget import parse_duration

            budget = parse_duration(args.time_budget)  # a bad value fails before any work
        for name in dataset_names(args.d):
            t0 = time.time()
            verified, plans = plan_and_preprocess(
                name, args.np, verify_only=args.verify_only, clean=args.clean, planner=args.pl
            )
            if plans is None:
                print(f"{name}: OK ({len(verified.cases)} cases pass the integrity check)")
            else:
                # the through-plane configurations carry their own budget (plans'
                # "through_plane"): the budget, the screen and the estimate are in-plane's
                in_plane = any(
                    plans.configuration(n).axis == "in-plane" for n in plans.configuration_names
                )
                if args.from_scratch and in_plane:
                    plan_from_scratch(plans)
                if budget is not None and in_plane:
                    apply_time_budget(plans, budget)
                if not args.no_select and in_plane:
                    from mrisr.training.selection import select_configuration

                    select_configuration(plans, device=args.device, progress=args.verbose)
                print(summary_text(name, verified, plans))
                if not args.no_time_estimate and in_plane:
                    print(training_cost_text(verified, plans))
                print(f"  done in {time.time() - t0:.1f} s")
        return 0

    return run_command("mrisr_plan_and_preprocess", body)


def plan_from_scratch(plans) -> None:
    """Record that the plans' SR trainings start from random weights, and save them."""
    plans.data["initialisation"] = "scratch"
    plans.data.setdefault("decisions", {})["initialisation"] = (
        "scratch (--from-scratch): each SR training starts from random weights"
    )
    plans.save(plans.path)


def apply_time_budget(plans, budget: float) -> None:
    """Fit the plans' SR trainings to ``budget`` seconds (measured here) and save them."""
    import torch

    from mrisr import paths
    from mrisr.training.precision_probe import CACHE_FILE, probe
    from mrisr.training.time_budget import fit_time_budget

    cache = paths.machine_cache(CACHE_FILE)

    def step_seconds(args: dict, batch: int, patch: int) -> float:
        choice = probe(torch.device("cpu"), args, batch, patch, cache)
        return choice.seconds[choice.precision]

    fit_time_budget(plans, budget, step_seconds)
    plans.save(plans.path)


def training_cost_text(verified, plans) -> str:
    """The estimated training time of every configuration, measured on this CPU."""
    from mrisr import paths
    from mrisr.training.estimate import plan_cost_lines
    from mrisr.training.precision_probe import CACHE_FILE

    pairs = sum(c.is_pair for c in verified.cases)
    folds = max(1, min(5, pairs))
    names = plans.worth_training
    lines = plan_cost_lines(plans, folds, paths.machine_cache(CACHE_FILE), names)
    head = (
        "  training time    (EDSR, measured on this CPU; mrisr_train prints its own estimate; "
        + ("the configurations worth training)" if "selection" in plans.data else "all)")
    )
    return "\n".join([head, *lines])


if __name__ == "__main__":
    raise SystemExit(main())
