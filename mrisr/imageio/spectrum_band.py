"""The acquired resolution of a scan, read from its own spectrum (no HR partner needed).

Scanners often store an image on a finer grid than they acquired it (zero-filled
interpolation: "0.9 mm" in the header for a 1.8 mm acquisition), and reduced phase
resolution leaves the outer phase-encoding lines unacquired: the headers' spacing is then
not the acquired resolution. What was never acquired is exactly zero in k-space, noise
included, so the power spectrum falls off a cliff at the acquired band's edge and stays at
a floor out to the stored grid's Nyquist frequency. An image acquired on its stored grid
has no cliff: its noise is white up to Nyquist (a raw-data filter tapers it smoothly; a
steep one, such as a Fermi filter, reads as a cliff at its edge, which is what the scan
holds).

The spectrum is taken inside the tissue only (the foreground eroded and smoothly
tapered): there the magnitude image is linear in the complex one, while the background's
Rayleigh magnitude spreads power beyond any band. Per in-plane axis,
:func:`band_of_profile` looks for the edge with the largest drop from the band just inside
to the most that anything beyond reaches; a drop of :data:`CLIFF_DB` or more is a cliff,
and the band ends where the power falls :data:`EDGE_DB` below the inside's (half its
amplitude: a cut smoothed by the tissue window, and a Fermi filter at its radius). Where
the scan's noise sigma is known (the background's Rayleigh fit), the floor must also lie
:data:`FLOOR_DB` below that noise's white level: beyond the frequency where a smooth
object's spectrum sinks into the noise, the spectrum drops too, but onto the noise. The
band is a fraction of the stored grid's Nyquist: acquired spacing = stored spacing / band.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: a drop of at least this much (dB) from just inside an edge to everything beyond is an
#: unacquired band (a smooth spectrum, or a raw-data filter like Hamming, drops a few dB)
CLIFF_DB = 10.0
#: width of the band just inside a candidate edge, and the transition allowed beyond it
#: (fractions of Nyquist)
INSIDE_WIDTH, GAP = 0.08, 0.05
#: candidate edges (fractions of the stored grid's Nyquist); beyond the last, a cliff
#: would leave too few frequencies to tell: the stored band
EDGES = np.round(np.arange(0.30, 0.9301, 0.01), 2)
#: beyond an unacquired edge the power lies at least this far (dB) below the white level
#: of the scan's noise (it reads -6 to -37 dB on the demo family; onto the noise: 0 to +1)
FLOOR_DB = 3.0
#: the edge: where the power has fallen this far (dB) below the band just inside it
EDGE_DB = 6.0
#: an edge at or beyond this fraction of Nyquist is the stored band
FULL_BAND = 0.95
#: the tissue is eroded by this many pixels (away from the head's edge) and tapered by a
#: Gaussian of this sigma (pixels): a smooth window whose own spectrum is narrow
ERODE_PX, TAPER_PX = 3, 4.0
#: fewest pixels per in-plane axis, and fewest tissue pixels, for a spectrum worth reading
MIN_SIZE, MIN_TISSUE = 48, 2000


def tissue_taper(foreground: np.ndarray) -> np.ndarray:
    """Per slice: the foreground eroded by :data:`ERODE_PX` and smoothed (float weights)."""
    m = np.asarray(foreground, bool)
    struct = np.zeros((1, 3, 3), bool)
    struct[0] = True
    eroded = ndimage.binary_erosion(m, structure=struct, iterations=ERODE_PX)
    return ndimage.gaussian_filter(eroded.astype(np.float32), (0, TAPER_PX, TAPER_PX))


def tissue_power_profiles(
    volume: np.ndarray, foreground: np.ndarray, sigma: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Mean power of the tissue's in-plane spectrum per |frequency| along y and along x
    (indices 0..N/2), over the slices of ``volume`` (z, y, x), in units of the white level
    of noise of standard deviation ``sigma`` (white noise of that sigma reads 1)."""
    w = tissue_taper(foreground)
    power = np.abs(np.fft.rfft2(np.asarray(volume, np.float32) * w, axes=(-2, -1))) ** 2
    white = sigma**2 * float((w**2).sum(axis=(-2, -1)).mean())
    power = power.mean(axis=0) / max(white, 1e-30)
    ny = power.shape[0]
    fy = np.abs(np.fft.fftfreq(ny, 1.0 / ny)).round().astype(int)
    py = np.bincount(fy, weights=power.mean(axis=1)) / np.bincount(fy)
    return py, power.mean(axis=0)


def band_of_profile(profile: np.ndarray, noise_known: bool = False) -> tuple[float, float]:
    """(band, drop in dB) of one axis' power profile (indices 0..N/2): the candidate edge
    whose inside band (median) exceeds the most that any frequency beyond it reaches
    (3-bin median) by the largest margin; where that margin reaches :data:`CLIFF_DB`, the
    band ends at the last frequency within :data:`EDGE_DB` of the inside, else it is the
    stored band, 1.0. ``noise_known``: ``profile`` is in units of the
    scan's white noise level, and a floor not :data:`FLOOR_DB` below it is no cliff."""
    half = len(profile) - 1
    f = np.arange(len(profile)) / max(half, 1)
    db = 10.0 * np.log10(np.maximum(np.asarray(profile, np.float64), 1e-30))
    smooth = ndimage.median_filter(db, size=3, mode="nearest")
    best, drop = None, 0.0
    for e in EDGES:
        inside = db[(f >= e - INSIDE_WIDTH) & (f < e)]
        beyond = smooth[f >= e + GAP]
        if inside.size == 0 or beyond.size < 2:
            continue
        d = float(np.median(inside) - beyond.max())
        if d > drop:
            best, drop = (float(np.median(inside)), float(np.median(beyond))), d
    if best is None or drop < CLIFF_DB or (noise_known and best[1] > -FLOOR_DB):
        return 1.0, round(drop, 1)
    level = best[0] - EDGE_DB
    above = np.nonzero(smooth >= level)[0]
    edge = min(1.0, (above[-1] + 0.5) / half)
    return (1.0 if edge >= FULL_BAND else round(float(edge), 3)), round(drop, 1)


def spectrum_band(
    volume: np.ndarray, foreground: np.ndarray, noise_sigma: float | None = None
) -> dict | None:
    """``{"band": [y, x], "drop_db": [y, x]}``: the band of ``volume`` (z, y, x) per
    in-plane axis as fractions of the stored grid's Nyquist, and the cliff that decided
    it; ``noise_sigma``: the scan's per-channel noise (the floor check), if known. None
    for a scan or tissue too small to read."""
    v = np.asarray(volume)
    fg = np.asarray(foreground, bool)
    if v.ndim != 3 or min(v.shape[-2:]) < MIN_SIZE or fg.sum() < MIN_TISSUE:
        return None
    known = bool(noise_sigma and noise_sigma > 0)
    py, px = tissue_power_profiles(v, fg, noise_sigma if known else 1.0)
    (by, dy), (bx, dx) = band_of_profile(py, known), band_of_profile(px, known)
    return {"band": [by, bx], "drop_db": [dy, dx]}
