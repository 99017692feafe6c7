"""Training time, told before it is spent: from measured steps (``mrisr_train``, after a
short warm-up) or from the step-time probe (``mrisr_plan_and_preprocess``, per
configuration).

The estimate of a fold is the remaining iterations at the median measured step time plus
the periodic validations, each costed from the same measurement: a validation forward pass
over ``v`` LR pixels takes about ``t_step * v / (3 * batch * patch^2)`` (a training step
is one forward and a backward of about twice its cost over ``batch * patch^2`` pixels).
"""

from __future__ import annotations

import math
from dataclasses import asdict

import torch
from torch.utils.flop_counter import FlopCounterMode

from mrisr.networks.edsr import EDSR
from mrisr.training.precision_probe import probe
from mrisr.training.settings import TrainingSettings

#: A CUDA GPU's sustained dense throughput assumed for the "a GPU would take" line
#: (a mid-range card in bf16/fp16 convolutions at moderate utilisation).
GPU_FLOPS = 30e12


def format_duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``5.5 h``, ``3.2 days``."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def edsr_step_flops(network_args: dict, batch_size: int, lr_patch: int) -> float:
    """Floating-point operations of one training step (forward + backward) of EDSR with
    ``network_args`` on ``batch_size`` LR patches of ``lr_patch``^2, counted by torch's
    :class:`~torch.utils.flop_counter.FlopCounterMode` on one 8x8 patch and scaled by the
    pixels (every layer is a convolution: linear in the pixels)."""
    with torch.random.fork_rng(devices=[]):
        net = EDSR(**network_args)
    x = torch.zeros(1, 1, 8, 8)
    with FlopCounterMode(display=False) as counter:
        net(x).sum().backward()
    return counter.get_total_flops() * batch_size * lr_patch * lr_patch / 64.0


def validation_seconds(
    step_seconds: float, batch_size: int, lr_patch: int, lr_pixels: int, factor: float = 1.0
) -> float:
    """One periodic validation's cost from the training step's (see the module); ``factor``:
    how much slower the validation's arithmetic is (float32 beside a bf16 step)."""
    return factor * step_seconds * lr_pixels / (3.0 * batch_size * lr_patch * lr_patch)


def fold_seconds(
    step_seconds: float,
    remaining: int,
    validations: int,
    batch_size: int,
    lr_patch: int,
    validation_pixels: int,
    validation_factor: float = 1.0,
) -> float:
    """Remaining iterations plus ``validations`` periodic validations."""
    v = validation_seconds(step_seconds, batch_size, lr_patch, validation_pixels, validation_factor)
    return remaining * step_seconds + validations * v


class FoldClock:
    """Measures ``measure`` steps after ``warmup`` and then reports the fold's estimate
    once: :meth:`step_done` returns the message when it is ready. The median over 30
    steps is robust to the few steps the thread tuner spends trying another count."""

    def __init__(
        self,
        start: int,
        total: int,
        validate_every: int,
        batch_size: int,
        lr_patch: int,
        validation_pixels: int,
        device: str,
        gpu_seconds_per_step: float | None = None,
        validation_factor: float = 1.0,
        warmup: int = 3,
        measure: int = 30,
    ) -> None:
        self.start, self.total = start, total
        self.validate_every = max(1, validate_every)
        self.batch_size, self.lr_patch = batch_size, lr_patch
        self.validation_pixels = validation_pixels
        self.validation_factor = validation_factor
        self.device = device
        self.gpu_seconds = gpu_seconds_per_step
        self.warmup, self.measure = warmup, max(1, measure)
        self.times: list[float] = []
        self.seen = 0
        self.estimate: float | None = None  # seconds from the end of the measured steps
        self.total_estimate: float | None = None  # seconds for the whole run

    @classmethod
    def for_training(
        cls,
        settings,
        start: int,
        validation_pixels: int,
        device: str,
        probed: dict[str, float],
        precision: str,
    ) -> FoldClock:
        """The clock of a training run with ``settings`` (a TrainingSettings) from
        iteration ``start``; ``probed``: the precision probe's step times (validation runs
        float32, slower per pixel than a reduced-precision step by their ratio)."""
        s = settings
        gpu = edsr_step_flops(s.network_args(), s.batch_size, s.lr_patch) / GPU_FLOPS
        factor = (
            probed["fp32"] / probed[precision] if "fp32" in probed and precision in probed else 1.0
        )
        return cls(
            start,
            s.iterations,
            s.validate_every,
            s.batch_size,
            s.lr_patch,
            validation_pixels,
            device,
            gpu_seconds_per_step=gpu,
            validation_factor=factor,
        )

    def step_done(self, iteration: int, seconds: float) -> str | None:
        self.seen += 1
        if self.estimate is not None or self.seen <= self.warmup:
            return None
        self.times.append(seconds)
        if len(self.times) < self.measure and iteration < self.total:
            return None
        t = sorted(self.times)[len(self.times) // 2]
        remaining = self.total - iteration
        validations = self.total // self.validate_every - iteration // self.validate_every
        self.estimate = fold_seconds(
            t,
            remaining,
            validations,
            self.batch_size,
            self.lr_patch,
            self.validation_pixels,
            self.validation_factor,
        )
        done = self.seen * t  # what the warm-up and measured steps took (about)
        self.total_estimate = self.estimate + done
        msg = (
            f"time estimate: {self.total - self.start} iterations at {t:.3g} s = "
            f"{format_duration(self.total_estimate)} on {self.device}"
            f" ({format_duration(self.estimate)} to go, {validations} validations included)"
        )
        if self.device == "cpu" and self.gpu_seconds is not None:
            gpu = self.gpu_seconds * (self.total - self.start)
            msg += f"; a CUDA GPU would take about {format_duration(gpu)}"
        return msg


def plan_cost_lines(plans, folds: int, results_cache=None, names=None) -> list[str]:
    """The plan's estimated CPU training cost per configuration (``names``, default all): a
    few probed steps of each planned network (fastest native precision,
    :func:`mrisr.training.precision_probe.probe`) x its iterations x ``folds``. DSGAN's kernel
    estimation and validation come on top."""
    device = torch.device("cpu")
    lines, probed, total = [], {}, 0.0
    for name in names if names is not None else plans.configuration_names:
        config = plans.configuration(name)
        if not config.requires_training:
            continue
        sr = TrainingSettings(**asdict(config.sr_plan), scale=plans.scale)
        args = sr.network_args()
        key = (repr(sorted(args.items())), sr.batch_size, sr.lr_patch)
        if key not in probed:
            probed[key] = probe(device, args, sr.batch_size, sr.lr_patch, results_cache)
        choice = probed[key]
        t = choice.seconds[choice.precision]
        its = sr.iterations
        gpu = edsr_step_flops(args, key[1], key[2]) / GPU_FLOPS * its * folds
        total += folds * its * t
        lines.append(
            f"    {name:<18} {folds} folds x {its} iterations at {t:.3g} s "
            f"({choice.precision}) = {format_duration(folds * its * t)} on this CPU "
            f"(a CUDA GPU: ~{format_duration(gpu)})"
        )
    if len(lines) > 1:
        label = "all of them" if names is None else "together"
        lines.append(f"    {label:<18} {format_duration(total)} on this CPU")
    return lines
