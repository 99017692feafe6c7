"""Anti-aliased bicubic decimation (MATLAB ``imresize(hr, 1/s, 'bicubic')``).

The classic "bicubic" LR of the SR literature, used by the MSCN comparisons and as the
fixed starting point of the DSN. For downscaling, ``imresize`` stretches the Keys cubic
(a = -0.5) by the scale factor to anti-alias: LR pixel ``i`` (centred on HR position
``s*i + (s-1)/2``, the pixel-shuffle convention) is

    LR[i] = sum_t w(t) HR[s*i + t],   w(t) = keys((t - (s-1)/2) / s) / s   (normalised to sum 1)

separably along rows and columns, with half-sample symmetric borders (``imresize``'s
``symmetric`` padding = scipy's ``reflect``). The taps
(:func:`mrisr.degradation.kernels.bicubic_taps`) are identical to
:func:`~mrisr.degradation.kernels.bicubic_kernel_1d` (KernelGAN's fixed bicubic kernel),
laid out on an odd grid whose centre tap sits on HR pixel ``s*i`` so that
:func:`~mrisr.degradation.kernels.degrade_with_kernel` applies it.

Parameters: ``{"name": "bicubic"}`` (optionally ``"a"``, the Keys parameter, default -0.5).
"""

from __future__ import annotations

import math

from mrisr.degradation.base import DEGRADATIONS, KernelDegradation
from mrisr.degradation.kernels import bicubic_kernel


@DEGRADATIONS.register
class BicubicDegradation(KernelDegradation):
    """Anti-aliased bicubic downscaling by ``scale`` (MATLAB ``imresize`` style); planned in
    no configuration of its own (the DSN starts from it, the MSCN comparisons use it)."""

    name = "bicubic"
    label = "bicubic decimation"

    def __init__(self, params: dict | None, scale: int):
        super().__init__(params or {"name": "bicubic"}, scale)
        a = self.params.get("a", -0.5)
        if not isinstance(a, (int, float)) or not math.isfinite(a):
            raise ValueError(f"bicubic 'a' must be a number, got {a!r}")
        self.a = float(a)
        self.kernel = bicubic_kernel(self.scale, self.a)
