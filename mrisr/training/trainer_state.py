"""What an SR trainer saves and resumes (a mixin of
:class:`mrisr.training.trainer.SRTrainer`): the checkpoint state, ``--continue``, and Ctrl-C
between iterations (saved, so that ``--continue`` resumes exactly)."""

from __future__ import annotations

import logging

import torch
import torch.distributed
from torch import nn

from mrisr.training.checkpointing import FINAL, LATEST, rng_state, set_rng_state
from mrisr.training.interrupts import DeferredInterrupt
from mrisr.utilities.errors import MrisrError

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


class TrainerState:
    """Checkpoint state, resume and interrupts of :class:`~mrisr.training.trainer.SRTrainer`."""

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
