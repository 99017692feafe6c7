"""The intensity relation between the series: measured on the data, applied to every
synthetic LR.

The LR and HR series of a session are often two sequences, or one sequence with other
parameters: the same anatomy under another, non-linear but monotonic, contrast. A
degradation learned from the HR (a kernel, a k-space window) reproduces the resolution of
the real LR but keeps the HR's contrast, and an SR network trained on it meets an input it
never saw. So each synthetic LR becomes ``g(k * HR)``, with ``g`` a monotonic map from the
synthetic LR's intensities to the real LR's (the training noise is added afterwards), and
the network learns to output HR contrast from LR contrast.

``g`` is fitted by **quantile matching**: with a monotonic relation, the real LR's
quantiles are ``g`` of the synthetic LR's quantiles over the same tissue. On registered
pairs the region is the foreground both series share; without pairs, each series' own
foreground (histogram matching). Quantiles, unlike a regression of one on the other, are
not flattened by the residual blur and misregistration of a pair.

Measured, then decided: what matters is the relation's *shape*. A global scale between
the series is removed by per-scan normalisation and by the metrics; noise widens the real
LR's histogram (the synthetic LR's quantiles are taken with the same noise added). What is
left on same-contrast series is 0.002-0.005 of the intensity range (the demo's two fixed
protocols and a family seed); a family seed with another contrast measured 0.029. The
relation is applied only when its departure from a pure scale exceeds
:data:`MAX_NONLINEARITY` (between the two); the summary records the fit either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the quantiles matched (the outer 0.5 % on each side are left to the extrapolation)
QUANTILES = np.linspace(0.005, 0.995, 41)
#: largest departure from a pure scale (fraction of the 95th percentile) left uncorrected
MAX_NONLINEARITY = 0.015
#: voxels sampled per series for the quantiles (deterministic), at most
MAX_SAMPLES = 2_000_000
MIN_VOXELS = 1000


@dataclass
class IntensityRelation:
    """A monotonic map, piecewise linear through knots ``(x, y)``: through the origin
    below the first knot, continued with the last segments' slope above the last."""

    x: np.ndarray
    y: np.ndarray

    def __call__(self, a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float32)
        x, y = self.x, self.y
        out = np.interp(a, x, y).astype(np.float32)
        low = a < x[0]
        if low.any():
            out[low] = a[low] * (y[0] / x[0] if x[0] > 0 else 1.0)
        high = a > x[-1]
        if high.any():
            k = max(4, len(x) // 10)
            slope = float(np.clip((y[-1] - y[-k]) / max(x[-1] - x[-k], 1e-6), 0.2, 5.0))
            out[high] = y[-1] + (a[high] - x[-1]) * slope
        return out

    def deviation(self) -> float:
        """How far ``g`` is from a pure scale ``a x``: the largest ``|g(x) - a x|`` over
        the central knots (5th-95th percentile), as a fraction of the 95th percentile of
        the synthetic LR, with ``a`` the least-squares scale there. A scale alone is not
        a contrast (per-scan normalisation and the metrics remove it)."""
        inner = (QUANTILES >= 0.05) & (QUANTILES <= 0.95)
        x, y = self.x[inner], self.y[inner]
        a = float(x @ y / max(x @ x, 1e-12))
        return float(np.max(np.abs(y - a * x)) / max(float(x[-1]), 1e-6))

    @classmethod
    def applied_in(cls, summary: dict) -> IntensityRelation | None:
        """The relation a degradation summary records as applied (None: none was)."""
        rel = summary.get("intensity_relation") or {}
        if not rel.get("applied"):
            return None
        return cls(np.asarray(rel["synthetic"], float), np.asarray(rel["real"], float))

    def to_json(self) -> dict:
        return {
            "quantiles": [round(float(q), 4) for q in QUANTILES],
            "synthetic": [float(v) for v in self.x],
            "real": [float(v) for v in self.y],
        }


def _sample(values: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    v = np.concatenate([np.ravel(a) for a in values]) if values else np.zeros(0, np.float32)
    if len(v) > MAX_SAMPLES:
        v = rng.choice(v, MAX_SAMPLES, replace=False)
    return v.astype(np.float64)


def fit_relation(
    synthetic: list[np.ndarray], real: list[np.ndarray], noise_sigma: float = 0.0
) -> IntensityRelation | None:
    """``g`` with ``real ~ g(synthetic)`` in distribution: the foreground voxel values of
    the two series (flattened arrays); None with fewer than :data:`MIN_VOXELS` of either.

    ``noise_sigma``: the real LR's noise (per channel, its units). The real LR's quantiles
    are those of ``g(x)`` widened by its noise; the synthetic LR's are taken with the same
    Rician noise added, so that ``g`` does not carry the noise's widening (training adds
    the noise to ``g(k * HR)`` again)."""
    rng = np.random.default_rng(0)
    xs, ys = _sample(synthetic, rng), _sample(real, rng)
    if len(xs) < MIN_VOXELS or len(ys) < MIN_VOXELS:
        return None
    if noise_sigma > 0:
        n = rng.standard_normal((2, len(xs))) * noise_sigma
        xs = np.hypot(xs + n[0], n[1])
    x = np.quantile(xs, QUANTILES)
    y = np.quantile(ys, QUANTILES)
    # strictly increasing knots (ties in x from a flat histogram would make interp ambiguous)
    eps = 1e-6 * max(float(x[-1] - x[0]), 1e-6)
    x = np.maximum.accumulate(x) + eps * np.arange(len(x))
    y = np.maximum.accumulate(y)
    return IntensityRelation(x, y)


def decide(relation: IntensityRelation | None, method: str) -> tuple[dict, bool]:
    """The summary's record of a fit, and whether to apply it."""
    if relation is None:
        return {"method": method, "applied": False, "reason": "too few foreground voxels"}, False
    d = relation.deviation()
    apply = d > MAX_NONLINEARITY
    reason = (
        f"departs from a pure scale by {d:.3f} of the intensity range (> {MAX_NONLINEARITY}): "
        "the LR series has another contrast"
        if apply
        else f"within {MAX_NONLINEARITY} of a pure scale ({d:.3f}): the same contrast"
    )
    info = {
        "method": method,
        "deviation": round(d, 4),
        "applied": apply,
        "reason": reason,
        **relation.to_json(),
    }
    return info, apply
