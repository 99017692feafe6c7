"""Tiny synthetic raw datasets with known geometry, for the tests.

A phantom is defined in physical space (mm) and sampled on each scan's grid, so LR and HR
of a pair agree in physical space whatever their origin, field of view and direction.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def phantom(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """Smooth head-like phantom at physical points (..., 3) in mm; background 0."""
    rng = np.random.default_rng(seed)
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    body = ((x / 40.0) ** 2 + (y / 32.0) ** 2) < 1.0
    val = np.where(body, 100.0, 0.0)
    for _ in range(12):
        c = rng.uniform(-25, 25, size=2)
        r = rng.uniform(3, 8)
        a = rng.uniform(-60, 60)
        val = val + a * np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2) / (2 * r * r)) * body
    val = val + 15 * np.sin(x / 3.0) * np.cos(y / 4.0) * body
    return (val * (1 + 0.002 * z)).astype(np.float32)


def grid_points(size, spacing, origin, direction) -> np.ndarray:
    """Physical points of every voxel, shaped (z, y, x, 3)."""
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    k, j, i = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    idx = np.stack([i, j, k], axis=-1).astype(np.float64)
    return np.asarray(origin) + (idx * np.asarray(spacing)) @ d.T


def make_scan(
    size, spacing, origin=None, direction=None, seed=0, noise=0.0, blur_mm=0.0
) -> sitk.Image:
    direction = direction if direction is not None else np.eye(3).ravel()
    if origin is None:
        d = np.asarray(direction).reshape(3, 3)
        half = (np.asarray(size) - 1) * np.asarray(spacing) / 2
        origin = -(d @ half)
    pts = grid_points(size, spacing, origin, direction)
    arr = phantom(pts, seed)
    if blur_mm > 0:
        from scipy.ndimage import gaussian_filter

        sp = np.asarray(spacing)[::-1]
        arr = gaussian_filter(arr, sigma=[0, blur_mm / sp[1], blur_mm / sp[2]])
    if noise > 0:
        rng = np.random.default_rng(seed + 1000)
        arr = np.abs(arr + rng.normal(0, noise, arr.shape)).astype(np.float32)
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(o) for o in origin])
    img.SetDirection([float(v) for v in np.asarray(direction).ravel()])
    return img


def write_dataset(
    root: Path,
    name: str = "Dataset001_Synth",
    n_pairs: int = 3,
    hr_only: int = 0,
    lr_only: int = 0,
    hr_size=(72, 64, 6),
    hr_spacing=(1.25, 1.25, 2.7),
    lr_size=(36, 32, 6),
    lr_spacing=(2.7, 2.7, 2.7),
    file_ending: str = ".nii.gz",
) -> Path:
    """Write a raw dataset: pairs (same case name in imagesHR/ and imagesLR/), HR-only, LR-only."""
    ds = Path(root) / name
    (ds / "imagesHR").mkdir(parents=True, exist_ok=True)
    (ds / "imagesLR").mkdir(parents=True, exist_ok=True)
    (ds / "dataset.json").write_text(
        json.dumps({"name": name.split("_", 1)[1], "file_ending": file_ending, "modality": "T1"})
    )
    k = 0
    for i in range(n_pairs + hr_only + lr_only):
        case = f"case_{k:03d}"
        k += 1
        if i < n_pairs + hr_only:
            img = make_scan(hr_size, hr_spacing, seed=i, noise=1.0)
            sitk.WriteImage(img, str(ds / "imagesHR" / f"{case}{file_ending}"))
        if i < n_pairs or i >= n_pairs + hr_only:
            img = make_scan(lr_size, lr_spacing, seed=i, noise=4.0, blur_mm=1.5)
            sitk.WriteImage(img, str(ds / "imagesLR" / f"{case}{file_ending}"))
    return ds
