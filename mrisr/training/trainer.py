"""SR trainers: a small loop with hooks over separate pieces.

:class:`SRTrainer` owns only the loop (iterate, step, hooks). The work is done by pieces
built through overridable methods (:class:`~mrisr.training.trainer_pieces.TrainerPieces`);
the checkpoint state, ``--continue`` and Ctrl-C are
:class:`~mrisr.training.trainer_state.TrainerState`'s:

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

import torch
from torch import nn
from tqdm import tqdm

from mrisr.degradation.noise import PatchDegradation
from mrisr.plans import Plans
from mrisr.preprocessing.dataset import PreprocessedDataset
from mrisr.training.checkpointing import BEST, FINAL, LATEST, Checkpointer, plans_identity
from mrisr.training.data import close_iterator
from mrisr.training.distributed import DistContext
from mrisr.training.early_stopping import CONTINUE, DECISIONS, EarlyStopping, PlateauRule
from mrisr.training.estimate import FoldClock, format_duration
from mrisr.training.interrupts import DeferredInterrupt
from mrisr.training.trainer_pieces import TrainerPieces, default_num_workers
from mrisr.training.trainer_state import TrainerState
from mrisr.training.training_log import TrainingLog
from mrisr.training.validation import PairValidator
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.registry import Registry
from mrisr.utilities.threads import ThreadTuner, set_compute_threads

__all__ = ["TRAINERS", "EDSRTrainer", "SRTrainer", "default_num_workers"]

logger = logging.getLogger(__name__)

#: name -> trainer class (``mrisr_train -tr NAME``)
TRAINERS: Registry[type] = Registry("trainer", "mrisr.trainers")


class SRTrainer(TrainerPieces, TrainerState):
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

    @property
    def name(self) -> str:
        return type(self).__name__

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

    # ------------------------------------------------------------------ state
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
