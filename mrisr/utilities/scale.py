"""The one check of an integer up-/down-sampling scale (networks, kernels, models)."""

from __future__ import annotations

from typing import Any


def check_scale(scale: Any, what: str = "scale") -> int:
    """Return ``scale`` as an int >= 1, or raise ValueError naming ``what``."""
    try:
        s = int(scale)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a positive integer, got {scale!r}") from None
    if s < 1 or s != scale:
        raise ValueError(f"{what} must be a positive integer, got {scale!r}")
    return s
