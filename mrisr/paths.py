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


def _root(var: str) -> Path:
    value = os.environ.get(var)
    if not value:
        raise MrisrError(
            f"environment variable {var} is not set: export {var}=/path/to/{var} ({_HELP[var]})"
        )
    return Path(value)


def raw_root() -> Path:
    return _root("mrisr_raw")


def preprocessed_root() -> Path:
    return _root("mrisr_preprocessed")


def results_root() -> Path:
    return _root("mrisr_results")
