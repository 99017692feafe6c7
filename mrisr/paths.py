"""Root folders from environment variables, resolved lazily (only when used).

``mrisr_raw``          raw datasets (``DatasetNNN_Name/`` with dataset.json, imagesHR/, imagesLR/)
``mrisr_preprocessed`` fingerprints, plans and preprocessed cases
``mrisr_results``      trained models, kernels, validation results
"""

from __future__ import annotations

import os
from pathlib import Path

from mrisr.utilities.errors import MrisrError

_HELP = {
    "mrisr_raw": "the folder holding your raw datasets (DatasetNNN_Name/)",
    "mrisr_preprocessed": "a folder for fingerprints, plans and preprocessed data",
    "mrisr_results": "a folder for trained models and results",
}


def _resolved(var: str) -> Path | None:
    value = os.environ.get(var)
    return Path(value).expanduser().resolve() if value else None


def check_roots() -> None:
    """One-line MrisrError if two set roots are the same folder or one lies inside another
    (``--clean`` of the preprocessed data would otherwise delete raw scans), or if a root
    is a file."""
    roots = {v: _resolved(v) for v in _HELP}
    for var, p in roots.items():
        if p is not None and p.exists() and not p.is_dir():
            raise MrisrError(f"{var}={p} is a file, not a folder: point {var} to a folder")
    names = [v for v in _HELP if roots[v] is not None]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pa, pb = roots[a], roots[b]
            if pa == pb or pa in pb.parents or pb in pa.parents:
                how = "is the same folder as" if pa == pb else "is nested with"
                raise MrisrError(
                    f"{a}={pa} {how} {b}={pb}: the three roots must be separate folders "
                    "(none inside another), so that no command writes into or deletes raw data"
                )


def _root(var: str) -> Path:
    value = os.environ.get(var)
    if not value:
        raise MrisrError(
            f"environment variable {var} is not set: export {var}=/path/to/{var} ({_HELP[var]})"
        )
    check_roots()
    return Path(value)


def inside(root: Path, path: Path, what: str = "path") -> Path:
    """``path`` resolved; one-line MrisrError unless it lies inside ``root``."""
    r, p = Path(root).resolve(), Path(path).resolve()
    if p != r and r not in p.parents:
        raise MrisrError(f"{what} {path} resolves to {p}, outside {r}; refusing to touch it")
    return p


def raw_root() -> Path:
    return _root("mrisr_raw")


def preprocessed_root() -> Path:
    return _root("mrisr_preprocessed")


def results_root() -> Path:
    return _root("mrisr_results")
