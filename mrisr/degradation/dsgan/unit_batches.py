"""The DSGAN stage's driver: units split into balanced batches, each trained by one
:class:`~mrisr.degradation.dsgan.trainer.BatchTrainer` (threads and allocator set for
the call)."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from mrisr.degradation.dsgan.params import DEFAULT_UNITS_PER_BATCH, resolve_params
from mrisr.degradation.dsgan.trainer import BatchTrainer
from mrisr.degradation.dsgan.units import DSGANResult, DSGANUnit, UnitPlan, prepare_unit
from mrisr.utilities.memory import keep_freed_memory
from mrisr.utilities.threads import set_compute_threads

logger = logging.getLogger(__name__)


def _train_batch(
    plans: list[UnitPlan],
    units: list[DSGANUnit],
    scale: int,
    p: dict,
    device: torch.device,
    progress: bool,
    desc: str,
) -> list[DSGANResult]:
    t0 = time.perf_counter()
    trainer = BatchTrainer(plans, [units[pl.index].name for pl in plans], scale, p, device)
    trainer.run(progress, desc)
    out = trainer.results()
    dt = time.perf_counter() - t0
    iters = int(p["iterations"])
    logger.info(
        "%s: %d iterations in %.1f s (%.2f ms per unit-iteration)",
        desc,
        iters,
        dt,
        1e3 * dt / (iters * len(plans)),
    )
    return out


def _plan_batch(units: list[DSGANUnit], lo: int, hi: int, p: dict, results: list) -> list:
    """The crop plans of units ``lo:hi``; a unit without usable slices is skipped."""
    plans: list[UnitPlan] = []
    for i in range(lo, hi):
        plan = prepare_unit(i, units[i], p, int(p["iterations"]))
        if isinstance(plan, str):
            logger.warning("DSGAN unit %s skipped: %s", units[i].name, plan)
            results[i] = DSGANResult(units[i].name, None, None, {}, "skipped", plan)
        else:
            plans.append(plan)
    return plans


def train_dsgan(
    units: list[DSGANUnit],
    scale: int,
    params: dict | None = None,
    device: str = "cpu",
    units_per_batch: int | None = None,
    progress: bool = True,
) -> list[DSGANResult]:
    """Train one DSGAN per unit, many units at once; return one result per unit, in order.

    Parameters
    ----------
    units:
        Training units (:class:`DSGANUnit`).
    scale:
        Integer in-plane downsampling factor (HR spacing / LR spacing).
    params:
        The plans' "dsgan" section (:data:`DEFAULT_DSGAN_PARAMS` fills missing keys).
    device:
        Torch device. On CPU the number of torch threads is set to the available cores
        for the duration of the call.
    units_per_batch:
        Units trained together (default :data:`DEFAULT_UNITS_PER_BATCH`).
    progress:
        Show a tqdm bar over iterations.

    Returns
    -------
    list of :class:`DSGANResult`. ``losses`` holds the last iteration's ``g_adv``,
    ``d_real``, ``d_fake``, ``d`` and regulariser values (unweighted), the final
    ``lambda_*`` and ``similar_to_bicubic_at`` (iteration at which the bicubic loss
    threshold was met, None if never).
    """
    p = resolve_params(params, scale)
    dev = torch.device(device)
    per = int(units_per_batch or DEFAULT_UNITS_PER_BATCH)
    if per < 1:
        raise ValueError("units_per_batch must be >= 1")
    results: list[DSGANResult | None] = [None] * len(units)
    # Balanced batches (100 units with 72 per batch -> 50 + 50, not 72 + 28); crops are
    # planned batch by batch so that only one batch's slices are copied at a time.
    n_batches = max(1, -(-len(units) // per))
    bounds = np.linspace(0, len(units), n_batches + 1).round().astype(int)
    threads = torch.get_num_threads()
    if dev.type == "cpu":
        set_compute_threads()
        keep_freed_memory()
    try:
        for b in range(n_batches):
            plans = _plan_batch(units, bounds[b], bounds[b + 1], p, results)
            if not plans:
                continue
            desc = f"DSGAN batch {b + 1}/{n_batches} ({len(plans)} units)"
            out = _train_batch(plans, units, int(scale), p, dev, progress, desc)
            for pl, res in zip(plans, out):
                results[pl.index] = res
    finally:
        torch.set_num_threads(threads)
    return [r for r in results if r is not None]
