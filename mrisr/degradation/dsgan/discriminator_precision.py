"""The arithmetic of the DSGAN discriminator's middle blocks, chosen by measurement.

Most of a DSGAN iteration is the discriminator's five 64x64 products over every crop pixel,
their BatchNorm and ReLU (``bench_dsgan.py``'s profile). Where the device computes bf16
natively (AMX or AVX512-BF16 on a CPU, a recent CUDA GPU) the products can run in bf16;
whether that is faster depends on the processor and the batch, so ``"precision": "auto"``
(the default of the plans' "dsgan" section) times a few forward/backward passes of the
batch's own discriminator shape in float32 and in bf16 and keeps bf16 only when it is at
least 10 % faster. ``"fp32"`` / ``"bf16"`` force it.

The same probe chooses how many units the discriminator processes at a time
(:meth:`~mrisr.networks.patch_discriminator.StackedPatchDiscriminator.backward_in_chunks`):
the whole batch, 24 or 12 units. Smaller chunks keep a chunk's activations in the cache
between its forward and its backward pass but launch more operations
(``benchmarks/bench_dsgan.py --precision`` times them). The choice is
remembered for the process (same shape, threads and device: same choice) and logged with
every timing, and cached per machine (processor, torch, threads) and shape under
``<mrisr_results>/.machine/dsgan_precision.json``: where float32 and bf16 run alike the
pick would otherwise flip between runs, and with it every kernel a re-run trains.

Only the middle blocks change arithmetic; parameters, optimiser state, the spectral norm,
the first and the last layer and the losses stay float32 (see
:class:`~mrisr.networks.patch_discriminator.StackedPatchDiscriminator`). The kernel
quality in bf16 is checked by ``bench_dsgan.py --quality`` and the recovery test.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import torch

from mrisr.networks.patch_discriminator import StackedPatchDiscriminator
from mrisr.paths import machine_cache
from mrisr.utilities.devices import cpu_bf16_supported
from mrisr.utilities.timings import cached_seconds, machine_key

logger = logging.getLogger(__name__)

CHOICES = ("auto", "fp32", "bf16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
#: bf16 must beat float32 by this factor to be chosen (timing noise, rounding cost)
MARGIN = 0.9
#: chunk sizes (units) the probe tries besides the whole batch
CHUNKS = (12, 24)
CACHE_FILE = Path(".machine") / "dsgan_precision.json"
_CHOSEN: dict[tuple, tuple[str, int]] = {}


def bf16_native(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_bf16_supported()


def chunk_candidates(n_units: int) -> list[int]:
    """Units per chunk of the discriminator's forward/backward that the probe times."""
    return [n_units] + [c for c in CHUNKS if c < n_units]


def pass_seconds(
    n_units: int,
    channels: int,
    lr_crop: int,
    device: torch.device,
    precision: str,
    chunk: int,
    reps: int = 3,
) -> float:
    """Median seconds of one D step's forward and backward (2 crops per unit, ``chunk``
    units at a time) in ``precision``, on random data (the global RNG is not touched)."""
    gens = [torch.Generator().manual_seed(i) for i in range(n_units)]
    disc = StackedPatchDiscriminator(gens, channels=channels, warmup_power_iterations=0)
    disc = disc.to(device)
    disc.compute_dtype = DTYPES[precision]
    crops = torch.rand(n_units, 2, lr_crop, lr_crop, generator=gens[0]).to(device)

    def loss_of(scores: torch.Tensor, units: slice):
        per_unit = scores.mean(dim=(1, 2, 3))
        return per_unit.sum(), per_unit.detach()

    times = []
    for i in range(reps + 1):
        t0 = time.perf_counter()
        disc.backward_in_chunks(crops, disc.normalized_weights(1), loss_of, chunk)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 1:  # one warm-up pass
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def choose(
    requested: str, n_units: int, channels: int, lr_crop: int, device: torch.device
) -> tuple[str, int]:
    """``("fp32" | "bf16", units per chunk)`` for a batch of ``n_units`` discriminators
    (see the module docstring)."""
    if requested not in CHOICES:
        raise ValueError(f"dsgan precision must be one of {CHOICES}, got '{requested}'")
    if requested == "bf16" and not bf16_native(device):
        raise ValueError(f"dsgan precision bf16: {device.type} here does not compute bf16 natively")
    precisions = ["fp32", "bf16"] if bf16_native(device) else ["fp32"]
    if requested != "auto":
        precisions = [requested]
    chunks = chunk_candidates(n_units)
    if len(precisions) == 1 and len(chunks) == 1:
        return precisions[0], chunks[0]
    key = (tuple(precisions), n_units, channels, lr_crop, str(device), torch.get_num_threads())
    if key not in _CHOSEN:
        names = {f"{p}/{c}": (p, c) for p in precisions for c in chunks}
        seconds, source = cached_seconds(
            machine_cache(CACHE_FILE),
            f"{machine_key(device)}|units {n_units}|channels {channels}|crop {lr_crop}",
            list(names),
            lambda name: pass_seconds(n_units, channels, lr_crop, device, *names[name]),
        )
        t = {names[k]: v for k, v in seconds.items()}
        best = min(t, key=t.get)
        if best[0] != "fp32" and "fp32" in precisions:  # reduced precision must earn it
            fp32 = min((v, k) for k, v in t.items() if k[0] == "fp32")
            if t[best] > MARGIN * fp32[0]:
                best = fp32[1]
        _CHOSEN[key] = best
        logger.info(
            "DSGAN discriminator: %s, %d units per chunk (%s, %d units: %s ms per D step)",
            best[0],
            best[1],
            source,
            n_units,
            ", ".join(f"{p}/{c} {1e3 * v:.1f}" for (p, c), v in t.items()),
        )
    return _CHOSEN[key]
