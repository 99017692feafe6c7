"""The demo's protocol family: ``--protocol random:SEED`` draws one LR acquisition.

The two fixed demo protocols cover one scanner each. A method that must hold on
acquisitions it was never tuned on is developed and judged on many: each seed draws, from
the ranges below, what real scanners do and the fixed protocols lack. Develop on seeds
0-99; report on 1000 and above. The HR series stays the demo's (1.25 mm, mild Tukey).

=====================  =====================================================================
LR pixel               ratio to HR uniform in [1.7, 3.2] (non-integer), FOV 200-240 mm
phase resolution       1.0 (half the draws), else 0.7-0.9 of the y lines (anisotropic)
raw-data filter        none / Hamming / Tukey (taper 0.2-0.6) / Fermi (radius 0.75-0.95)
partial Fourier        none (half), else 0.6-0.8 of the phase-encoding lines
contrast               the HR's (half), else f(x) = (1+c) x^g / (1+c x^g), g 0.6-1.6, c 0-2
bias field             log-amplitude 0.05-0.3 (HR 0.1), drawn per scan: differs per series
noise                  0.02-0.09 of the median brain intensity
g-factor map           none (half), else 1.2-2.0 at the FOV's centre (spatially varying)
background             noise (70 %), else masked: zero outside the head
stored grid            as acquired (70 %), else 1.5-2x finer, zero-filled (headers lie)
motion                 0.5-2x the demo's between the series
anatomy                axial or coronal sections of the template
=====================  =====================================================================

The draw is recorded in ``demo_acquisition.json`` (``protocols``) with each scan's noise
truth (``cases/*/truth``), so a benchmark compares estimates with what was simulated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from mrisr.dataset.demo_acquisition import (
    ANATOMIES,
    HR_PROTOCOL,
    LR_PROTOCOLS,
    AcquisitionProtocol,
)
from mrisr.utilities.errors import MrisrError

PREFIX = "random:"
RATIO = (1.7, 3.2)
FOV_MM = (200, 240)
#: the stored grid may not come closer to the HR spacing than this ratio (the planner's
#: integer scale is at least 2; the headers' ratio then still reads as a downsampling)
MIN_STORED_RATIO = 1.55


@dataclass(frozen=True)
class DemoAcquisition:
    """The LR acquisition of a demo dataset and the anatomy its scans show."""

    protocol: AcquisitionProtocol
    anatomy: str = "axial"


def resolve(name: str) -> DemoAcquisition:
    """A fixed protocol by name, or ``random:SEED``'s draw; one-line error otherwise."""
    if name in LR_PROTOCOLS:
        return DemoAcquisition(LR_PROTOCOLS[name])
    seed = family_seed(name)
    if seed is None:
        raise MrisrError(
            f"unknown demo protocol '{name}'; choose one of {', '.join(LR_PROTOCOLS)} "
            "or random:SEED"
        )
    return draw(seed)


def family_seed(name: str) -> int | None:
    """The seed of ``random:SEED``, or None if ``name`` is not of that form."""
    m = re.fullmatch(r"random:(\d{1,9})", name)
    return int(m.group(1)) if m else None


def expand(spec: str) -> list[str]:
    """Protocol names of a comma list in which ``random:A-B`` stands for A..B."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        m = re.fullmatch(r"random:(\d+)-(\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise MrisrError(f"protocol range '{part}' is empty")
            out += [f"{PREFIX}{s}" for s in range(lo, hi + 1)]
        else:
            resolve(part)  # fail early on a bad name
            out.append(part)
    return out


def draw(seed: int) -> DemoAcquisition:
    """The acquisition of ``random:seed`` (deterministic; the ranges are the module's)."""
    rng = np.random.default_rng([seed, 0x5EED])
    fov = int(rng.integers(FOV_MM[0], FOV_MM[1] + 1))
    ratio = rng.uniform(*RATIO)
    matrix = max(32, int(round(fov / (ratio * HR_PROTOCOL.spacing))))
    spacing = fov / matrix
    phase_resolution = 1.0 if rng.random() < 0.5 else float(rng.uniform(0.7, 0.9))
    window = str(rng.choice(["none", "hamming", "tukey", "fermi"]))
    window_param, window_width = 0.0, 0.05
    if window == "tukey":
        window_param = float(rng.uniform(0.2, 0.6))
    elif window == "fermi":
        window_param, window_width = float(rng.uniform(0.75, 0.95)), float(rng.uniform(0.03, 0.08))
    partial_fourier = 1.0 if rng.random() < 0.5 else float(rng.uniform(0.6, 0.8))
    gamma, saturation = 1.0, 0.0
    if rng.random() < 0.5:
        gamma, saturation = float(rng.uniform(0.6, 1.6)), float(rng.uniform(0.0, 2.0))
    gfactor = 1.0 if rng.random() < 0.5 else float(rng.uniform(1.2, 2.0))
    background = "masked" if rng.random() < 0.3 else "noise"
    storage = 1.0
    if rng.random() < 0.3:
        finest = spacing / (MIN_STORED_RATIO * HR_PROTOCOL.spacing)
        if finest >= 1.5:
            storage = float(rng.uniform(1.5, min(2.0, finest)))
    protocol = AcquisitionProtocol(
        name="LR",
        spacing=spacing,
        matrix=matrix,
        window=window,
        window_param=window_param,
        window_width=window_width,
        noise=float(rng.uniform(0.02, 0.09)),
        intensity_base=float(rng.uniform(1.0, 3.0)),
        partial_fourier=partial_fourier,
        phase_resolution=phase_resolution,
        intensity_gamma=gamma,
        intensity_saturation=saturation,
        bias_strength=float(rng.uniform(0.05, 0.3)),
        gfactor_max=gfactor,
        background=background,
        storage_factor=storage,
        motion_scale=float(rng.uniform(0.5, 2.0)),
    )
    return DemoAcquisition(protocol, str(rng.choice(ANATOMIES)))


def describe(acq: DemoAcquisition) -> str:
    """One line for ``dataset.json``'s description."""
    p = acq.protocol
    parts = [
        f"{p.spacing:.3g} mm acquired"
        + (f", stored at {p.stored_spacing:.3g} mm" if p.storage_factor != 1 else ""),
        f"{p.window} filter",
    ]
    if p.phase_resolution < 1:
        parts.append(f"{p.phase_resolution:.0%} phase resolution")
    if p.partial_fourier < 1:
        parts.append("partial Fourier")
    if p.has_contrast_relation:
        parts.append("another contrast than the HR")
    if p.gfactor_max > 1:
        parts.append("g-factor noise")
    if p.background == "masked":
        parts.append("masked background")
    parts.append(f"{acq.anatomy} sections")
    return ", ".join(parts)
