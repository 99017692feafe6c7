"""Downsampling network (DSN) of Chun et al. 2019: a CNN fitted with a pixel-wise loss.

The paper's section 2.C.3 baseline. Chun et al. learn the HR -> LR translation with a
small fully convolutional network trained with a pixel-wise loss against the *real* LR
of each (HR, LR) pair. Unlike the linear DSGAN generator it is non-linear and sees the
pairs pixel by pixel, so any misregistration between the breath-hold LR and HR series is
learned as (blurry, structure-dropping) degradation: that failure is what the comparison
shows.

Architecture (:class:`DownsamplingNetwork`)::

    out = bicubic(x) + body(x)
    body = [conv3x3(1->C) ReLU] [conv3x3(C->C) ReLU] x (num_layers - 2) conv(s+2)x(s+2)/s (C->1)

* ``bicubic(x)``: fixed anti-aliased bicubic decimation (the ``"bicubic"`` model, same
  taps and half-sample symmetric borders), so an untrained DSN *is* the bicubic
  degradation; the last conv is zero-initialised and the network learns a residual.
* The strided last conv has kernel ``s + 2`` and padding 1: its output ``i`` is centred
  on HR position ``s*i + (s-1)/2`` (pixel-shuffle convention), like every mrisr model;
  the 3x3 convs are centred (reflect padding). Output is exactly ``(H//s, W//s)``.

Training (:meth:`DSNDegradation.fit`): per iteration ``batch_size`` random crops of
``hr_crop`` HR pixels (rounded down to a multiple of ``s`` and to the smallest slice) and
the aligned ``hr_crop/s`` LR pixels (top-left at multiples of
``s``, so HR pixels ``s*i .. s*i+s-1`` lie under LR pixel ``i``), optionally restricted
to crops centred on foreground, Adam, L1 (or L2) loss. Parameters (plans)::

    {"name": "dsn", "channels": 32, "num_layers": 4, "iterations": 2000,
     "learning_rate": 1e-4, "batch_size": 16, "hr_crop": 64, "loss": "l1"}
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mrisr.degradation.base import (
    DEGRADATIONS,
    LearnedDegradation,
    PlanningContext,
    as_slice_stack,
)
from mrisr.degradation.kernels import bicubic_taps

logger = logging.getLogger(__name__)

DEFAULTS: dict = {
    "channels": 32,
    "num_layers": 4,
    "iterations": 2000,
    "learning_rate": 1e-4,
    "batch_size": 16,
    "hr_crop": 64,
    "loss": "l1",
}
LOSSES = ("l1", "l2")


def symmetric_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Half-sample symmetric padding of the last two dims (scipy ``reflect``, MATLAB ``symmetric``)."""
    if pad == 0:
        return x
    if pad > x.shape[-1] or pad > x.shape[-2]:
        raise ValueError(f"cannot pad {tuple(x.shape[-2:])} by {pad}")
    x = torch.cat([x[..., :pad, :].flip(-2), x, x[..., -pad:, :].flip(-2)], dim=-2)
    return torch.cat([x[..., :pad].flip(-1), x, x[..., -pad:].flip(-1)], dim=-1)


class DownsamplingNetwork(nn.Module):
    """Fully convolutional non-linear HR -> LR network with a fixed bicubic residual.

    Input ``(N, 1, H, W)``, output ``(N, 1, H//s, W//s)``; see the module docstring.
    """

    def __init__(self, scale: int, channels: int = 32, num_layers: int = 4):
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"DSN needs at least 2 layers, got {num_layers}")
        self.scale = scale
        layers: list[nn.Module] = []
        cin = 1
        for _ in range(num_layers - 1):
            layers += [nn.Conv2d(cin, channels, 3, padding=1, padding_mode="reflect"), nn.ReLU()]
            cin = channels
        self.body = nn.Sequential(*layers)
        self.tail = nn.Conv2d(
            channels, 1, scale + 2, stride=scale, padding=1, padding_mode="reflect"
        )
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)
        taps = torch.as_tensor(bicubic_taps(scale), dtype=torch.float32)
        self.register_buffer("bicubic", torch.outer(taps, taps)[None, None], persistent=False)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """Fixed bicubic decimation (identical to the ``"bicubic"`` model)."""
        k = self.bicubic
        p = k.shape[-1] // 2
        y = F.conv2d(symmetric_pad(x, p), k, stride=self.scale)
        return y[..., : x.shape[-2] // self.scale, : x.shape[-1] // self.scale]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.tail(self.body(x))
        return self.residual(x) + y[..., : x.shape[-2] // self.scale, : x.shape[-1] // self.scale]


def _lr_mask(mask: np.ndarray | None, lr_shape: tuple, scale: int, i: int) -> np.ndarray | None:
    """A foreground mask on the LR grid (given on the LR or the HR grid)."""
    if mask is None:
        return None
    m = np.asarray(mask).astype(bool)
    if m.ndim == 2:
        m = m[None]
    z, h, w = lr_shape
    if m.shape == (z, h, w):
        return m
    if m.shape[0] == z and m.shape[1] // scale == h and m.shape[2] // scale == w:
        m = m[:, : h * scale, : w * scale].reshape(z, h, scale, w, scale)
        return m.any(axis=(2, 4))
    raise ValueError(f"mask {i} has shape {m.shape}, expected the LR {lr_shape} or the HR grid")


def _checked_pairs(pairs, masks, s: int) -> tuple[list, list, list]:
    """The pairs as (z, H, W) HR and (z, H//s, W//s) LR stacks and LR-grid masks, checked."""
    if not pairs:
        raise ValueError("dsn fit needs at least one (HR, LR) pair")
    if masks is not None and len(masks) != len(pairs):
        raise ValueError(f"{len(masks)} masks for {len(pairs)} pairs")
    hrs, lrs, lr_masks = [], [], []
    for i, pair in enumerate(pairs):
        if len(pair) != 2:
            raise ValueError(f"pair {i} must be (hr, lr)")
        hr, _ = as_slice_stack(pair[0], s)
        lr = np.asarray(pair[1], dtype=np.float32)
        lr = lr[None] if lr.ndim == 2 else lr
        if lr.shape != (hr.shape[0], hr.shape[1] // s, hr.shape[2] // s):
            raise ValueError(
                f"pair {i}: LR shape {lr.shape} does not match HR {hr.shape} at scale {s} "
                f"(expected {(hr.shape[0], hr.shape[1] // s, hr.shape[2] // s)})"
            )
        if not np.isfinite(lr).all():
            raise ValueError(f"pair {i}: LR contains NaN or infinite values")
        hrs.append(hr)
        lrs.append(np.ascontiguousarray(lr))
        lr_masks.append(_lr_mask(None if masks is None else masks[i], lr.shape, s, i))
    return hrs, lrs, lr_masks


def _fit_crop(hrs: list[np.ndarray], hr_crop: int, s: int) -> int:
    """The planned HR crop, cut to the smallest slice and to whole LR pixels."""
    smallest = min(min(h.shape[1], h.shape[2]) for h in hrs)
    crop = min(hr_crop, smallest)
    crop -= crop % s  # whole LR pixels
    if crop != hr_crop:
        logger.info(
            "dsn: HR crop %d -> %d (a multiple of the scale %d that fits the smallest slice)",
            hr_crop,
            crop,
            s,
        )
    return crop


class _CropSampler:
    """Random aligned (HR, LR) crops from a list of slice stacks."""

    def __init__(self, hrs, lrs, masks, scale: int, crop: int, rng: np.random.Generator):
        self.hrs, self.lrs, self.scale, self.crop, self.rng = hrs, lrs, scale, crop, rng
        self.lc = crop // scale
        # candidate LR top-left corners: all valid ones, or those centred on foreground
        self.candidates: list[np.ndarray | None] = []
        weights = []
        for lr, m in zip(lrs, masks):
            z, h, w = lr.shape
            if m is None:
                self.candidates.append(None)
                weights.append(float(z))
                continue
            zz, yy, xx = np.nonzero(m)
            yy = np.clip(yy - self.lc // 2, 0, h - self.lc)
            xx = np.clip(xx - self.lc // 2, 0, w - self.lc)
            self.candidates.append(np.stack([zz, yy, xx], axis=1))
            weights.append(float(zz.size))
        total = sum(weights)
        if total == 0:
            raise ValueError("dsn fit: the masks have no foreground")
        self.pair_p = np.asarray(weights) / total

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        s, hc, lc = self.scale, self.crop, self.lc
        hr_b = np.empty((n, 1, hc, hc), np.float32)
        lr_b = np.empty((n, 1, lc, lc), np.float32)
        pairs = self.rng.choice(len(self.lrs), size=n, p=self.pair_p)
        for b, p in enumerate(pairs):  # one slicing call per crop
            lr, c = self.lrs[p], self.candidates[p]
            if c is None:
                z = self.rng.integers(lr.shape[0])
                y = self.rng.integers(lr.shape[1] - lc + 1)
                x = self.rng.integers(lr.shape[2] - lc + 1)
            else:
                z, y, x = c[self.rng.integers(len(c))]
            lr_b[b, 0] = lr[z, y : y + lc, x : x + lc]
            hr_b[b, 0] = self.hrs[p][z, s * y : s * y + hc, s * x : s * x + hc]
        return hr_b, lr_b


@DEGRADATIONS.register
class DSNDegradation(LearnedDegradation):
    """Chun et al.'s downsampling network, fitted with a pixel-wise loss on real pairs."""

    name = "dsn"
    label = "DSN"
    plan_order = 50

    @classmethod
    def plan(cls, fingerprint, context: PlanningContext) -> dict[str, dict]:
        """DSN+EDSR, the paper's baseline, at :data:`DEFAULTS` (a planner's options override
        any of them)."""
        section = {"name": "dsn", **DEFAULTS, **context.options.get("dsn", {})}
        return {
            "dsn_edsr": context.configuration(
                "DSN+EDSR",
                "EDSR trained on HR downsampled by a CNN fit to real LR (DSN+EDSR)",
                section,
                raw_input=False,
            )
        }

    def __init__(self, params: dict, scale: int):
        super().__init__({**DEFAULTS, **(params or {})}, scale)
        p = self.params
        for key in ("channels", "num_layers", "iterations", "batch_size", "hr_crop"):
            v = p[key]
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"dsn '{key}' must be a positive integer, got {v!r}")
        if p["num_layers"] < 2:
            raise ValueError(f"dsn 'num_layers' must be >= 2, got {p['num_layers']}")
        if p["hr_crop"] < 2 * self.scale:
            raise ValueError(
                f"dsn 'hr_crop' must be >= {2 * self.scale} (2 x scale), got {p['hr_crop']}"
            )
        if not (isinstance(p["learning_rate"], (int, float)) and p["learning_rate"] > 0):
            raise ValueError(f"dsn 'learning_rate' must be > 0, got {p['learning_rate']!r}")
        if p["loss"] not in LOSSES:
            raise ValueError(f"dsn 'loss' must be one of {', '.join(LOSSES)}, got {p['loss']!r}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(p.get("init_seed", 0)))
            self.net = DownsamplingNetwork(self.scale, int(p["channels"]), int(p["num_layers"]))
        self.net.eval()

    # ---- weights
    def state_dict(self) -> dict:
        return self.net.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state)
        self.net.eval()

    # ---- inference
    def degrade(self, hr: np.ndarray, chunk_pixels: int = 2**20, device: str = "cpu") -> np.ndarray:
        """Apply the network to every slice (batched, ``chunk_pixels`` HR pixels at a time)."""
        vol, squeeze = as_slice_stack(hr, self.scale)
        z, H, W = vol.shape
        s = self.scale
        out = np.empty((z, H // s, W // s), np.float32)
        step = max(1, chunk_pixels // (H * W))
        net = self.net.to(device=device, memory_format=torch.channels_last)
        net.eval()
        with torch.inference_mode():
            for a in range(0, z, step):
                x = torch.from_numpy(vol[a : a + step, None]).to(device)
                x = x.contiguous(memory_format=torch.channels_last)
                out[a : a + step] = net(x)[:, 0].float().cpu().numpy()
        return out[0] if squeeze else out

    # ---- training
    def fit(
        self,
        pairs: Sequence[tuple[np.ndarray, np.ndarray]],
        masks: Sequence[np.ndarray | None] | None = None,
        iterations: int | None = None,
        seed: int = 0,
        device: str = "cpu",
        progress: bool = True,
    ) -> dict:
        """Fit the network so that ``DSN(hr) ~ lr`` pixel-wise on (HR, real LR) pairs.

        ``pairs``: list of ``(hr (z, H, W), lr (z, H//s, W//s))`` float32 arrays aligned by the
        pixel-shuffle convention (2D arrays are one slice). ``masks``: optional per-pair
        foreground masks on the LR or HR grid; crops are then centred on foreground pixels.
        ``iterations`` overrides the plans' value. Returns (and keeps in
        ``fit_history``) the loss curve and timing.
        """
        s, p = self.scale, self.params
        hrs, lrs, lr_masks = _checked_pairs(pairs, masks, s)
        n_iter = int(p["iterations"] if iterations is None else iterations)
        if n_iter < 1:
            raise ValueError(f"iterations must be >= 1, got {n_iter}")
        crop = _fit_crop(hrs, int(p["hr_crop"]), s)
        sampler = _CropSampler(hrs, lrs, lr_masks, s, crop, np.random.default_rng(seed))
        t0 = time.perf_counter()
        curve = self._fit_loop(sampler, n_iter, seed, device, progress)
        seconds = time.perf_counter() - t0
        logger.info(
            "dsn: %d iterations in %.1f s, %s loss %.4g -> %.4g",
            n_iter,
            seconds,
            p["loss"],
            curve[0],
            curve[-1],
        )
        self.fit_history = {
            "iterations": n_iter,
            "hr_crop": crop,
            "seed": seed,
            "loss": p["loss"],
            "loss_curve": curve,
            "final_loss": curve[-1],
            "seconds": seconds,
            "n_pairs": len(pairs),
            "n_slices": int(sum(h.shape[0] for h in hrs)),
        }
        return self.fit_history

    def _fit_loop(
        self, sampler: _CropSampler, n_iter: int, seed: int, device: str, progress: bool
    ) -> list[float]:
        """Adam on the pixel-wise loss; returns the smoothed loss curve (about 100 points)."""
        from tqdm.auto import tqdm

        p = self.params
        loss_fn = F.l1_loss if p["loss"] == "l1" else F.mse_loss
        net = self.net.to(device=device, memory_format=torch.channels_last)
        opt = torch.optim.Adam(net.parameters(), lr=float(p["learning_rate"]))
        curve: list[float] = []
        running = math.nan
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net.train()
            bar = tqdm(range(n_iter), desc="dsn fit", disable=not progress, leave=False)
            for it in bar:
                hr_b, lr_b = sampler.sample(int(p["batch_size"]))
                x = torch.from_numpy(hr_b).to(device).contiguous(memory_format=torch.channels_last)
                y = torch.from_numpy(lr_b).to(device)
                loss = loss_fn(net(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                v = float(loss.detach())
                running = v if math.isnan(running) else 0.98 * running + 0.02 * v
                if it % max(1, n_iter // 100) == 0 or it == n_iter - 1:
                    curve.append(running)
                    bar.set_postfix(loss=f"{running:.4g}")
            net.eval()
        return curve
