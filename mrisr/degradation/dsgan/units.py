"""DSGAN training units (a slice, a volume or a dataset) and their preparation: usable
slices, crop positions drawn up front, per-unit RNG streams, the crop gatherer."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mrisr.preprocessing.sampling import (
    crop_center_probabilities,
    gradient_weight_map,
    sample_crop_corners,
)

logger = logging.getLogger(__name__)


@dataclass
class DSGANUnit:
    """One training unit: a slice, a volume or a whole dataset, depending on kernel mode.

    ``hr``: ``(n_hr_slices, H, W)`` float32 normalised HR in-plane slices; ``lr``:
    ``(n_lr_slices, h, w)`` normalised, denoised real LR slices (2D arrays are one slice).
    HR and LR need not be registered. ``paired_slices``: whether slice ``i`` of ``hr`` and
    of ``lr`` are the same location; if so each iteration picks one location and crops
    both from it (the paper's pairing), otherwise the HR and LR slices are picked
    independently. ``None`` (default) pairs them when both stacks have the same number of
    slices. Crops within the slices are always independent. Slices must be at least
    ``hr_crop`` (HR) and
    ``lr_crop`` (LR) pixels wide, finite and not constant to be used.
    ``hr_weight``/``lr_weight``: gradient weight maps (:func:`gradient_weight_map`) of the
    same shapes, computed (only for the slices used) when None. ``noise_sigma`` /
    ``noise_rho``: the Rician noise of the real LR (sd per channel, normalised units, and
    its spatial correlation, :mod:`mrisr.imageio.noise_estimates`), which the generated crops carry
    when the parameters ask for ``"fake_noise": "measured"`` (``lr`` is then the raw LR).
    """

    name: str
    hr: np.ndarray
    lr: np.ndarray
    seed: int
    hr_weight: np.ndarray | None = None
    lr_weight: np.ndarray | None = None
    paired_slices: bool | None = None
    noise_sigma: float = 0.0
    noise_rho: list | None = None


@dataclass
class DSGANResult:
    """Outcome of one unit.

    ``kernel_raw``: the collapsed 13x13 generator kernel (correlation convention, see
    :mod:`mrisr.degradation.kernels`); ``kernel``: post-processed (sum 1, non-negative,
    centred for the decimation phase, ``13 + 2*pad`` wide). ``kernel`` is None unless
    ``status == "ok"``; ``kernel_raw`` is None for "skipped" and "nan". ``status``: ``"ok"``, ``"skipped"`` (no usable data), ``"nan"``
    (training diverged) or ``"failed"`` (post-processing found no positive kernel values).
    ``losses``: final losses and lambdas (see :func:`train_dsgan`).
    """

    name: str
    kernel_raw: np.ndarray | None
    kernel: np.ndarray | None
    losses: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    message: str = ""


# --------------------------------------------------------------------------- unit preparation
@dataclass
class UnitPlan:
    """Crop positions of one unit for every iteration, on the slices actually used."""

    index: int
    hr_slices: np.ndarray  # (n_used, H, W) float32
    lr_slices: np.ndarray
    hr_pos: np.ndarray  # (iters, 3): used-slice index, row, col
    lr_pos: np.ndarray
    noise_rng: np.random.Generator
    torch_seed: int
    noise_sigma: float = 0.0
    noise_rho: list | None = None


def _as_stack(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"{what} must be (slices, H, W) or (H, W), got shape {a.shape}")
    return a


def _usable_slices(stack: np.ndarray, crop: int) -> np.ndarray:
    """Indices of slices at least ``crop`` wide, finite and not constant (foreground)."""
    if stack.shape[1] < crop or stack.shape[2] < crop:
        return np.zeros(0, dtype=np.int64)
    flat = stack.reshape(len(stack), -1)
    finite = np.isfinite(flat).all(axis=1)
    varying = np.zeros(len(stack), dtype=bool)
    varying[finite] = np.ptp(flat[finite], axis=1) > 0
    return np.flatnonzero(varying)


def _sample_positions(
    stack: np.ndarray,
    weight: np.ndarray | None,
    choice: np.ndarray,
    crop: int,
    rng: np.random.Generator,
    sampling: dict,
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient-weighted crop corners on the slices chosen for each iteration.

    ``choice``: slice index (into ``stack``) per iteration. Returns the used slices
    (float32 copy) and ``(iterations, 3)`` positions ``[used_slice, row, col]`` (top-left
    corners). Weight maps are computed only for the slices actually used.
    """
    used, inverse = np.unique(choice, return_inverse=True)
    pos = np.zeros((len(choice), 3), dtype=np.int64)
    pos[:, 0] = inverse
    for j, s in enumerate(used):
        if weight is not None:
            w = np.asarray(weight[s], dtype=np.float32)
        else:
            w = gradient_weight_map(stack[s], sampling["clip_percentile"], sampling["window"])
        prob = crop_center_probabilities(w, crop)
        sel = np.flatnonzero(inverse == j)
        pos[sel, 1:] = sample_crop_corners(prob, crop, len(sel), rng)
    slices = np.ascontiguousarray(stack[used], dtype=np.float32)
    return slices, pos


def _warn_if_not_normalised(name: str, hr: np.ndarray, lr: np.ndarray) -> None:
    for what, a in (("HR", hr), ("LR", lr)):
        top = float(np.nanmax(np.abs(a)))
        if top > 10:
            logger.warning(
                "unit %s: %s intensities reach %.3g; DSGAN thresholds assume intensities "
                "normalised to about [0, 1]",
                name,
                what,
                top,
            )


def prepare_unit(index: int, unit: DSGANUnit, p: dict, iterations: int) -> UnitPlan | str:
    """Sample all crops of a unit, or return the reason it is skipped."""
    try:
        hr = _as_stack(unit.hr, "hr")
        lr = _as_stack(unit.lr, "lr")
    except ValueError as e:
        return str(e)
    for what, w, a in (("hr_weight", unit.hr_weight, hr), ("lr_weight", unit.lr_weight, lr)):
        if w is not None and _as_stack(w, what).shape != a.shape:
            return f"{what} has shape {np.shape(w)}, expected {a.shape}"
    hr_ok = _usable_slices(hr, p["hr_crop"])
    lr_ok = _usable_slices(lr, p["lr_crop"])
    if len(hr_ok) == 0:
        return (
            f"no usable HR slice (need finite, non-constant slices of at least "
            f"{p['hr_crop']}x{p['hr_crop']}; got {hr.shape[0]} of {hr.shape[1]}x{hr.shape[2]})"
        )
    if len(lr_ok) == 0:
        return (
            f"no usable LR slice (need finite, non-constant slices of at least "
            f"{p['lr_crop']}x{p['lr_crop']}; got {lr.shape[0]} of {lr.shape[1]}x{lr.shape[2]})"
        )
    _warn_if_not_normalised(unit.name, hr, lr)
    crop_ss, noise_ss, init_ss = np.random.SeedSequence(int(unit.seed)).spawn(3)
    rng = np.random.default_rng(crop_ss)
    w_hr = None if unit.hr_weight is None else _as_stack(unit.hr_weight, "hr_weight")
    w_lr = None if unit.lr_weight is None else _as_stack(unit.lr_weight, "lr_weight")
    # Slice location per iteration (the paper trains on the HR and LR slice of one
    # location); crops within the slices are drawn independently.
    pair = unit.paired_slices if unit.paired_slices is not None else hr.shape[0] == lr.shape[0]
    if pair and hr.shape[0] != lr.shape[0]:
        return f"paired_slices needs as many HR as LR slices ({hr.shape[0]} vs {lr.shape[0]})"
    paired = np.intersect1d(hr_ok, lr_ok) if pair else np.zeros(0, dtype=np.int64)
    if unit.paired_slices and len(paired) == 0:
        return "no slice location is usable in both HR and LR"
    if len(paired):
        hr_choice = lr_choice = rng.choice(paired, size=iterations)
    else:
        hr_choice = rng.choice(hr_ok, size=iterations)
        lr_choice = rng.choice(lr_ok, size=iterations)
    hr_slices, hr_pos = _sample_positions(hr, w_hr, hr_choice, p["hr_crop"], rng, p["sampling"])
    lr_slices, lr_pos = _sample_positions(lr, w_lr, lr_choice, p["lr_crop"], rng, p["sampling"])
    return UnitPlan(
        index=index,
        hr_slices=hr_slices,
        lr_slices=lr_slices,
        hr_pos=hr_pos,
        lr_pos=lr_pos,
        noise_rng=np.random.default_rng(noise_ss),
        torch_seed=int(init_ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)),
        noise_sigma=float(unit.noise_sigma),
        noise_rho=unit.noise_rho,
    )


class CropGatherer:
    """Gathers one crop per unit per iteration from a flat buffer with a single ``take``."""

    def __init__(
        self, stacks: list[np.ndarray], pos: list[np.ndarray], crop: int, device: torch.device
    ) -> None:
        sizes = [s.size for s in stacks]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.buffer = torch.from_numpy(np.concatenate([s.ravel() for s in stacks])).to(device)
        widths = np.array([s.shape[2] for s in stacks], dtype=np.int64)
        plane = np.array([s.shape[1] * s.shape[2] for s in stacks], dtype=np.int64)
        # offsets[it, n] = start_n + slice * H*W + row * W + col
        offsets = np.stack(
            [
                st + p[:, 0] * pl + p[:, 1] * w + p[:, 2]
                for st, p, pl, w in zip(starts, pos, plane, widths)
            ],
            axis=1,
        )
        self.offsets = torch.from_numpy(offsets).to(device)
        ar = torch.arange(crop, dtype=torch.int64)
        rel = ar[None, :, None] * torch.from_numpy(widths)[:, None, None] + ar[None, None, :]
        self.rel = rel.to(device)  # (N, crop, crop)

    def __call__(self, it: int) -> torch.Tensor:
        return self.buffer.take(self.offsets[it][:, None, None] + self.rel)
