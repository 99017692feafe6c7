"""Training data for the SR network: aligned (synthetic LR, HR) patches with batchgenerators.

Pieces, each replaceable on its own:

* :class:`PatchSampler` decides *which* crops a batch holds: a pure function of
  ``(seed, iteration, rank)``. Crop centres are drawn with the gradient-weighted
  probabilities of preprocessing (:mod:`mrisr.preprocessing.sampling`), computed on the LR
  grid; slices are drawn uniformly among the slices that have any weight.
* :class:`SRPatchLoader` (a batchgenerators ``SlimDataLoaderBase``) reads the crops from
  the stores: synthetic LR ``(z, H//s, W//s)`` from the degradation stage, HR ``(z, H, W)``
  from the preprocessed data. LR pixel ``i`` covers HR pixels ``s*i .. s*i+s-1``, so the LR
  crop at ``(y, x)`` pairs with the HR crop at ``(s*y, s*x)``.
* :class:`mrisr.degradation.patch_noise.PatchDegradation` (configurations that plan
  ``training_noise``): Rician noise of the real LR's measured level and colour, and the
  planned jitter, drawn afresh for every patch from ``(seed, iteration, rank)``.
* :class:`DihedralTransform` applies the 8-fold dihedral augmentation drawn by the sampler
  (same element to LR and HR, so alignment is kept).
* :func:`batch_iterator` runs loader + transform in background processes
  (``MultiThreadedAugmenter``) or in the calling process when ``num_workers == 0``
  (``SingleThreadedAugmenter``).

Determinism: batch ``i`` depends only on ``(seed, i, rank)``; worker ``w`` of ``n`` makes
batches ``start + w, start + w + n, ...`` and the augmenter collects worker queues round
robin, so the ``k``-th batch received is batch ``start + k`` whatever the number of
workers, and resuming at iteration ``start`` reproduces the batches of an uninterrupted
run. Each batch carries its ``iteration`` so the trainer can check this.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from batchgenerators.dataloading.data_loader import SlimDataLoaderBase
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgenerators.transforms.abstract_transforms import AbstractTransform

from mrisr.degradation.patch_noise import PatchDegradation
from mrisr.preprocessing import storage
from mrisr.preprocessing.sampling import crop_center_probabilities
from mrisr.utilities.errors import MrisrError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingVolume:
    """One HR case of the training set and its synthetic LR."""

    case: str
    hr_path: Path
    lr_path: Path
    hr_weight_path: Path


def lr_grid_weight(hr_weight: np.ndarray, scale: int) -> np.ndarray:
    """Sum the HR sampling weight over the ``s x s`` HR pixels each LR pixel covers."""
    z, H, W = hr_weight.shape
    h, w = H // scale, W // scale
    a = np.asarray(hr_weight[:, : h * scale, : w * scale], dtype=np.float32)
    return a.reshape(z, h, scale, w, scale).sum(axis=(2, 4))


class PatchSampler:
    """Crop positions and dihedral elements of every batch, from ``(seed, iteration, rank)``.

    Holds one float32 cumulative distribution per slice (4 bytes per LR pixel of the
    training set), built once before the loader workers start (shared by fork).
    """

    def __init__(
        self,
        volumes: list[TrainingVolume],
        scale: int,
        lr_patch: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        augment: bool = True,
    ):
        if not volumes:
            raise MrisrError("no training case with an HR scan: nothing to train the SR network on")
        self.scale, self.lr_patch, self.batch_size = scale, lr_patch, batch_size
        self.seed, self.rank, self.augment = seed, rank, augment
        self.lr_shapes: list[tuple[int, int, int]] = []
        cdfs, table = [], []
        for v, vol in enumerate(volumes):
            weight = lr_grid_weight(storage.load_array(vol.hr_weight_path), scale)
            z, h, w = weight.shape
            if h < lr_patch or w < lr_patch:
                raise MrisrError(
                    f"case {vol.case}: LR slices of {h}x{w} px are smaller than the planned "
                    f"LR patch {lr_patch}; re-plan (mrisr_plan_and_preprocess --clean)"
                )
            prob = crop_center_probabilities(weight, lr_patch).reshape(z, -1)
            cdf = np.cumsum(prob, axis=1)
            cdf /= np.where(cdf[:, -1:] > 0, cdf[:, -1:], 1.0)
            cdfs.append(cdf.astype(np.float32))
            nonempty = np.flatnonzero(weight.reshape(z, -1).sum(axis=1) > 0)
            if nonempty.size == 0:
                nonempty = np.arange(z)
            table += [(v, int(s)) for s in nonempty]
            self.lr_shapes.append((z, h, w))
        self._cdfs = cdfs
        self._slices = np.asarray(table, dtype=np.int64)

    @property
    def num_slices(self) -> int:
        return len(self._slices)

    def sample(self, iteration: int) -> np.ndarray:
        """``(batch, 5)`` int array: volume, slice, LR row, LR column, dihedral element."""
        rng = np.random.default_rng([self.seed, iteration, self.rank])
        picks = self._slices[rng.integers(0, len(self._slices), self.batch_size)]
        u = rng.random(self.batch_size)
        out = np.empty((self.batch_size, 5), dtype=np.int64)
        half = self.lr_patch // 2
        for i, (v, z) in enumerate(picks):
            cdf = self._cdfs[v][z]
            idx = min(int(np.searchsorted(cdf, u[i], side="right")), cdf.size - 1)
            row, col = divmod(idx, self.lr_shapes[v][2])
            out[i] = (v, z, row - half, col - half, 0)
        if self.augment:
            out[:, 4] = rng.integers(0, 8, self.batch_size)
        return out


class SRPatchLoader(SlimDataLoaderBase):
    """Batches ``{"data": LR (B, 1, p, p), "target": HR (B, 1, s*p, s*p), "dihedral": (B,),
    "iteration": int}`` as float32 numpy arrays, starting at ``start_iteration``."""

    def __init__(
        self,
        volumes: list[TrainingVolume],
        sampler: PatchSampler,
        start_iteration: int,
        num_workers: int,
        degradation: PatchDegradation | None = None,
    ):
        super().__init__(None, sampler.batch_size, max(num_workers, 1))
        self.degradation = degradation
        self.volumes = volumes
        self.sampler = sampler
        self.start_iteration = int(start_iteration)
        self._made = 0
        self._arrays: dict[int, list] = {}

    def _open(self) -> list:
        # opened in the process that reads (not inherited through fork), once
        pid = os.getpid()
        if pid not in self._arrays:
            self._arrays = {
                pid: [
                    (storage.open_array(v.lr_path), storage.open_array(v.hr_path))
                    for v in self.volumes
                ]
            }
        return self._arrays[pid]

    def batch(self, iteration: int) -> dict:
        arrays = self._open()
        p, s = self.sampler.lr_patch, self.sampler.scale
        picks = self.sampler.sample(iteration)
        b = len(picks)
        lr = np.empty((b, 1, p, p), dtype=np.float32)
        hr = np.empty((b, 1, s * p, s * p), dtype=np.float32)
        for i, (v, z, y, x, _) in enumerate(picks):
            lr_arr, hr_arr = arrays[v]
            lr[i, 0] = lr_arr[z, y : y + p, x : x + p]
            hr[i, 0] = hr_arr[z, s * y : s * (y + p), s * x : s * (x + p)]
        if self.degradation is not None:
            # fresh noise for every patch, a pure function of (seed, iteration, rank)
            rng = np.random.default_rng([self.sampler.seed, iteration, self.sampler.rank, 1])
            lr, hr = self.degradation.apply(lr, hr, rng)
        return {"data": lr, "target": hr, "dihedral": picks[:, 4].copy(), "iteration": iteration}

    def generate_train_batch(self) -> dict:
        n = self.number_of_threads_in_multithreaded
        it = self.start_iteration + self.thread_id + self._made * n
        self._made += 1
        return self.batch(it)


def dihedral(a: np.ndarray, element: int) -> np.ndarray:
    """Element ``k + 4 * flip`` of D4 on the last two axes: flip columns, then rotate by k
    quarter turns (the order of :data:`mrisr.inference.predictor.DIHEDRAL`)."""
    k, flip = element % 4, element >= 4
    if flip:
        a = a[..., ::-1]
    return np.rot90(a, k, axes=(-2, -1)) if k else a


class DihedralTransform(AbstractTransform):
    """The same dihedral element on a sample's LR and HR patch (square patches)."""

    def __init__(self, keys: tuple[str, ...] = ("data", "target")):
        self.keys = keys

    def __call__(self, **data_dict):
        elements = data_dict["dihedral"]
        for key in self.keys:
            arr = data_dict[key]
            out = np.empty_like(arr)
            for i, e in enumerate(elements):
                out[i] = dihedral(arr[i], int(e))
            data_dict[key] = out
        return data_dict


def batch_iterator(loader: SRPatchLoader, num_workers: int, augment: bool = True):
    """Batches from ``loader`` with augmentation, in ``num_workers`` background processes
    (0: in the calling process). Call ``_finish()`` on the result to stop the workers."""
    transform = DihedralTransform() if augment else None
    if num_workers <= 0:
        return SingleThreadedAugmenter(loader, transform)
    return MultiThreadedAugmenter(
        loader,
        transform,
        num_workers,
        num_cached_per_queue=2,
        seeds=[None] * num_workers,
        pin_memory=False,
    )


def close_iterator(it) -> None:
    """Stop the background workers of a :func:`batch_iterator` (no-op when there are none)."""
    finish = getattr(it, "_finish", None)
    if finish is not None:
        finish()
