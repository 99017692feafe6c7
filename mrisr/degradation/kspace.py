"""k-space zero-filling with a Fermi window (the paper's "ZF" baseline).

Model of a low-resolution MR acquisition: the scanner samples only the central part of
k-space; the periphery is zero-filled and an anti-ringing Fermi window (Bernstein et al.
2001) is applied before the inverse FFT; the displayed image is the magnitude.

What :class:`ZeroFillDegradation` does per slice (vectorised over the stack):

1. 2D FFT of the HR slice (HR rows/columns beyond ``s * (H // s)`` are dropped first).
2. **Truncation = decimation.** The LR grid has ``h = H/s`` rows, so its spectrum holds HR
   frequencies ``|k| <= h/2`` (cycles per field of view). Of those, the central
   ``n = round(keep_fraction * H)`` lines are kept (``n <= h``; ``keep_fraction = 1/s``
   keeps the whole LR band, the paper's "central 50% x 50%" for s = 2; a smaller fraction
   models partial resolution, zero-filled up to the LR grid). For even ``n`` the two
   edge lines ``k = +-n/2`` are kept with weight 1/2 each (when ``n = h`` they fold onto
   the LR Nyquist line), so a real image gives a real LR image (Hermitian symmetry).
3. **Grid convention.** A linear phase ``exp(2 pi i k (s-1)/2 / H)`` moves the samples by
   ``(s-1)/2`` HR pixels, so LR pixel ``i`` is the band-limited image at HR position
   ``s*i + (s-1)/2`` (pixel-shuffle convention; the Gaussian and bicubic models are centred
   there too). Without it the zero-filled LR would sit half an HR pixel off (s = 2).
4. **Fermi window** ``1 / (1 + exp((r - fermi_radius) / fermi_width))`` with ``r`` the radius
   normalised to the kept block (``r = 1`` at the block's edge along each axis, elliptical
   for anisotropic blocks).
5. Inverse FFT on the ``h x w`` LR grid, scaled by ``1/s^2`` (``h*w / (H*W)``) so that
   intensities (the DC term) are preserved.
6. **Magnitude** (default, ``"output": "magnitude"``), as an MR scanner reconstructs: the
   real data are complex with a smooth phase, and displayed/exported LR images are
   magnitudes, so Gibbs/Fermi ringing below zero next to a dark background is folded up
   (the ringing texture of real LR). For a non-negative band-limited image the magnitude
   equals the real part. ``"output": "real"`` keeps the signed real part (a linear
   operator, useful for analysis).

Parameters: ``{"name": "zerofill", "keep_fraction": [fy, fx] or f, "fermi_radius": 0.9,
"fermi_width": 0.05, "output": "magnitude"}``; ``fermi_radius: null`` disables the window
(a hard box, maximum ringing).
"""

from __future__ import annotations

import numpy as np

from mrisr.degradation.base import DEGRADATIONS, Degradation, PlanningContext, as_slice_stack


def _axis_weights(n_hr: int, n_lr: int, n_keep: int, shift: float) -> tuple[np.ndarray, ...]:
    """Per-axis selection of HR frequencies for an ``n_lr`` LR grid (FFT order).

    Returns ``(hr_index, weight, nyq_index, nyq_weight)``: LR bin ``j`` takes HR bin
    ``hr_index[j]`` times ``weight[j]`` (box x phase ramp); when the kept band reaches the
    LR Nyquist line (``n_keep == n_lr``, even), HR bin ``nyq_index`` (the ``+n_lr/2``
    frequency) is added to that LR bin with ``nyq_weight``.
    """
    k = np.fft.fftfreq(n_lr, d=1.0 / n_lr).round().astype(np.int64)  # signed, FFT order
    ak = np.abs(k)
    box = np.where(2 * ak < n_keep, 1.0, np.where(2 * ak == n_keep, 0.5, 0.0))
    ramp = np.exp(2j * np.pi * k * shift / n_hr)
    weight = box * ramp
    nyq_index = nyq_weight = None
    if n_lr % 2 == 0 and n_keep == n_lr:
        kn = n_lr // 2
        nyq_index = kn  # +n_lr/2 in the HR spectrum (index -n_lr/2 mod n_hr is the other)
        nyq_weight = 0.5 * np.exp(2j * np.pi * kn * shift / n_hr)
    return k % n_hr, weight, nyq_index, nyq_weight


def _fold(spec: np.ndarray, axis: int, n_hr: int, n_lr: int, n_keep: int, shift: float):
    idx, w, nyq_i, nyq_w = _axis_weights(n_hr, n_lr, n_keep, shift)
    shape = [1] * spec.ndim
    shape[axis] = n_lr
    out = np.take(spec, idx, axis=axis) * w.reshape(shape).astype(np.complex64)
    if nyq_i is not None:
        sl = [slice(None)] * spec.ndim
        sl[axis] = slice(n_lr // 2, n_lr // 2 + 1)
        extra = np.take(spec, [nyq_i], axis=axis) * np.complex64(nyq_w)
        out[tuple(sl)] += extra
    return out


def fermi_window(
    shape: tuple[int, int], n_keep: tuple[int, int], radius: float | None, width: float
) -> np.ndarray:
    """Radial Fermi window on an LR spectrum of ``shape`` (FFT order).

    ``r = sqrt((ky / (n_keep_y/2))^2 + (kx / (n_keep_x/2))^2)``; ``radius=None`` gives ones.
    """
    if radius is None:
        return np.ones(shape, dtype=np.float32)
    ky = np.fft.fftfreq(shape[0], d=1.0 / shape[0]) / (n_keep[0] / 2)
    kx = np.fft.fftfreq(shape[1], d=1.0 / shape[1]) / (n_keep[1] / 2)
    r = np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    z = np.clip((r - radius) / width, -60.0, 60.0)
    return (1.0 / (1.0 + np.exp(z))).astype(np.float32)


def zerofill_degrade(
    hr: np.ndarray,
    scale: int,
    keep_fraction: tuple[float, float],
    fermi_radius: float | None = 0.9,
    fermi_width: float = 0.05,
    output: str = "magnitude",
) -> np.ndarray:
    """Zero-filled, Fermi-windowed LR of HR slices ``(z, H, W)``; see the module docstring."""
    vol, squeeze = as_slice_stack(hr, scale)
    s = scale
    h, w = vol.shape[1] // s, vol.shape[2] // s
    vol = vol[:, : h * s, : w * s]
    H, W = h * s, w * s
    n_keep = (int(round(keep_fraction[0] * H)), int(round(keep_fraction[1] * W)))
    for n, m, ax in zip(n_keep, (h, w), "yx"):
        if n < 1:
            raise ValueError(f"zerofill keeps no k-space line along {ax} (keep_fraction too small)")
        if n > m:
            raise ValueError(
                f"zerofill keep_fraction {keep_fraction} keeps {n} lines along {ax}, more than "
                f"the {m} an LR grid of scale {s} can hold (keep_fraction must be <= 1/scale)"
            )
    shift = (s - 1) / 2
    spec = np.fft.fft2(vol, axes=(-2, -1)).astype(np.complex64)
    spec = _fold(spec, 1, H, h, n_keep[0], shift)
    spec = _fold(spec, 2, W, w, n_keep[1], shift)
    spec *= fermi_window((h, w), n_keep, fermi_radius, fermi_width)
    lr = np.fft.ifft2(spec, axes=(-2, -1)) * (h * w / (H * W))
    out = np.abs(lr) if output == "magnitude" else lr.real
    out = out.astype(np.float32)
    return out[0] if squeeze else out


def _positive(value, key: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"zerofill '{key}' must be a positive number, got {value!r}")
    return v


@DEGRADATIONS.register
class ZeroFillDegradation(Degradation):
    """Central k-space kept, periphery zero-filled, Fermi window, magnitude image."""

    name = "zerofill"
    label = "k-space zero-filling"
    plan_order = 40

    @classmethod
    def plan(cls, fingerprint, context: PlanningContext) -> dict[str, dict]:
        """ZF+EDSR, the paper's baseline: the central 1/scale of k-space, a Fermi window."""
        s = context.scale
        section = {
            "name": "zerofill",
            "keep_fraction": [1.0 / s, 1.0 / s],
            "fermi_radius": 0.9,
            "fermi_width": 0.05,
        }
        return {
            "zerofill_edsr": context.configuration(
                "ZF+EDSR",
                "EDSR trained on k-space zero-filled HR (ZF+EDSR)",
                section,
                raw_input=False,
            )
        }

    def __init__(self, params: dict, scale: int):
        super().__init__(params, scale)
        kf = self.params.get("keep_fraction")
        if kf is None:
            kf = [1.0 / self.scale, 1.0 / self.scale]
        try:
            kf_arr = np.atleast_1d(np.asarray(kf, dtype=np.float64))
        except (TypeError, ValueError):
            kf_arr = np.array([np.nan])
        if kf_arr.size == 1:
            kf_arr = np.repeat(kf_arr, 2)
        if kf_arr.size != 2 or not np.all(np.isfinite(kf_arr)) or np.any(kf_arr <= 0):
            raise ValueError(
                f"zerofill 'keep_fraction' must be f or [fy, fx] in (0, 1/scale], got {kf!r}"
            )
        if np.any(kf_arr > 1.0 / self.scale + 1e-9):
            raise ValueError(
                f"zerofill 'keep_fraction' {kf!r} exceeds 1/scale = {1.0 / self.scale:.4g}: the LR "
                "grid cannot hold more k-space than that"
            )
        self.keep_fraction = (float(kf_arr[0]), float(kf_arr[1]))
        radius = self.params.get("fermi_radius", 0.9)
        width = self.params.get("fermi_width", 0.05)
        self.fermi_radius = None if radius is None else _positive(radius, "fermi_radius")
        self.fermi_width = 0.05 if radius is None else _positive(width, "fermi_width")
        output = self.params.get("output", "magnitude")
        if output not in ("magnitude", "real"):
            raise ValueError(f"zerofill 'output' must be 'magnitude' or 'real', got {output!r}")
        self.output = output

    def degrade(self, hr: np.ndarray) -> np.ndarray:
        return zerofill_degrade(
            hr,
            self.scale,
            self.keep_fraction,
            self.fermi_radius,
            self.fermi_width,
            self.output,
        )
