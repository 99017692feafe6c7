"""The arithmetic the SR network trains in, chosen by measurement, and the step-time probe
that the time estimates use.

``auto`` (the default) times a few optimisation steps of the planned network in float32
and in the reduced precisions the device computes natively (CPU: bf16 where oneDNN has
AVX512-BF16 / AMX kernels; CUDA: bf16 / fp16) and keeps the fastest. fp16 on a CPU is
available by request only (``--precision fp16``; see :func:`auto_candidates`). The result is cached per machine (CPU model, torch version, threads) and network
under ``<mrisr_results>/.machine/precision.json``, so the probe runs once. Weights,
optimiser state and loss stay float32 in every precision (autocast); fp16 adds a gradient
scaler.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mrisr import paths
from mrisr.networks.edsr import EDSR
from mrisr.training.optimisation import Optimisation, OptimisationSettings
from mrisr.utilities.devices import cpu_bf16_supported, cpu_fp16_supported
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.timings import cached_seconds, machine_key

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
CHOICES = ("auto",) + PRECISIONS
CACHE_FILE = Path(".machine") / "precision.json"


def native_precisions(device: torch.device) -> list[str]:
    """fp32 and the reduced precisions ``device`` computes natively."""
    out = ["fp32"]
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            out.append("bf16")
        out.append("fp16")
    elif device.type == "cpu":
        if cpu_bf16_supported():
            out.append("bf16")
        if cpu_fp16_supported():
            out.append("fp16")
    return out


def auto_candidates(device: torch.device) -> list[str]:
    """What ``auto`` times: the native precisions, less fp16 on CPU (oneDNN reports fp16
    support with AVX512-FP16, but an autocast fp16 training step there took 34 s against
    0.06 s in bf16 on a 2-core Xeon: a probe of it would cost minutes)."""
    native = native_precisions(device)
    return [p for p in native if not (device.type == "cpu" and p == "fp16")]


def step_seconds(
    network_args: dict,
    batch_size: int,
    lr_patch: int,
    device: torch.device,
    precision: str,
    steps: int = 3,
    warmup: int = 2,
) -> float:
    """Median seconds of one optimisation step (L1, Adam, clipping) of an EDSR with
    ``network_args`` on random ``batch_size`` x ``lr_patch``^2 patches, as the trainer
    runs it (channels_last on CPU)."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):  # the caller's random state stays untouched
        net = EDSR(**network_args).to(device)
    s = int(network_args["scale"])
    lr = torch.rand(batch_size, 1, lr_patch, lr_patch, generator=gen).to(device)
    hr = torch.rand(batch_size, 1, lr_patch * s, lr_patch * s, generator=gen).to(device)
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)
        lr = lr.contiguous(memory_format=torch.channels_last)
        hr = hr.contiguous(memory_format=torch.channels_last)
    opt = Optimisation(
        net, OptimisationSettings(1e-5, (0.9, 0.999), (10**9,), 0.5, 1.0), device, precision
    )
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        float(opt.step(lr, hr))  # synchronises the device
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


@dataclass
class PrecisionChoice:
    precision: str | None  # None: the device's default (CUDA: bf16, else fp16)
    seconds: dict[str, float] = field(default_factory=dict)  # probe: s per step
    source: str = "requested"  # requested | probe | cache | checkpoint | trainer

    def describe(self, effective: str | None = None) -> str:
        """E.g. "precision bf16 (probe: fp32 212 ms, bf16 61 ms per step)"."""
        timing = ", ".join(f"{k} {1e3 * v:.0f} ms" for k, v in self.seconds.items())
        timing = f": {timing} per step" if timing else ""
        return f"precision {effective or self.precision} ({self.source}{timing})"


def _cache_key(device: torch.device, network_args: dict, batch_size: int, lr_patch: int) -> str:
    net = json.dumps(network_args, sort_keys=True)
    return f"{machine_key(device)}|{net}|batch {batch_size}|patch {lr_patch}"


def probe(
    device: torch.device,
    network_args: dict,
    batch_size: int,
    lr_patch: int,
    cache: Path | None = None,
    candidates: list[str] | None = None,
) -> PrecisionChoice:
    """The fastest of ``candidates`` (default: :func:`auto_candidates`) for this network,
    from ``cache`` when it holds this machine and network, else measured (and cached)."""
    device = torch.device(device)
    candidates = candidates or auto_candidates(device)
    key = _cache_key(device, network_args, batch_size, lr_patch)
    seconds, source = cached_seconds(
        cache,
        key,
        candidates,
        lambda p: step_seconds(network_args, batch_size, lr_patch, device, p),
    )
    best = min(seconds, key=seconds.get)
    return PrecisionChoice(best, {p: seconds[p] for p in candidates}, source)


def check_precision(requested: str, device: torch.device) -> None:
    """One-line MrisrError for a precision this device does not compute."""
    if requested not in CHOICES:
        raise MrisrError(f"--precision {requested}: choose one of {', '.join(CHOICES)}")
    if requested in ("auto", "fp32"):
        return
    native = native_precisions(torch.device(device))
    if requested not in native:
        raise MrisrError(
            f"--precision {requested}: this {torch.device(device).type} does not compute "
            f"{requested} natively (it does: {', '.join(native)}); use --precision auto"
        )


def choose(
    requested: str,
    device: torch.device,
    settings,
    state: dict | None = None,
    variant: tuple[str, bool] | None = None,
) -> PrecisionChoice:
    """The arithmetic a training run uses: ``requested`` unless ``auto``; else the resumed
    checkpoint's (``state``); on non-CPU devices the device default; a trainer variant's
    fixed choice (``variant`` = (name, bf16 wanted)); else on CPU the fastest native one
    by :func:`probe` for the network of ``settings`` (cached under ``$mrisr_results``)."""
    if requested != "auto":
        return PrecisionChoice(requested, source="requested")
    if state is not None and state.get("precision") in PRECISIONS:
        return PrecisionChoice(state["precision"], source="checkpoint")
    if torch.device(device).type != "cpu":
        return PrecisionChoice(None, source="device default")
    if variant is not None:
        bf16 = variant[1] and cpu_bf16_supported()
        return PrecisionChoice("bf16" if bf16 else "fp32", source=variant[0])
    s = settings
    return probe(
        device, s.network_args(), s.batch_size, s.lr_patch, paths.machine_cache(CACHE_FILE)
    )
