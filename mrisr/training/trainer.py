"""SR trainers: a loop with hooks over pieces built through overridable methods.

:class:`SRTrainer` runs the loop (iterate, step, validate, checkpoint, resume, Ctrl-C).
The work is done by pieces from their own modules, each built by a method a variant may
override:

==================  ===========================================  ==========================
piece               module                                       built by
==================  ===========================================  ==========================
network             :mod:`mrisr.networks.edsr`                   :meth:`build_network`
data                :mod:`mrisr.training.data`                   :meth:`build_data`
optimisation        :mod:`mrisr.training.optimisation`           :meth:`build_optimisation`
logging             :mod:`mrisr.training.training_log`           ``TrainingLog``
checkpointing       :mod:`mrisr.training.checkpointing`          ``Checkpointer``
validation          :mod:`mrisr.training.validation`             :meth:`build_validator`
==================  ===========================================  ==========================

Trainers are found by name (``mrisr_train -tr NAME``) in :data:`TRAINERS`. A variant is a
small subclass that changes one thing, e.g. the budget (see
:mod:`mrisr.training.variants`)::

    @TRAINERS.register
    class EDSRTrainer_2000iters(EDSRTrainer):
        iterations = 2000

Class attributes left at ``None`` take the plans' value (the ``sr`` section of the
configuration). When a variant changes ``iterations``, the planned learning-rate
milestones, checkpoint and validation intervals are rescaled to the new length unless the
variant sets them too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed
from torch import nn
from tqdm import tqdm

from mrisr.degradation.gaussian import PAPER_SIGMA
from mrisr.degradation.patch_noise import PatchDegradation
from mrisr.networks.checkpoint_io import generic_weights_for, load_pretrained_weights
from mrisr.networks.registry import network_spec
from mrisr.plans import Plans
from mrisr.preprocessing import storage
from mrisr.preprocessing.dataset import PreprocessedDataset
from mrisr.training.checkpointing import (
    BEST,
    FINAL,
    LATEST,
    Checkpointer,
    plans_identity,
    rng_state,
    set_rng_state,
)
from mrisr.training.data import (
    PatchSampler,
    SRPatchLoader,
    TrainingVolume,
    batch_iterator,
    close_iterator,
)
from mrisr.training.distributed import DistContext
from mrisr.training.early_stopping import CONTINUE, DECISIONS, EarlyStopping, PlateauRule
from mrisr.training.estimate import FoldClock, format_duration
from mrisr.training.interrupts import DeferredInterrupt
from mrisr.training.optimisation import Optimisation, OptimisationSettings
from mrisr.training.precision_probe import PrecisionChoice, choose
from mrisr.training.settings import TrainingSettings, rescaled
from mrisr.training.training_log import TrainingLog
from mrisr.training.validation import PairValidator
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import load_json
from mrisr.utilities.registry import Registry
from mrisr.utilities.threads import ThreadTuner, set_compute_threads, usable_cpus

__all__ = ["TRAINERS", "EDSRTrainer", "SRTrainer", "default_num_workers"]

logger = logging.getLogger(__name__)


def default_num_workers(device: torch.device) -> int:
    """Loader processes: overlap on GPUs; on CPUs loading is ~1% of a step and a worker
    would compete with the compute threads for the same cores (see benchmarks)."""
    n = usable_cpus()
    if device.type == "cuda":
        return max(1, min(8, n - 1))
    return 1 if n > 4 else 0


#: what a resumable checkpoint holds beyond the weights (an exported one has none of these)
RESUME_KEYS = ("optimisation", "rng", "history", "iteration", "seed")


def _check_resumable(state: dict, where: str) -> None:
    missing = [k for k in RESUME_KEYS if k not in state]
    if missing:
        raise MrisrError(
            f"{where}: an inference-only checkpoint (exported or installed; it has no "
            f"{', '.join(missing)}): --continue cannot resume training from it; delete it (or "
            "move it away) and run mrisr_train without --continue to train this fold anew"
        )


#: name -> trainer class (``mrisr_train -tr NAME``)
TRAINERS: Registry[type] = Registry("trainer", "mrisr.trainers")


class SRTrainer:
    """The loop: iterate, step, log, checkpoint, validate, with hooks for variants."""

    # ---- what a variant may change (None: as planned)
    iterations: int | None = None
    batch_size: int | None = None
    lr_patch: int | None = None
    num_blocks: int | None = None
    num_features: int | None = None
    learning_rate: float | None = None
    lr_milestones: tuple[int, ...] | None = None
    checkpoint_every: int | None = None
    validate_every: int | None = None
    # ---- how it runs
    seed: int = 12345
    log_every: int = 50
    num_workers: int | None = None  # None: default_num_workers(device)
    channels_last: bool | None = None  # None: on CPU (oneDNN's preferred layout)
    # bf16 autocast on CPU: None = where oneDNN computes bf16 natively (AMX / AVX512-BF16),
    # float32 elsewhere; False = always float32 (EDSRTrainer_fp32). Weights, optimiser state
    # and loss stay float32. On the 2-core AMX machine: 4.6x the float32 step, training and
    # validation curves indistinguishable from float32 (see benchmarks/bench_edsr.py).
    cpu_mixed_precision: bool | None = None
    precision: str = "auto"  # mrisr_train --precision (auto: choose_precision)
    # weight of the Fourier-amplitude term beside L1 (None: as planned, "sr_loss")
    frequency_loss_weight: float | None = None
    validation_max_slices: int = 16
    final_validation_tta: bool = True
    # stop when the validation PSNR stops improving (mrisr_train --no-early-stop: False);
    # the planned iterations are then a ceiling (see mrisr.training.early_stopping)
    early_stopping: bool = True
    plateau_rule: PlateauRule = PlateauRule()

    def __init__(
        self,
        plans: Plans,
        configuration: str,
        fold: int | str,
        output_folder: str | Path,
        device: torch.device | str = "cpu",
        ctx: DistContext | None = None,
        num_workers: int | None = None,
        progress: bool = True,
    ):
        self.plans = plans
        self.configuration = configuration
        self.config = plans.configuration(configuration)
        if not self.config.requires_training:
            raise MrisrError(f"configuration '{configuration}' trains no network")
        self.fold = fold
        self.output_folder = Path(output_folder)
        self.device = torch.device(device)
        self.ctx = ctx or DistContext()
        self.progress = progress and self.ctx.is_main
        self.settings = self.training_settings()
        if num_workers is not None:
            self.num_workers = num_workers
        elif self.num_workers is None:
            self.num_workers = default_num_workers(self.device)
        if self.channels_last is None:
            self.channels_last = self.device.type == "cpu"
        self.log = TrainingLog(self.output_folder, enabled=self.ctx.is_main)
        self.checkpoints = Checkpointer(
            self.output_folder, self.identity(), enabled=self.ctx.is_main
        )
        self.iteration = 0
        self.patch_degradation: PatchDegradation | None = None
        self.best_psnr = float("-inf")
        self.early_stop = EarlyStopping(self.plateau_rule, enabled=False)
        self._interrupt = DeferredInterrupt(self.ctx.is_main)
        self.precision_choice: PrecisionChoice | None = None  # chosen when the run starts
        #: starting weights of a new training (``mrisr_train -pretrained_weights``) and the
        #: record of what was loaded from them (kept in every checkpoint of the fold)
        self.pretrained_weights: Path | None = None
        self.pretrained_record: dict | None = None
        #: ``mrisr_train --from-scratch``: random weights whatever the plans' initialisation
        self.from_scratch = False

    @property
    def name(self) -> str:
        return type(self).__name__

    def starting_weights(self) -> tuple[Path | None, str]:
        """The weights a new training starts from and where they come from: the file of
        ``-pretrained_weights`` ("pretrained"), else the shipped generic network of this
        size when the plans fine-tune ("generic"); None and the reason otherwise."""
        if self.pretrained_weights is not None:
            return self.pretrained_weights, "pretrained"
        if self.from_scratch:
            return None, "--from-scratch"
        if self.plans.initialisation != "generic":
            return None, f"the plans' initialisation is {self.plans.initialisation}"
        s = self.settings
        generic = generic_weights_for(s.network, s.network_args())
        if generic is None:
            return None, (
                f"no generic network of {s.num_blocks} blocks x {s.num_features} features "
                "is shipped with mrisr"
            )
        return generic, "generic"

    def identity(self) -> dict:
        """What a checkpoint must match to be resumed by this trainer."""
        return {
            "trainer": self.name,
            "dataset": self.plans.dataset_name,
            "plans_name": self.plans.plans_name,
            "configuration": self.configuration,
            "fold": str(self.fold),
            "plans_identity": plans_identity(self.plans, self.configuration),
        }

    # ------------------------------------------------------------------ hooks
    def on_train_start(self) -> None:
        s = self.settings
        n_params = sum(p.numel() for p in self.network.parameters())
        self.log.log(
            f"{self.name} | {self.plans.dataset_name} | {self.plans.plans_name} | "
            f"{self.configuration} | fold {self.fold} | device {self.device}"
            + (f" x{self.ctx.world_size} (DDP)" if self.ctx.enabled else "")
        )
        self.log.log(
            f"{s.network} x{s.scale}: {s.num_blocks} blocks x {s.num_features} features "
            f"({n_params / 1e6:.2f} M parameters); patches LR {s.lr_patch} / HR {s.hr_patch}, "
            f"batch {s.batch_size}{' per rank' if self.ctx.enabled else ''}, "
            f"{s.iterations} iterations, Adam lr {s.learning_rate:g} x{s.lr_gamma:g} at "
            f"{list(s.lr_milestones)}, clip {s.grad_clip_norm}, {s.augmentation}; "
            f"loader workers {self.num_workers}, channels_last {self.channels_last}, "
            f"autocast {self.optimisation.autocast_dtype}, threads {torch.get_num_threads()}"
        )
        self.log.log(self.precision_choice.describe(self.optimisation.precision))

    def on_iteration_end(self, iteration: int, loss: torch.Tensor) -> None:
        """Called after every step (``iteration`` steps done)."""

    def on_validation_end(self, iteration: int, metrics: dict[str, float]) -> None:
        """Called after every periodic validation."""

    def on_train_end(self) -> None:
        msg = f"training done: {self.iteration} iterations"
        if self.early_stop.stopped_at is not None:
            msg += f" of {self.settings.iterations} (stopped early)"
        if self.log.history["val_iteration"]:
            msg += f"; best validation PSNR {self.best_psnr:.3f} dB"
        self.log.log(msg)

    # ------------------------------------------------------------------ settings and pieces

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
        level = dataset.lr_noise_level(cases)
        if level is None:
            raise MrisrError(
                f"configuration '{self.configuration}' adds the real LR's noise to its training "
                "LR, but no training case has a real LR with a measurable background"
            )
        psf = load_json(summary).get("psf_sigma_hr") if summary and summary.is_file() else None
        sigma_lr = (
            float(np.mean(psf)) / self.settings.scale if psf else PAPER_SIGMA / self.settings.scale
        )
        noise = {
            "sigma": level["sigma"],
            "rho": level["rho"],
            "kernel_variance_lr": sigma_lr**2,
        }
        deg = PatchDegradation.from_plans(section, noise)
        self.log.log(
            f"training LR noise: Rician, sigma {noise['sigma']:.4g} ({level['method']}, "
            f"+-{100 * deg.sigma_jitter:.0f}%), "
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
        """See :func:`mrisr.training.precision_probe.choose`."""
        state = self.resume_state() if continue_training else None
        variant = (
            None if self.cpu_mixed_precision is None else (self.name, self.cpu_mixed_precision)
        )
        return choose(self.precision, self.device, self.settings, state, variant)

    def build_optimisation(self, network: nn.Module) -> Optimisation:
        s = self.settings
        choice = self.precision_choice or self.choose_precision()
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

    # ------------------------------------------------------------------ state, resume, Ctrl-C

    def _unwrapped(self) -> nn.Module:
        n = self.network
        return n.module if isinstance(n, nn.parallel.DistributedDataParallel) else n

    def state(self) -> dict:
        return {
            "iteration": self.iteration,
            "total_iterations": self.settings.iterations,
            "seed": self.seed,
            "world_size": self.ctx.world_size,
            "precision": self.optimisation.precision,
            "network_class": self.settings.network,
            "network_args": self.settings.network_args(),
            "network": {k: v.contiguous() for k, v in self._unwrapped().state_dict().items()},
            "optimisation": self.optimisation.state_dict(),
            "rng": rng_state(),
            "history": self.log.state_dict(),
            "best_psnr": float(self.best_psnr),
            "early_stopping": self.early_stop.state_dict(),
            "pretrained_weights": self.pretrained_record,
        }

    def load_state(self, state: dict) -> None:
        """Resume from ``state``; a slim (exported or installed) or damaged checkpoint is a
        one-line MrisrError saying what it is and what to do."""
        where = state.get("_path", "checkpoint")
        _check_resumable(state, where)
        net = self._unwrapped()
        try:
            net.load_state_dict(state["network"])
        except (RuntimeError, TypeError, AttributeError) as e:
            detail = (str(e).strip().splitlines() or [type(e).__name__])[-1].strip()[:160]
            raise MrisrError(
                f"{where}: weights do not fit this trainer's network ({detail}); the checkpoint "
                "is damaged or foreign: delete it and run mrisr_train without --continue"
            ) from None
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        try:
            self.optimisation.load_state_dict(state["optimisation"])
            set_rng_state(state["rng"])
            self.log.load_state_dict(state["history"])
            self.iteration = int(state["iteration"])
            self.best_psnr = float(state.get("best_psnr", float("-inf")))
            self.seed = int(state["seed"])
            self.early_stop.load_state_dict(state.get("early_stopping"))
            self.pretrained_record = state.get("pretrained_weights")
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
            raise MrisrError(
                f"{where}: damaged training state ({type(e).__name__} in the optimiser, RNG or "
                "history); delete it and run mrisr_train without --continue"
            ) from None
        if int(state.get("world_size", 1)) != self.ctx.world_size:
            self.log.log(
                f"resuming a run of {state.get('world_size')} process(es) with "
                f"{self.ctx.world_size}: batches differ from an uninterrupted run",
                logging.WARNING,
            )

    def _save_if_interrupted(self, e: BaseException) -> None:
        """On Ctrl-C between iterations the state is consistent: save it (--continue
        resumes exactly); an interrupt seen as another error is re-raised as Ctrl-C."""
        interrupted = isinstance(e, KeyboardInterrupt) or self._stop_requested
        if interrupted and not self._hard_stop and self.iteration > 0:
            self.checkpoints.save(LATEST, self.state())
            self.log.log(
                f"interrupted at iteration {self.iteration}: {LATEST} saved; "
                "resume with --continue",
                logging.WARNING,
            )
        if interrupted and not isinstance(e, KeyboardInterrupt):
            raise KeyboardInterrupt from None  # e.g. loader workers that saw Ctrl-C

    def _should_stop(self) -> bool:
        """Ctrl-C seen (by any rank: DDP ranks agree every 10 iterations, so that they all
        stop after the same iteration)."""
        if not self.ctx.enabled:
            return self._stop_requested
        if self.iteration % 10:
            return False
        flag = torch.tensor([float(self._stop_requested)], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        self._stop_requested = bool(flag.item())
        return self._stop_requested

    def _defer_interrupts(self):
        """See :class:`mrisr.training.interrupts.DeferredInterrupt`; returns the restorer."""
        self._interrupt = DeferredInterrupt(self.ctx.is_main)
        return self._interrupt.install()

    @property
    def _stop_requested(self) -> bool:
        return self._interrupt.requested

    @_stop_requested.setter
    def _stop_requested(self, value: bool) -> None:
        self._interrupt.requested = value

    @property
    def _hard_stop(self) -> bool:
        return self._interrupt.hard

    def resume_state(self, map_location: str | torch.device = "cpu") -> dict | None:
        """The checkpoint ``--continue`` resumes from (latest, else final), checked against
        this trainer's identity (one-line error for a foreign or damaged file); None when
        the fold has none."""
        for name in (LATEST, FINAL):
            if self.checkpoints.exists(name):
                state = self.checkpoints.load(name, map_location)
                state["_path"] = str(self.checkpoints.path(name))
                _check_resumable(state, state["_path"])
                return state
        return None

    def _resume(self) -> None:
        state = self.resume_state(self.device)
        if state is None:
            self.log.log(
                f"--continue: no checkpoint in {self.output_folder}; starting from scratch",
                logging.WARNING,
            )
            torch.manual_seed(self.seed)
            return
        self.load_state(state)

    # ------------------------------------------------------------------ the loop
    def _validate(self, validator: PairValidator | None) -> None:
        if validator is None:
            return
        m = validator(self._unwrapped(), self.device)
        self.log.record_validation(self.iteration, m)
        improved = m["psnr"] > self.best_psnr
        self.log.log(
            f"iteration {self.iteration}: validation PSNR {m['psnr']:.3f} dB, "
            f"SSIM {m['ssim']:.4f}" + (" (new best)" if improved else "")
        )
        if improved:
            self.best_psnr = m["psnr"]
            self.checkpoints.save(BEST, self.state())
        self.on_validation_end(self.iteration, m)

    def _apply_plateau_rule(self) -> None:
        """After a validation: go on, take the next learning-rate drop now, or stop (the
        main rank decides on its validation; DDP ranks receive the decision)."""
        if not self.early_stop.enabled:
            return
        s = self.settings
        decision, why = CONTINUE, ""
        if self.ctx.is_main:
            decision, why = self.early_stop.decision(
                self.log.history, self.iteration, s.iterations, self.optimisation.milestones()
            )
        if self.ctx.enabled:
            code = torch.tensor([DECISIONS.index(decision)], device=self.device)
            torch.distributed.broadcast(code, src=0)
            decision = DECISIONS[int(code.item())]
        line = self.early_stop.apply(decision, why, self.iteration, s.iterations, self.optimisation)
        if line:
            self.log.log(line)

    def run(
        self,
        dataset: PreprocessedDataset,
        synthetic: dict[str, Path],
        val_cases: list[str],
        continue_training: bool = False,
    ) -> None:
        """Train on the HR cases of ``synthetic`` (case -> synthetic LR file); validate
        periodically on ``val_cases``; write the checkpoints of the fold folder."""
        s = self.settings
        volumes, sampler, validator = self._set_up(dataset, synthetic, val_cases, continue_training)
        if self.iteration >= s.iterations or self.early_stop.stopped:
            self.log.log("training already complete")
            if not self.checkpoints.exists(FINAL):
                self._finish()
            return
        bar = tqdm(
            total=s.iterations,
            initial=self.iteration,
            desc=f"fold {self.fold}",
            disable=not self.progress,
            dynamic_ncols=True,
            smoothing=0,  # ETA from the mean rate, validations included: as the estimate
        )
        self.network.train()
        clock = self.build_clock(validator)
        started = time.perf_counter()
        restore_sigint = self._defer_interrupts()
        batches = None
        try:
            batches = self.build_data(volumes, sampler, self.iteration)
            self._loop(batches, bar, validator, clock)
        except BaseException as e:
            self._save_if_interrupted(e)
            raise
        finally:
            bar.close()
            if batches is not None:
                close_iterator(batches)
            restore_sigint()
        elapsed = time.perf_counter() - started
        took = f"training loop took {elapsed:.1f} s ({format_duration(elapsed)})"
        if clock.total_estimate is not None:
            took += f"; estimated {clock.total_estimate:.1f} s after the warm-up"
        self.log.log(took)
        self._finish()

    def _set_up(self, dataset, synthetic, val_cases, continue_training):
        """Network, optimisation (resumed or seeded), DDP, data and validator."""
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.thread_tuner = None
        if self.device.type == "cpu" and not self.ctx.enabled:  # DDP: init_process_group
            self.thread_tuner = ThreadTuner(set_compute_threads(self.num_workers))
        self.precision_choice = self.choose_precision(continue_training)
        self.network = self.build_network().to(self.device)
        if self.channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)
        self.optimisation = self.build_optimisation(self.network)
        if continue_training:
            self._resume()
        else:
            start, source = self.starting_weights()
            if start is None:
                self.log.log(f"starting from random weights ({source})")
            else:
                self.pretrained_record = {
                    "source": source,
                    **load_pretrained_weights(self.network, start),
                }
                r = self.pretrained_record
                self.log.log(
                    f"starting from {source} weights {r['file']}: {r['tensors_loaded']} of "
                    f"{r['tensors']} tensors ({100 * r['parameter_fraction']:.1f} % of the "
                    "parameters)"
                    + (
                        f"; initialised: {', '.join(r['kept_initialised'])}"
                        if r["kept_initialised"]
                        else ""
                    )
                )
            torch.manual_seed(self.seed)
        if self.ctx.enabled:
            self.network = nn.parallel.DistributedDataParallel(
                self.network, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            self.optimisation.network = self.network
        volumes = self.training_volumes(dataset, synthetic)
        sampler = self.build_sampler(volumes)
        self.patch_degradation = self.build_patch_degradation(
            dataset, sorted(synthetic), next(iter(synthetic.values())).parent / "summary.json"
        )
        validator = self.build_validator(dataset, val_cases)
        self.early_stop.enabled = self.early_stopping and bool(val_cases)
        if self.early_stop.enabled:
            every = self.plateau_rule.validate_every(
                self.settings.validate_every, self.settings.iterations
            )
            self.settings = replace(self.settings, validate_every=every)
        self.on_train_start()
        self.log.log(
            f"training on {len(volumes)} HR cases ({sampler.num_slices} slices); "
            f"validating on {len(val_cases)} pairs"
            + ("" if self.iteration == 0 else f"; resuming at iteration {self.iteration}")
        )
        if self.early_stop.enabled:
            r = self.plateau_rule
            self.log.log(
                f"early stopping: {self.settings.iterations} iterations at most, validation "
                f"every {self.settings.validate_every}; after {r.min_fraction:.0%} of them a "
                f"plateau (no gain of {r.min_delta:g} dB over {r.patience} validations) takes "
                "the next planned learning-rate drop now, and after the last one stops"
            )
        return volumes, sampler, validator

    def _loop(self, batches, bar, validator, clock: FoldClock) -> None:
        """Iterate to the end: step, log, validate, checkpoint; KeyboardInterrupt on Ctrl-C."""
        s = self.settings
        loss_sum = torch.zeros((), device=self.device)
        n_window, t_window = 0, 0.0  # steps and seconds (data + step) since the last record
        while self.iteration < s.iterations and not self.early_stop.stopped:
            t0 = time.perf_counter()
            batch = next(batches)
            if batch["iteration"] != self.iteration:
                raise RuntimeError(
                    f"loader out of step: batch {batch['iteration']} at {self.iteration}"
                )
            lr, hr = self._to_device(batch["data"]), self._to_device(batch["target"])
            loss = self.optimisation.step(lr, hr)
            self.iteration += 1
            loss_sum += loss
            n_window += 1
            last = self.iteration == s.iterations
            if self.iteration % self.log_every == 0 or last:
                mean_loss = float(loss_sum) / n_window  # synchronises the device
                t_window += time.perf_counter() - t0
                dt = t_window / n_window
                self.log.record_training(
                    self.iteration, mean_loss, self.optimisation.learning_rate, dt
                )
                bar.set_postfix(loss=f"{mean_loss:.4f}", s_it=f"{dt:.3g}")
                loss_sum.zero_()
                n_window, t_window = 0, 0.0
            else:
                t_window += time.perf_counter() - t0
            bar.update(1)
            step_time = time.perf_counter() - t0
            if self.thread_tuner is not None:
                self.thread_tuner.step_done(step_time)
            if (estimate := clock.step_done(self.iteration, step_time)) is not None:
                self.log.log(estimate)
            self.on_iteration_end(self.iteration, loss)
            if self.iteration % s.validate_every == 0 or last:
                self._validate(validator)
                if not last:
                    self._apply_plateau_rule()
            if self.iteration % s.checkpoint_every == 0 and not last:
                self.checkpoints.save(LATEST, self.state())
                self.log.plot(self._title(), self.early_stop.marks())
            if self._should_stop():
                raise KeyboardInterrupt

    def _finish(self) -> None:
        state = self.state()
        self.checkpoints.save(FINAL, state)
        self.checkpoints.save(LATEST, state)
        if not self.log.history["val_iteration"]:
            # no validation pairs: the final network is the best one there is
            self.checkpoints.save(BEST, state)
        self.log.plot(self._title(), self.early_stop.marks())
        self.on_train_end()
        self.ctx.barrier()

    def _to_device(self, a) -> torch.Tensor:
        t = torch.from_numpy(a).to(self.device, non_blocking=True)
        if self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def _title(self) -> str:
        return f"{self.name} {self.configuration} fold {self.fold}"


@TRAINERS.register
class EDSRTrainer(SRTrainer):
    """The paper's EDSR training, entirely as planned (the default trainer)."""
