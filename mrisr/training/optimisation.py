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


@dataclass(frozen=True)
class OptimisationSettings:
    learning_rate: float
    betas: tuple[float, float]
    lr_milestones: tuple[int, ...]
    lr_gamma: float
    grad_clip_norm: float | None


class Optimisation:
    """Adam + MultiStepLR + L1 + clipping (+ autocast) for one network on one device."""

    def __init__(
        self,
        network: nn.Module,
        settings: OptimisationSettings,
        device: torch.device,
        cpu_bf16: bool = False,
    ):
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
        self.autocast_dtype: torch.dtype | None = None
        if device.type == "cuda":
            self.autocast_dtype = (
                torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            )
        elif device.type == "cpu" and cpu_bf16:
            self.autocast_dtype = torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """One update on a batch; returns the (detached) loss without synchronising."""
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            pred = self.network(lr)
        loss = self.loss_fn(pred.float(), hr)
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
