"""One optimisation step of the SR network, and the state it carries between steps.

L1 loss, Adam, the planned multi-step learning-rate schedule, gradient-norm clipping, and
mixed precision where it pays off: autocast on CUDA (bf16 where supported, else fp16 with
a gradient scaler) and, optionally, bf16 autocast on CPUs with native bf16 matrix units
(oneDNN on AMX / AVX512-BF16); weights and optimiser state stay float32 in every case.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from mrisr.utilities.devices import cpu_bf16_supported  # noqa: F401  (the trainer reads it here)

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class OptimisationSettings:
    learning_rate: float
    betas: tuple[float, float]
    lr_milestones: tuple[int, ...]
    lr_gamma: float
    grad_clip_norm: float | None


def amplitude_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the patches' Fourier amplitudes (orthonormal FFT, so in
    the pixels' units): asks the output for the target's energy at every spatial
    frequency, texture and noise included, where L1 alone returns the smoother median."""
    fp = torch.fft.rfft2(pred, norm="ortho").abs()
    ft = torch.fft.rfft2(target.contiguous(), norm="ortho").abs()
    return (fp - ft).abs().mean()


class Optimisation:
    """Adam + MultiStepLR + L1 + clipping (+ autocast) for one network on one device."""

    def __init__(
        self,
        network: nn.Module,
        settings: OptimisationSettings,
        device: torch.device,
        precision: str | None = None,
        cpu_bf16: bool = False,
        frequency_weight: float = 0.0,
    ):
        """``precision`` fp32 / bf16 / fp16 (autocast dtype; fp16 with a gradient scaler);
        None: bf16 (else fp16) on CUDA, bf16 on CPU when ``cpu_bf16``, else fp32."""
        self.network = network
        self.settings = settings
        self.device = device
        fused = device.type in ("cuda", "cpu")
        self.optimizer = torch.optim.Adam(
            network.parameters(),
            lr=settings.learning_rate,
            betas=tuple(settings.betas),
            fused=fused,
        )
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(settings.lr_milestones), gamma=settings.lr_gamma
        )
        self.loss_fn = nn.L1Loss()
        self.frequency_weight = float(frequency_weight)
        if precision is None:
            if device.type == "cuda":
                precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            else:
                precision = "bf16" if device.type == "cpu" and cpu_bf16 else "fp32"
        if precision not in AUTOCAST_DTYPES:
            raise ValueError(f"precision {precision!r}: one of {sorted(AUTOCAST_DTYPES)}")
        self.precision = precision
        self.autocast_dtype: torch.dtype | None = AUTOCAST_DTYPES[precision]
        self.scaler = (
            torch.amp.GradScaler(device.type) if self.autocast_dtype == torch.float16 else None
        )

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def milestones(self) -> list[int]:
        """The iterations at which the learning rate drops (planned, less those taken early)."""
        return sorted(int(m) for m in self.scheduler.milestones)

    def drop_learning_rate_now(self) -> int:
        """Take the next planned learning-rate drop now (early stopping's plateau); returns
        the planned iteration it replaces. The scheduler's state records it (resumable)."""
        done = self.scheduler.last_epoch
        pending = [m for m in self.milestones() if m > done]
        if not pending:
            raise ValueError("no planned learning-rate drop left")
        del self.scheduler.milestones[pending[0]]
        for group in self.optimizer.param_groups:
            group["lr"] = group["lr"] * self.settings.lr_gamma
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        return pending[0]

    def step(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """One update on a batch; returns the (detached) loss without synchronising."""
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            pred = self.network(lr)
        loss = self.loss_fn(pred.float(), hr)
        if self.frequency_weight:
            loss = loss + self.frequency_weight * amplitude_loss(pred.float(), hr)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.settings.grad_clip_norm:
            nn.utils.clip_grad_norm_(
                self.network.parameters(), self.settings.grad_clip_norm, foreach=True
            )
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        return loss.detach()

    def state_dict(self) -> dict:
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }
        if self.scaler is not None:
            state["grad_scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and "grad_scaler" in state:
            self.scaler.load_state_dict(state["grad_scaler"])
