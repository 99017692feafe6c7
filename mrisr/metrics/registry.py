"""The registry of image-quality metrics (BasicSR's METRIC_REGISTRY): name -> :class:`Metric`.

A metric carries its name, label, direction and display formats, and how it is computed:
``reference`` metrics compare a prediction with its reference on a foreground mask (both
normalised by :func:`mrisr.metrics.fidelity.normalise`; ``compute(ref, pred, mask)``),
no-reference ones score the prediction alone (``compute(pred, mask)``). ``mrisr_evaluate``,
the fold validation, the training log and the comparison table read them from here.

Adding a metric: one module that defines a :class:`Metric`, declared in the ``mrisr.metrics``
entry-point group of its package (:mod:`mrisr.utilities.registry`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mrisr.utilities.registry import Registry


@dataclass(frozen=True)
class Metric:
    name: str  # key in summaries and logs ("psnr")
    label: str  # column / row title ("PSNR")
    higher_is_better: bool
    width: int  # column width of mrisr_evaluate's table
    fmt: str  # per-case number format of mrisr_evaluate (".2f")
    mean_fmt: str  # its mean +- sd cell ("{:.2f}+-{:.2f}")
    table_fmt: str  # mean +- sd cell of the comparison table ("{:.2f} ± {:.2f}")
    reference: bool  # full-reference (True) or no-reference (False)
    compute: Callable[..., float]
    unit: str = ""
    order: int = 0  # position in the tables (ascending)

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    def best(self, values: dict[str, float]) -> str | None:
        """The key of the best of ``values`` (None if empty)."""
        if not values:
            return None
        return (max if self.higher_is_better else min)(values, key=values.get)


METRICS: Registry[Metric] = Registry("metric", "mrisr.metrics")


def register_metric(metric: Metric) -> Metric:
    METRICS.register(metric, name=metric.name)
    return metric


def metric(name: str) -> Metric:
    return METRICS.get(name)


def metrics(reference: bool | None = None) -> list[Metric]:
    """The registered metrics in table order (only full- or no-reference ones if given)."""
    found = [METRICS.get(n) for n in METRICS]
    if reference is not None:
        found = [m for m in found if m.reference == reference]
    return sorted(found, key=lambda m: (m.order, m.name))
