"""Stop when it stops improving: the plateau rule on the fold's validation PSNR.

The planned iteration count is a ceiling and the planned learning-rate drops are the latest
points at which they happen. After every periodic validation (every ``1 / validations`` of
the ceiling at most) the rule looks at the validation PSNR of the fold's held-out pairs:

* before ``min_fraction`` of the ceiling nothing is decided;
* a *plateau*: the best of the last ``patience`` validations, all in the current
  learning-rate phase, is not ``min_delta`` dB above the best of every validation before
  them;
* on a plateau with a planned drop still ahead, the learning rate drops now (that planned
  drop is taken early, so the schedule keeps its number of drops); on a plateau after the
  last drop, training stops.

Each phase so gets at least ``patience`` validations. The decisions (iteration and why) are
recorded in the checkpoint, so ``--continue`` resumes the same schedule bit for bit, and in
the training log; ``mrisr_train --no-early-stop`` keeps the fixed budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CONTINUE, DROP, STOP = "continue", "drop", "stop"
#: the decisions in a fixed order (DDP ranks receive rank 0's as an index)
DECISIONS = (CONTINUE, DROP, STOP)


@dataclass(frozen=True)
class PlateauRule:
    """When a fold's validation PSNR has stopped improving (see the module docstring)."""

    patience: int = 3
    min_delta: float = 0.02  # dB
    min_fraction: float = 0.25
    validations: int = 20

    def validate_every(self, planned: int, ceiling: int) -> int:
        """The validation interval the rule needs: the planned one, or ``ceiling /
        validations`` where that is shorter."""
        return max(1, min(planned, ceiling // self.validations))

    def decide(
        self,
        iterations: list[int],
        psnr: list[float],
        iteration: int,
        ceiling: int,
        phase_start: int,
        drops_left: int,
    ) -> tuple[str, str]:
        """(CONTINUE / DROP / STOP, why) after the validation at ``iteration``."""
        if iteration < self.min_fraction * ceiling:
            return CONTINUE, "before the minimum budget"
        values = [(i, p) for i, p in zip(iterations, psnr) if math.isfinite(p)]
        recent = values[-self.patience :]
        earlier = values[: -self.patience]
        if len(recent) < self.patience or not earlier or recent[0][0] <= phase_start:
            return CONTINUE, "too few validations in this learning-rate phase"
        best_recent = max(p for _, p in recent)
        best_earlier = max(p for _, p in earlier)
        if best_recent >= best_earlier + self.min_delta:
            return CONTINUE, "still improving"
        why = (
            f"validation PSNR plateau: best of the last {self.patience} validations "
            f"{best_recent:.3f} dB, not {self.min_delta:g} dB above the earlier best "
            f"{best_earlier:.3f} dB"
        )
        return (DROP, why) if drops_left > 0 else (STOP, why)


class EarlyStopping:
    """A trainer's early stopping: the rule, its decisions so far (checkpointed) and their
    effect on the optimisation (a collaborator of :class:`~mrisr.training.trainer.SRTrainer`:
    after each periodic validation the main rank asks for a :meth:`decision`, and every rank
    carries it out with :meth:`apply`)."""

    def __init__(self, rule: PlateauRule, enabled: bool):
        self.rule = rule
        self.enabled = enabled  # on for this run: wanted, and there are validation pairs
        self.drops: list[int] = []
        self.stopped_at: int | None = None
        self.why: str | None = None

    @property
    def stopped(self) -> bool:
        return self.enabled and self.stopped_at is not None

    def state_dict(self) -> dict:
        return {"drops": list(self.drops), "stopped_at": self.stopped_at, "why": self.why}

    def load_state_dict(self, state: dict | None) -> None:
        state = state or {}
        self.drops = [int(i) for i in state.get("drops", [])]
        stopped = state.get("stopped_at")
        self.stopped_at = None if stopped is None else int(stopped)
        self.why = None if state.get("why") is None else str(state["why"])

    def marks(self) -> dict[int, str]:
        """iteration -> label, for the progress figure."""
        marks = {it: "learning rate drop (plateau)" for it in self.drops}
        if self.stopped_at is not None:
            marks[self.stopped_at] = "stopped early (plateau)"
        return marks

    def decision(self, history: dict, iteration: int, ceiling: int, milestones: list[int]):
        """(decision, why) from the validation history (the main rank's)."""
        if not history.get("val_iteration"):
            return CONTINUE, ""
        phase_start = max([0, *(m for m in milestones if m <= iteration), *self.drops])
        return self.rule.decide(
            history["val_iteration"],
            history["val_psnr"],
            iteration,
            ceiling,
            phase_start,
            sum(m > iteration for m in milestones),
        )

    def apply(self, decision: str, why: str, iteration: int, ceiling: int, optimisation) -> str:
        """Carry out ``decision``; returns the log line ('' for CONTINUE)."""
        if decision == DROP:
            planned = optimisation.drop_learning_rate_now()
            self.drops.append(iteration)
            return (
                f"iteration {iteration}: {why}: learning rate x{optimisation.settings.lr_gamma:g}"
                f" now (planned at iteration {planned}), {optimisation.learning_rate:.3g}"
            )
        if decision == STOP:
            self.stopped_at, self.why = iteration, why
            return (
                f"iteration {iteration}: {why}: stopping early at {iteration} of {ceiling} "
                "iterations (mrisr_train --no-early-stop trains them all)"
            )
        return ""
