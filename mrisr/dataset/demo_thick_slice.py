"""Thick-slice demo scans: 2D multi-slice acquisitions of the MNI152 template, with truth.

Each case sees the 1 mm template (nilearn's, nothing downloaded) through its own pose (a
rotation of up to 5 degrees per axis, a shift of up to 3 mm, an intensity scale). Its
thick-slice scan keeps the 1 mm in-plane grid; every slice integrates the object over its
slab (a box of the protocol's thickness, ``SUBSLICES``-point midpoint rule), slices are
``spacing`` apart (a gap where spacing > thickness), and Rician noise is added. The truth is
the same posed object sampled at 1 mm on the through-plane prediction's grid (first slice
centre to last, :func:`mrisr.throughplane.geometry.output_geometry`), noise-free.

Protocols (:data:`THICK_PROTOCOLS`): ``thick4`` 4 mm contiguous, ``thick3gap`` 3 mm slices
with a 0.6 mm gap (spacing 3.6 mm: a non-integer ratio), ``thick5`` 5 mm contiguous.

Layout: ``DIR/imagesLR/thick_NNN.nii.gz`` (thick scans), ``DIR/imagesHR/thick_NNN.nii.gz``
(truth), the same under ``imagesLRTs``/``imagesHRTs`` for held-out cases, and
``dataset.json`` with ``"slice_thickness"`` (mm), the way a user states it for NIfTI.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mrisr.dataset.demo_acquisition import rotation, template_path
from mrisr.imageio.resampling import output_slices
from mrisr.imageio.sitk_io import write_scan
from mrisr.utilities.file_io import make_dirs, save_json

SUBSLICES = 9
ROTATION_DEG = 5.0
SHIFT_MM = 3.0
NOISE_FRACTION = 0.02  # Rician sigma / median brain intensity
MARGIN_MM = 4
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # scans are axial, x y z


@dataclass(frozen=True)
class ThickProtocol:
    thickness: float  # mm (box profile width)
    spacing: float  # mm (slice centre to centre)


THICK_PROTOCOLS = {
    "thick4": ThickProtocol(4.0, 4.0),
    "thick3gap": ThickProtocol(3.0, 3.6),
    "thick5": ThickProtocol(5.0, 5.0),
}


def _object() -> tuple[sitk.Image, np.ndarray, np.ndarray, float]:
    """The template, its brain's bounding box (physical lo, hi) and median intensity."""
    img = sitk.ReadImage(str(template_path()), sitk.sitkFloat32)
    arr = sitk.GetArrayViewFromImage(img)
    idx = np.nonzero(arr > 0)
    lo = [float(i.min()) for i in idx[::-1]]
    hi = [float(i.max()) for i in idx[::-1]]
    p_lo = np.array(img.TransformContinuousIndexToPhysicalPoint(lo))
    p_hi = np.array(img.TransformContinuousIndexToPhysicalPoint(hi))
    return img, np.minimum(p_lo, p_hi), np.maximum(p_lo, p_hi), float(np.median(arr[arr > 0]))


def _resampled(obj: sitk.Image, tf: sitk.Transform, size, spacing, origin) -> np.ndarray:
    out = sitk.Resample(
        obj, [int(v) for v in size], tf, sitk.sitkLinear, [float(v) for v in origin],
        [float(v) for v in spacing], IDENTITY, 0.0, sitk.sitkFloat32,
    )  # fmt: skip
    return sitk.GetArrayFromImage(out)


def simulate_thick_case(
    protocol: ThickProtocol, seed: int, noise: float = NOISE_FRACTION
) -> tuple[sitk.Image, sitk.Image]:
    """(thick-slice scan, isotropic noise-free truth on the output grid) for one case."""
    obj, lo, hi, median = _object()
    rng = np.random.default_rng(seed)
    angles = np.deg2rad(rng.uniform(-ROTATION_DEG, ROTATION_DEG, 3))
    tf = sitk.AffineTransform(3)
    tf.SetMatrix(rotation(*angles).ravel().tolist())
    tf.SetCenter(((lo + hi) / 2).tolist())
    tf.SetTranslation(rng.uniform(-SHIFT_MM, SHIFT_MM, 3).tolist())
    scale = float(np.exp(rng.uniform(-0.2, 0.2)))

    origin = lo - MARGIN_MM
    extent = hi - lo + 2 * MARGIN_MM
    nx, ny = int(math.ceil(extent[0])) + 1, int(math.ceil(extent[1])) + 1
    n = int(math.floor(extent[2] / protocol.spacing)) + 1
    slab = np.zeros((n, ny, nx), np.float32)
    for k in range(SUBSLICES):
        dz = ((k + 0.5) / SUBSLICES - 0.5) * protocol.thickness
        o = origin + np.array([0.0, 0.0, dz])
        slab += _resampled(obj, tf, (nx, ny, n), (1.0, 1.0, protocol.spacing), o)
    slab *= scale / SUBSLICES
    sigma = noise * median * scale
    if sigma > 0:
        a, b = rng.normal(0, sigma, (2, *slab.shape)).astype(np.float32)
        slab = np.sqrt((slab + a) ** 2 + b**2)
    thick = sitk.GetImageFromArray(slab)
    thick.SetSpacing((1.0, 1.0, protocol.spacing))
    thick.SetOrigin(origin.tolist())
    thick.SetDirection(IDENTITY)

    n_out = output_slices(n, protocol.spacing)
    truth = _resampled(obj, tf, (nx, ny, n_out), (1.0, 1.0, 1.0), origin) * scale
    t_img = sitk.GetImageFromArray(truth.astype(np.float32))
    t_img.SetSpacing((1.0, 1.0, 1.0))
    t_img.SetOrigin(origin.tolist())
    t_img.SetDirection(IDENTITY)
    return thick, t_img


def build_thick_dataset(
    folder: str | Path, protocol: str, cases: int = 2, test_cases: int = 1, seed: int = 0
) -> Path:
    """Write a thick-slice demo dataset (see the module docstring) and return its folder."""
    if protocol not in THICK_PROTOCOLS:
        raise ValueError(
            f"unknown thick-slice protocol '{protocol}'; one of {sorted(THICK_PROTOCOLS)}"
        )
    p = THICK_PROTOCOLS[protocol]
    folder = make_dirs(folder)
    for i in range(cases + test_cases):
        suffix = "" if i < cases else "Ts"
        thick, truth = simulate_thick_case(p, seed * 1000 + i)
        name = f"thick_{i:03d}.nii.gz"
        write_scan(thick, make_dirs(folder / f"imagesLR{suffix}") / name)
        write_scan(truth, make_dirs(folder / f"imagesHR{suffix}") / name)
    save_json(
        {
            "name": f"ThickSlice_{protocol}",
            "file_ending": ".nii.gz",
            "modality": "T1",
            "description": "mrisr thick-slice demo (MNI152 template, box slice profile)",
            "slice_thickness": p.thickness,
            "slice_spacing": p.spacing,
            "protocol": protocol,
        },
        folder / "dataset.json",
    )
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m mrisr.dataset.demo_thick_slice",
        description="Simulate thick-slice scans (and their isotropic truth) from the MNI152 template.",
    )
    ap.add_argument("outdir")
    ap.add_argument("--protocol", default="thick4", choices=sorted(THICK_PROTOCOLS))
    ap.add_argument("--cases", type=int, default=2, help="training scans (default 2)")
    ap.add_argument("--test-cases", type=int, default=1, help="held-out scans (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    print(build_thick_dataset(a.outdir, a.protocol, a.cases, a.test_cases, a.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
