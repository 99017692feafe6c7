"""The pieces an SR trainer builds, each through an overridable method (a mixin of
:class:`mrisr.training.trainer.SRTrainer`): the settings (the plans' ``sr`` section with a
variant's class attributes on top), the network, the training volumes, the patch sampler and
loader, the per-patch degradation, the precision, the optimisation, the validator and the
time estimate."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mrisr.degradation.gaussian import PAPER_SIGMA
from mrisr.degradation.noise import PatchDegradation
from mrisr.networks.registry import network_spec
from mrisr.preprocessing import storage
from mrisr.preprocessing.dataset import PreprocessedDataset
from mrisr.training.data import PatchSampler, SRPatchLoader, TrainingVolume, batch_iterator
from mrisr.training.estimate import FoldClock
from mrisr.training.optimisation import Optimisation, OptimisationSettings
from mrisr.training.precision import PrecisionChoice, choose
from mrisr.training.settings import TrainingSettings, rescaled
from mrisr.training.validation import PairValidator
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import load_json
from mrisr.utilities.threads import usable_cpus


def default_num_workers(device: torch.device) -> int:
    """Loader processes: overlap on GPUs; on CPUs loading is ~1% of a step and a worker
    would compete with the compute threads for the same cores (see benchmarks)."""
    n = usable_cpus()
    if device.type == "cuda":
        return max(1, min(8, n - 1))
    return 1 if n > 4 else 0


class TrainerPieces:
    """The builders of an SR trainer's pieces; a variant overrides one."""

    def training_settings(self) -> TrainingSettings:
        sr = self.config.sr_plan
        it = int(self.iterations or sr.iterations)
        ratio = it / sr.iterations
        milestones = self.lr_milestones
        if milestones is None:
            milestones = tuple(rescaled(m, ratio) for m in sr.lr_milestones)
        s = TrainingSettings(
            scale=self.plans.scale,
            lr_patch=int(self.lr_patch or sr.lr_patch),
            network=network_spec(sr.network).name,
            num_blocks=int(self.num_blocks or sr.num_blocks),
            num_features=int(self.num_features or sr.num_features),
            res_scale=sr.res_scale,
            batch_size=int(self.batch_size or sr.batch_size),
            iterations=it,
            learning_rate=float(self.learning_rate or sr.learning_rate),
            betas=sr.betas,
            lr_milestones=tuple(int(m) for m in milestones),
            lr_gamma=sr.lr_gamma,
            grad_clip_norm=sr.grad_clip_norm,
            augmentation=sr.augmentation,
            checkpoint_every=int(self.checkpoint_every or rescaled(sr.checkpoint_every, ratio)),
            validate_every=int(self.validate_every or rescaled(sr.validate_every, ratio)),
        )
        if self.ctx.enabled:
            per_rank = max(1, s.batch_size // self.ctx.world_size)
            s = replace(s, batch_size=per_rank)
        return s

    # ------------------------------------------------------------------ pieces
    def build_network(self) -> nn.Module:
        torch.manual_seed(self.seed)
        return network_spec(self.settings.network).cls(**self.settings.network_args())

    def training_volumes(
        self, dataset: PreprocessedDataset, synthetic: dict[str, Path]
    ) -> list[TrainingVolume]:
        vols = []
        s = self.settings.scale
        for case in sorted(synthetic):
            hr_shape = tuple(storage.open_array(dataset.path(case, "hr")).shape)
            lr_shape = tuple(storage.open_array(synthetic[case]).shape)
            want = (hr_shape[0], hr_shape[1] // s, hr_shape[2] // s)
            if lr_shape != want:
                raise MrisrError(
                    f"synthetic LR of case {case} ({synthetic[case]}) has shape {lr_shape}, "
                    f"expected {want}; delete it to have it made again"
                )
            vols.append(
                TrainingVolume(
                    case, dataset.path(case, "hr"), synthetic[case], dataset.path(case, "hr_weight")
                )
            )
        return vols

    def build_sampler(self, volumes: list[TrainingVolume]) -> PatchSampler:
        return PatchSampler(
            volumes,
            self.settings.scale,
            self.settings.lr_patch,
            self.settings.batch_size,
            self.seed,
            rank=self.ctx.rank,
            augment=self.settings.augmentation != "none",
        )

    def build_patch_degradation(
        self, dataset: PreprocessedDataset, cases: list[str], summary: Path | None = None
    ) -> PatchDegradation | None:
        """The per-patch noise and jitter of the configuration, with the noise level and
        colour measured on the real LR of the training cases (median sigma, mean rho) and
        the PSF width from the degradation ``summary`` (for the width jitter)."""
        section = self.config.training_noise
        if not section or section.get("model", "none") == "none":
            return None
        measured = dataset.lr_noise(cases)
        if not measured:
            raise MrisrError(
                f"configuration '{self.configuration}' adds the real LR's noise to its training "
                "LR, but no training case has a real LR with a measurable background"
            )
        rhos = [np.asarray(m["rho"]) for m in measured if m.get("rho") is not None]
        psf = load_json(summary).get("psf_sigma_hr") if summary and summary.is_file() else None
        sigma_lr = (
            float(np.mean(psf)) / self.settings.scale if psf else PAPER_SIGMA / self.settings.scale
        )
        noise = {
            "sigma": float(np.median([m["sigma"] for m in measured])),
            "rho": np.mean(rhos, axis=0).tolist() if rhos else None,
            "kernel_variance_lr": sigma_lr**2,
        }
        deg = PatchDegradation.from_plans(section, noise)
        self.log.log(
            f"training LR noise: Rician, sigma {noise['sigma']:.4g} (median of {len(measured)} "
            f"real LR scans, +-{100 * deg.sigma_jitter:.0f}%), "
            f"{'coloured' if noise['rho'] is not None else 'white'}; PSF width "
            f"+-{100 * deg.kernel_width_jitter:.0f}%, bias {deg.bias:g}"
        )
        return deg

    def build_data(self, volumes: list[TrainingVolume], sampler: PatchSampler, start: int):
        loader = SRPatchLoader(
            volumes, sampler, start, self.num_workers, degradation=self.patch_degradation
        )
        return batch_iterator(loader, self.num_workers, augment=sampler.augment)

    def choose_precision(self, continue_training: bool = False) -> PrecisionChoice:
        """See :func:`mrisr.training.precision.choose`."""
        state = self.resume_state() if continue_training else None
        variant = (
            None if self.cpu_mixed_precision is None else (self.name, self.cpu_mixed_precision)
        )
        return choose(self.precision, self.device, self.settings, state, variant)

    def build_optimisation(self, network: nn.Module) -> Optimisation:
        s = self.settings
        choice = getattr(self, "precision_choice", None) or self.choose_precision()
        w = self.frequency_loss_weight
        return Optimisation(
            network,
            OptimisationSettings(
                s.learning_rate, s.betas, s.lr_milestones, s.lr_gamma, s.grad_clip_norm
            ),
            self.device,
            precision=choice.precision,
            frequency_weight=self.config.amplitude_loss_weight if w is None else w,
        )

    def build_validator(
        self, dataset: PreprocessedDataset, val_cases: list[str]
    ) -> PairValidator | None:
        if not self.ctx.is_main or not val_cases:
            return None
        v = PairValidator(
            dataset,
            val_cases,
            max_slices=self.validation_max_slices,
            lr_key="lr" if self.config.denoise_input else "lr_raw",
        )
        return v if v else None

    def build_clock(self, validator: PairValidator | None) -> FoldClock:
        """The time estimate printed after the warm-up (periodic validations included)."""
        pixels = sum(lr.size for lr, _, _ in validator.items) if validator else 0
        return FoldClock.for_training(
            self.settings,
            self.iteration,
            pixels,
            self.device.type,
            self.precision_choice.seconds,
            self.optimisation.precision,
        )
