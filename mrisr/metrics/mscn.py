"""MSCN statistics (paper eq. 4-6, Fig. 5): how realistic does a synthetic LR look?

Mean-subtracted contrast-normalised (MSCN) coefficients, the natural-scene statistics
behind BRISQUE (Mittal et al. 2012), are used by the paper to compare synthetic LR sets
(DSGAN, Gaussian, zero-fill, ...) with real LR scans::

    I_hat = (I - mu) / (sigma + C)
    mu    = sum_kl w_kl I_kl                      (local mean)
    sigma = sqrt(sum_kl w_kl (I_kl - mu)^2)       (local standard deviation)

Conventions chosen here
-----------------------
* **Window**: 7x7 (k, l = -3..3) Gaussian, normalised to sum 1, with **sigma = 1 pixel**:
  the paper's text ("a 2D Gaussian weighting function with a standard variance of
  1 pixel"). BRISQUE's reference code uses sigma 7/6 (:data:`BRISQUE_SIGMA`); pass
  ``sigma=BRISQUE_SIGMA`` to reproduce BRISQUE features. Borders replicate the edge pixel
  (MATLAB ``imfilter(..., 'replicate')`` as in BRISQUE's MATLAB code).
* **C**: the paper's ``C = 1`` is for 8-bit images (0..255). mrisr images are normalised to
  about [0, 1], so ``C`` is given *in 8-bit units* and rescaled by the image range:
  ``C_eff = C * data_range / 255`` (``1/255`` for the default ``data_range = 1``). Using
  ``C = 1`` on [0, 1] data would swamp the local contrast (sigma of a few 0.01) and squash
  every coefficient towards 0.
* sigma is computed as ``sqrt(max(E_w[I^2] - mu^2, 0))`` (equal to eq. 6 for weights that
  sum to one) in float64 to avoid cancellation in flat regions.
* **Diagonal products**: ``D1(m, n) = I_hat(m, n) I_hat(m+1, n+1)`` (the paper's
  ``I_hat(m, n) I_hat(m-1, n-1)``, shifted by one) and ``D2(m, n) = I_hat(m, n+1) I_hat(m+1, n)``
  (the other diagonal), as in BRISQUE's ``D1``/``D2`` pair products.
* **Histograms**: pooled over all (masked) pixels of a set, fixed bins, values outside
  the range clipped into the edge bins (so every histogram sums to one and distances stay
  defined), normalised to probability mass (``density`` = mass / bin width for plotting).
* **Distance**: Jensen-Shannon divergence (base 2, in [0, 1]) between the normalised
  histograms: symmetric, finite with empty bins (unlike KL), bounded, and 0 only for
  identical histograms. Reported for the MSCN coefficients, for the diagonal products
  (both diagonals pooled, and each separately), and ``combined`` = mean of the MSCN and
  pooled-product values. The L1 distance (total variation x 2) is reported alongside.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from mrisr.utilities.file_io import atomic_path

logger = logging.getLogger(__name__)

#: The paper's window sigma (pixels) and BRISQUE's.
WINDOW_SIGMA = 1.0  # the paper's MSCN window (eq. 4-6: 7x7 Gaussian, sigma 1)
BRISQUE_SIGMA = 7.0 / 6.0
#: Window half-size: k, l = -3..3.
WINDOW_RADIUS = 3
#: Default histogram ranges (MSCN coefficients, diagonal products) and bin count.
MSCN_RANGE = (-3.0, 3.0)
PRODUCT_RANGE = (-2.0, 2.0)
BINS = 121


def gaussian_window_1d(sigma: float = WINDOW_SIGMA, radius: int = WINDOW_RADIUS) -> np.ndarray:
    """1D Gaussian weights on ``-radius..radius``, sum 1 (the 2D window is their outer product)."""
    if not sigma > 0:
        raise ValueError(f"MSCN window sigma must be > 0, got {sigma}")
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()


def mscn(
    image: np.ndarray,
    sigma: float = WINDOW_SIGMA,
    C: float = 1.0,
    data_range: float = 1.0,
) -> np.ndarray:
    """MSCN coefficients of a 2D image or of each slice of a ``(z, H, W)`` stack.

    ``C`` is in 8-bit units (paper: 1) and is applied as ``C * data_range / 255``;
    ``data_range`` is the intensity range of ``image`` (1 for mrisr's normalised data,
    255 for 8-bit images). Returns float32 of the input's shape.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim not in (2, 3):
        raise ValueError(
            f"mscn expects an (H, W) image or a (z, H, W) stack, got shape {img.shape}"
        )
    if not np.isfinite(img).all():
        raise ValueError("mscn: image contains NaN or infinite values")
    if not (C >= 0 and data_range > 0):
        raise ValueError(
            f"mscn needs C >= 0 and data_range > 0, got C={C}, data_range={data_range}"
        )
    g = gaussian_window_1d(sigma)

    def blur(a: np.ndarray) -> np.ndarray:
        a = ndimage.correlate1d(a, g, axis=-1, mode="nearest")
        return ndimage.correlate1d(a, g, axis=-2, mode="nearest")

    mu = blur(img)
    var = np.maximum(blur(img * img) - mu * mu, 0.0)
    c_eff = C * data_range / 255.0
    out = (img - mu) / (np.sqrt(var) + c_eff)
    if c_eff == 0:
        out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    return out.astype(np.float32)


def diagonal_products(coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Products of diagonal neighbours of MSCN coefficients ``(..., H, W)``.

    Returns ``(D1, D2)``, each ``(..., H-1, W-1)``: ``D1[m, n] = I[m, n] I[m+1, n+1]``
    (main diagonal), ``D2[m, n] = I[m, n+1] I[m+1, n]`` (anti-diagonal).
    """
    c = np.asarray(coeffs)
    if c.ndim < 2 or c.shape[-1] < 2 or c.shape[-2] < 2:
        raise ValueError(f"diagonal products need images of at least 2x2, got shape {c.shape}")
    d1 = c[..., :-1, :-1] * c[..., 1:, 1:]
    d2 = c[..., :-1, 1:] * c[..., 1:, :-1]
    return d1, d2


def _as_list(images, what: str) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        if images.ndim == 2:
            return [images]
        if images.ndim == 3:
            return [images]  # a stack is processed in one vectorised call
        raise ValueError(
            f"{what}: expected 2D images or a (z, H, W) stack, got shape {images.shape}"
        )
    out = [np.asarray(a) for a in images]
    if not out:
        raise ValueError(f"{what}: no images")
    for a in out:
        if a.ndim not in (2, 3):
            raise ValueError(f"{what}: expected 2D images or (z, H, W) stacks, got shape {a.shape}")
    return out


def mscn_histograms(
    images: np.ndarray | Sequence[np.ndarray],
    bins: int = BINS,
    range: tuple[float, float] = MSCN_RANGE,  # mirrors numpy.histogram
    mask: np.ndarray | Sequence[np.ndarray] | None = None,
    product_range: tuple[float, float] = PRODUCT_RANGE,
    sigma: float = WINDOW_SIGMA,
    C: float = 1.0,
    data_range: float = 1.0,
) -> dict:
    """Pooled, normalised histograms of the MSCN coefficients and diagonal products of a set.

    ``images``: a list of 2D images (any sizes) and/or ``(z, H, W)`` stacks, or one array.
    ``mask``: same structure, boolean; only masked pixels are counted (a product counts
    when both of its pixels are masked); MSCN is computed on the whole image (the mask does
    not change the local statistics). Values beyond the ranges go to the edge bins.

    Returns a JSON-able dict: ``mscn_edges``, ``mscn`` (probability per bin),
    ``product_edges``, ``products`` (both diagonals pooled), ``d1``, ``d2``, ``count``,
    moments (``mscn_mean``, ``mscn_variance``, ``d1_mean``, ``d2_mean``) and the settings.
    """
    imgs = _as_list(images, "mscn_histograms")
    masks = [None] * len(imgs) if mask is None else _as_list(mask, "mscn_histograms mask")
    if len(masks) != len(imgs):
        raise ValueError(f"{len(masks)} masks for {len(imgs)} images")
    _check_bins(bins, (range, product_range))
    e_m = np.linspace(range[0], range[1], bins + 1)
    e_p = np.linspace(product_range[0], product_range[1], bins + 1)
    h_m, h_1, h_2 = np.zeros(bins), np.zeros(bins), np.zeros(bins)
    s = {"n": 0, "m1": 0.0, "m2": 0.0, "d1": 0.0, "d2": 0.0, "np": 0}
    for img, m in zip(imgs, masks):
        c = mscn(img, sigma=sigma, C=C, data_range=data_range)
        mc, mp1, mp2 = _masked(c, *diagonal_products(c), m)
        h_m += _hist(mc, e_m)
        h_1 += _hist(mp1, e_p)
        h_2 += _hist(mp2, e_p)
        _add_moments(s, mc, mp1, mp2)
    if s["n"] == 0:
        raise ValueError("mscn_histograms: no pixels (empty masks?)")
    mean = s["m1"] / s["n"]
    n_p = max(s["np"], 1)
    return {
        "mscn_edges": e_m.tolist(),
        "mscn": (h_m / h_m.sum()).tolist(),
        "product_edges": e_p.tolist(),
        "products": ((h_1 + h_2) / max((h_1 + h_2).sum(), 1.0)).tolist(),
        "d1": (h_1 / max(h_1.sum(), 1.0)).tolist(),
        "d2": (h_2 / max(h_2.sum(), 1.0)).tolist(),
        "count": int(s["n"]),
        "mscn_mean": mean,
        "mscn_variance": s["m2"] / s["n"] - mean**2,
        "d1_mean": s["d1"] / n_p,
        "d2_mean": s["d2"] / n_p,
        "settings": {
            "sigma": sigma,
            "C": C,
            "data_range": data_range,
            "window": 2 * WINDOW_RADIUS + 1,
        },
    }


def _check_bins(bins: int, ranges) -> None:
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    for r in ranges:
        if not (len(r) == 2 and r[0] < r[1]):
            raise ValueError(f"histogram range must be (low, high) with low < high, got {r}")


def _add_moments(s: dict, mc: np.ndarray, mp1: np.ndarray, mp2: np.ndarray) -> None:
    """Add the counts and sums of one image to the running ``s``."""
    s["n"] += mc.size
    s["m1"] += float(mc.astype(np.float64).sum())
    s["m2"] += float((mc.astype(np.float64) ** 2).sum())
    s["d1"] += float(mp1.astype(np.float64).sum())
    s["d2"] += float(mp2.astype(np.float64).sum())
    s["np"] += mp1.size


def _hist(v: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin; values beyond the edges go to the edge bins."""
    v = np.clip(v, edges[0], edges[-1])
    return np.histogram(v, bins=edges)[0].astype(np.float64)


def _masked(c: np.ndarray, d1: np.ndarray, d2: np.ndarray, m) -> tuple[np.ndarray, ...]:
    """The MSCN coefficients and diagonal products counted under the mask ``m`` (a product
    counts when both of its pixels are masked; None: all)."""
    if m is None:
        return c.ravel(), d1.ravel(), d2.ravel()
    m = np.asarray(m, dtype=bool)
    if m.shape != c.shape:
        raise ValueError(f"mask of shape {m.shape} for an image of shape {c.shape}")
    return c[m], d1[m[..., :-1, :-1] & m[..., 1:, 1:]], d2[m[..., :-1, 1:] & m[..., 1:, :-1]]


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of two histograms (normalised here)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"histograms of different sizes: {p.shape} vs {q.shape}")
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return max(0.0, 0.5 * kl(p) + 0.5 * kl(q))


def _is_hist(x) -> bool:
    return isinstance(x, Mapping) and "mscn" in x and "products" in x


def mscn_distance(set_a, set_b, **hist_kwargs) -> dict:
    """Distance between the MSCN statistics of two image sets.

    ``set_a``/``set_b``: image sets as accepted by :func:`mscn_histograms` or histograms it
    returned (which must share their bins). ``hist_kwargs`` go to :func:`mscn_histograms`
    (the same for both sets; a ``mask`` is not accepted here, pass histograms instead).
    Returns ``{"mscn", "products", "d1", "d2", "combined"}`` Jensen-Shannon divergences
    (base 2, in [0, 1]; ``combined`` = mean of ``mscn`` and ``products``) and
    ``{"mscn_l1", "products_l1"}``.
    """
    if "mask" in hist_kwargs:
        raise ValueError("mscn_distance: compute masked histograms with mscn_histograms first")
    ha = set_a if _is_hist(set_a) else mscn_histograms(set_a, **hist_kwargs)
    hb = set_b if _is_hist(set_b) else mscn_histograms(set_b, **hist_kwargs)
    for key in ("mscn_edges", "product_edges"):
        if not np.allclose(ha[key], hb[key]):
            raise ValueError("mscn_distance: the two histograms have different bins")
    out = {k: jensen_shannon(ha[k], hb[k]) for k in ("mscn", "products", "d1", "d2")}
    out["combined"] = 0.5 * (out["mscn"] + out["products"])
    for k in ("mscn", "products"):
        out[f"{k}_l1"] = float(np.abs(np.asarray(ha[k]) - np.asarray(hb[k])).sum())
    out["metric"] = "jensen_shannon_base2"
    return out


def save_mscn_figure(
    named_sets: Mapping[str, dict | np.ndarray | Sequence[np.ndarray]],
    path: str | os.PathLike,
    title: str | None = None,
    reference: str | None = None,
    **hist_kwargs,
) -> dict[str, dict]:
    """Fig. 5-like PNG: MSCN and diagonal-product distributions of several named sets.

    ``named_sets``: name -> histograms from :func:`mscn_histograms` or an image set (then
    computed with ``hist_kwargs``), e.g. ``{"real LR": ..., "DSGAN": ..., "Gaussian": ...,
    "zero-fill": ..., "bicubic": ...}``. With ``reference`` (a name, e.g. ``"real LR"``)
    the legend shows each set's combined Jensen-Shannon distance to it. Written atomically
    (Agg backend). Returns the histograms used, by name.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not named_sets:
        raise ValueError("save_mscn_figure: no sets to plot")
    hists = {
        n: (v if _is_hist(v) else mscn_histograms(v, **hist_kwargs)) for n, v in named_sets.items()
    }
    if reference is not None and reference not in hists:
        raise ValueError(f"reference '{reference}' is not one of {', '.join(hists)}")
    styles = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1))]
    fig = Figure(figsize=(10, 4), dpi=120)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)]
    panels = (
        ("mscn", "mscn_edges", "MSCN coefficient"),
        ("products", "product_edges", "diagonal products"),
    )
    for i, (name, h) in enumerate(hists.items()):
        label = str(name)
        if reference is not None and name != reference:
            label += f" (JS {mscn_distance(h, hists[reference])['combined']:.3f})"
        for ax, (key, ekey, _) in zip(axes, panels):
            edges = np.asarray(h[ekey])
            centres = 0.5 * (edges[1:] + edges[:-1])
            dens = np.asarray(h[key]) / np.diff(edges)
            lw = 2.0 if name == reference else 1.3
            ax.plot(centres, dens, linestyle=styles[i % len(styles)], lw=lw, label=label)
    for ax, (_, _, xlabel) in zip(axes, panels):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("density")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    logger.info("wrote MSCN histograms of %d sets to %s", len(hists), path)
    return hists
