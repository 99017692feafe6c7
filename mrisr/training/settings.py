"""What the training loop needs, resolved from the plans' ``sr`` section and the variant."""

from __future__ import annotations

from dataclasses import dataclass

from mrisr.networks.registry import network_spec
from mrisr.plans import SRPlan


def rescaled(value: int, ratio: float) -> int:
    """An iteration count of the schedule (a milestone, an interval) for a budget ``ratio``
    times the planned one: a trainer variant's length, a time budget's ceiling."""
    return max(1, int(round(value * ratio)))


@dataclass(frozen=True)
class TrainingSettings(SRPlan):
    """Everything the loop needs: the plans' ``sr`` section (:class:`~mrisr.plans.SRPlan`,
    with the trainer variant's changes) and the plans' integer scale."""

    scale: int

    @property
    def hr_patch(self) -> int:
        return self.scale * self.lr_patch

    def network_args(self) -> dict:
        """The registered network's constructor arguments (recorded in checkpoints)."""
        return network_spec(self.network).init_args(
            {
                "num_blocks": self.num_blocks,
                "num_features": self.num_features,
                "res_scale": self.res_scale,
            },
            self.scale,
        )
