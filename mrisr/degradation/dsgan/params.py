"""The plans' "dsgan" section: defaults (KernelGAN / paper values) and their validation."""

from __future__ import annotations

import copy
from typing import Any

from mrisr.degradation.kernels import KERNEL_SIZE, lr_crop_size
from mrisr.utilities.scale import check_scale

#: The "dsgan" section of the plans (KernelGAN / paper values, intensities in [0, 1]).
DEFAULT_DSGAN_PARAMS: dict[str, Any] = {
    "iterations": 3000,
    "hr_crop": 64,
    "lr_crop": lr_crop_size(64, 2),
    "kernel_size": KERNEL_SIZE,
    "g_channels": 64,
    "d_channels": 64,
    "g_lr": 2e-4,
    "d_lr": 2e-4,
    "betas": [0.5, 0.999],
    "lr_decay_iterations": [750, 1500, 2250],
    "lr_decay_factor": 10.0,
    "d_input_noise_sd": 0.00196,
    # "measured": D judges G(HR) with the real LR's Rician noise against the raw real LR
    "fake_noise": "none",
    "lambdas": {"bicubic": 5.0, "sum2one": 0.5, "boundaries": 0.5, "center": 0.0, "sparse": 0.0},
    "schedule": {
        "bicubic_threshold": 0.1,
        "threshold_patience": 10,
        "decay_every": 200,
        "decay_factor": 100.0,
        "bicubic_min": 5e-6,
        "switch_below": 5e-3,
        "center_end": 1.0,
        "sparse_end": 5.0,
    },
    "sampling": {"clip_percentile": 97.0, "window": 5},
    "postprocess": {"n_largest": 41, "threshold_fraction": 0.75},
    # arithmetic of D's middle blocks: auto = bf16 where a probe finds it faster
    "precision": "auto",
    # "alternating": KernelGAN's G step, then a D step on the updated G(HR);
    # "simultaneous": both from one scoring of G(HR) (trainer.BatchTrainer._joint_step)
    "update": "alternating",
}

#: Default number of units trained together. On 2 CPU cores (``bench_dsgan.py --sweep``)
#: the time per unit-iteration still falls from 36 (2.31 ms) to 72 units (2.14 ms);
#: memory is ~20 MB per unit.
DEFAULT_UNITS_PER_BATCH = 72
#: Regulariser names in the order of the per-unit lambda columns.
REGULARISERS = ("bicubic", "sum2one", "boundaries", "center", "sparse")


# --------------------------------------------------------------------------- parameters
def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def resolve_params(params: dict | None, scale: int) -> dict:
    """Fill missing keys of a plans "dsgan" section with the defaults and validate it."""
    p = _merge(DEFAULT_DSGAN_PARAMS, params or {})
    unknown = set(p) - set(DEFAULT_DSGAN_PARAMS)
    if unknown:
        raise ValueError(f"unknown dsgan parameters: {sorted(unknown)}")
    s = check_scale(scale)
    k = KERNEL_SIZE
    if p["kernel_size"] != k:
        raise ValueError(f"kernel_size {p['kernel_size']} != generator receptive field {k}")
    expected = lr_crop_size(p["hr_crop"], s, k)
    if p["lr_crop"] != expected:
        raise ValueError(
            f"lr_crop {p['lr_crop']} must equal the generator output size "
            f"(hr_crop - kernel_size)//scale + 1 = {expected}"
        )
    if p["lr_crop"] < 8:
        raise ValueError(f"lr_crop {p['lr_crop']} is too small for the 7x7 discriminator")
    if int(p["iterations"]) < 1:
        raise ValueError("iterations must be >= 1")
    if p["precision"] not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got '{p['precision']}'")
    if p["update"] not in ("alternating", "simultaneous"):
        raise ValueError(f"update must be alternating or simultaneous, got '{p['update']}'")
    if p["fake_noise"] not in ("none", "measured"):
        raise ValueError(f"fake_noise must be none or measured, got '{p['fake_noise']}'")
    missing = set(REGULARISERS) - set(p["lambdas"])
    if missing:
        raise ValueError(f"missing lambdas: {sorted(missing)}")
    return p
