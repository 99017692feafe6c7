"""The shared inference core: real LR scan in, super-resolved scan out.

Used by validation at the end of a fold and by ``mrisr_predict``. A scan goes through
exactly the LR preprocessing of training (physical-space resampling onto the working grid
on the scan's own field of view, normalisation, NLM unless the configuration's network
denoises itself: ``"sr_input": "raw"``), then the SR networks over batches of slices with
optional 8-fold dihedral test-time augmentation, averaged over folds (large slices in
overlapping tiles, optionally with the standard deviation over that ensemble); the
result is restored to the scan's intensity scale and placed on the HR grid that the
pixel-shuffle convention implies (HR in-plane spacing, same slices), with the axis order of
the input scan.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
import torch

from mrisr.imageio.resampling import (
    hr_grid_for_lr,
    inplane_axes,
    resample_to,
    through_plane_axis_single,
)
from mrisr.imageio.sitk_io import Geometry, image_from_array
from mrisr.inference.tiling import DEFAULT_TILE, RunningStats, margin_for, tile_grid
from mrisr.plans import Plans
from mrisr.preprocessing.preprocessor import lr_working_grid, prepare_lr
from mrisr.utilities.devices import cpu_bf16_supported
from mrisr.utilities.threads import set_compute_threads

# the eight elements of the dihedral group D4 acting on the last two axes: (k rot90, flip)
DIHEDRAL = [(k, f) for f in (False, True) for k in range(4)]


def _apply(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if flip:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


def _invert(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, -k, dims=(-2, -1)) if k else x
    return torch.flip(x, dims=(-1,)) if flip else x


class SRPredictor:
    """Super-resolve normalised LR slices with one or more networks (folds).

    ``networks``: modules mapping ``(B, 1, h, w)`` to ``(B, 1, s*h, s*w)``.
    """

    def __init__(
        self,
        plans: Plans,
        networks: Sequence[torch.nn.Module],
        device: str | torch.device = "cpu",
        tta: bool = True,
        batch_size: int = 8,
        mixed_precision: bool | None = None,
        tile_size: int | None = None,
        denoise: bool = True,
    ):
        if not networks:
            raise ValueError("SRPredictor needs at least one network")
        self.plans = plans
        self.device = torch.device(device)
        if self.device.type == "cpu":
            set_compute_threads()  # the CPUs this process may use, or OMP_NUM_THREADS
        self.networks = [n.to(self.device).eval() for n in networks]
        if self.device.type == "cpu":
            self.networks = [n.to(memory_format=torch.channels_last) for n in self.networks]
        self.tta = tta
        self.batch_size = batch_size
        # LR slices larger than tile_size pixels per side are predicted in tiles (0: never)
        self.tile_size = DEFAULT_TILE if tile_size is None else int(tile_size)
        self.margin = margin_for(self.networks)
        self.denoise = denoise  # NLM before the network (the paper) or the raw LR
        # autocast: float16 on CUDA; bf16 on CPUs that compute it natively (AMX /
        # AVX512-BF16: ~4x the float32 forward, as the trainer trains by default); the
        # output and the TTA / fold average stay float32. None: where supported.
        if mixed_precision is None:
            mixed_precision = self.device.type == "cuda" or (
                self.device.type == "cpu" and cpu_bf16_supported()
            )
        self.autocast = (
            {"device_type": "cuda", "dtype": torch.float16}
            if self.device.type == "cuda"
            else {"device_type": "cpu", "dtype": torch.bfloat16}
        )
        self.autocast["enabled"] = bool(mixed_precision) and self.device.type in ("cpu", "cuda")

    @classmethod
    def for_configuration(
        cls, plans: Plans, configuration: str, networks: Sequence[torch.nn.Module] | None, **kw
    ) -> SRPredictor | None:
        """The predictor of a configuration's networks, with its input denoising (NLM for
        the paper's configurations, the raw LR for those that learned to denoise); None
        without networks (``bicubic``)."""
        if not networks:
            return None
        return cls(plans, networks, denoise=plans.configuration(configuration).denoise_input, **kw)

    @torch.inference_mode()
    def predict_array(
        self, lr: np.ndarray, return_std: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """``(z, h, w)`` normalised LR slices -> ``(z, s*h, s*w)`` SR slices (float32).

        ``return_std``: also the per-voxel standard deviation over the ensemble members
        (TTA transforms x networks), from the same forward passes. Slices larger than
        ``tile_size`` go through the networks in overlapping tiles (:mod:`.tiling`).
        """
        s = self.plans.scale
        z, h, w = lr.shape
        out = np.empty((z, s * h, s * w), dtype=np.float32)
        std = np.empty_like(out) if return_std else None
        tiles = tile_grid(h, w, self.tile_size, self.margin)
        for a in range(0, z, self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(lr[a : a + self.batch_size, None]))
            x = x.to(self.device)
            for ty, tx in tiles:
                mean, sd = self._members(x[..., ty.lo : ty.hi, tx.lo : tx.hi], return_std)
                core = (
                    slice(s * (ty.a - ty.lo), s * (ty.b - ty.lo)),
                    slice(s * (tx.a - tx.lo), s * (tx.b - tx.lo)),
                )
                dst = (slice(a, a + len(x)), slice(s * ty.a, s * ty.b), slice(s * tx.a, s * tx.b))
                out[dst] = mean[:, 0, core[0], core[1]].cpu().numpy()
                if std is not None:
                    std[dst] = sd[:, 0, core[0], core[1]].cpu().numpy()
        return (out, std) if return_std else out

    def _members(
        self, x: torch.Tensor, return_std: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mean (and sd) over the ensemble: every network x every TTA transform."""
        s = self.plans.scale
        transforms = DIHEDRAL if self.tta else DIHEDRAL[:1]
        acc = torch.zeros((x.shape[0], 1, s * x.shape[-2], s * x.shape[-1]), device=self.device)
        stats = RunningStats() if return_std else None
        for net in self.networks:
            for k, f in transforms:
                xi = _apply(x, k, f)
                if self.device.type == "cpu":
                    xi = xi.contiguous(memory_format=torch.channels_last)
                with torch.autocast(**self.autocast):
                    y = net(xi)
                y = _invert(y.float(), k, f)
                acc += y
                if stats is not None:
                    stats.add(y)
        acc /= len(self.networks) * len(transforms)
        return acc, (stats.std() if stats is not None else None)

    def predict_scan(
        self, image: sitk.Image, return_std: bool = False
    ) -> sitk.Image | tuple[sitk.Image, sitk.Image]:
        """A real LR scan (any geometry) -> its SR scan in the scan's own intensity units.

        ``return_std``: also the uncertainty map (sd over the ensemble, same geometry).
        """
        prep = prepare_lr(image, self.plans, denoise=self.denoise)
        res = self.predict_array(prep.array, return_std)
        arrays = res if return_std else (res,)
        grid = hr_grid_for_lr(prep.grid, self.plans.scale)
        out = [
            to_input_axis_order(
                image_from_array(a * np.float32(prep.intensity_scale), grid), image, self.plans
            )
            for a in arrays
        ]
        return (out[0], out[1]) if return_std else out[0]


def bicubic_scan(image: sitk.Image, plans: Plans) -> sitk.Image:
    """The ``bicubic`` configuration: cubic B-spline interpolation of the real LR scan onto
    the same HR grid an SR network would produce (no denoising, no learning)."""
    grid = hr_grid_for_lr(lr_working_grid(image, plans, None), plans.scale)
    out = resample_to(image, grid, sitk.sitkBSpline, antialias=False)
    return to_input_axis_order(out, image, plans)


def to_input_axis_order(sr: sitk.Image, source: sitk.Image, plans: Plans) -> sitk.Image:
    """Permute the working-grid axes (in-plane a, in-plane b, through-plane) back to the
    input scan's axis order; the physical geometry is unchanged."""
    tp = through_plane_axis_single(Geometry.of(source), np.asarray(plans.through_plane_normal))
    order = (*inplane_axes(tp), tp)
    if order == (0, 1, 2):
        return sr
    inverse = [order.index(i) for i in range(3)]
    return sitk.PermuteAxes(sr, inverse)
