"""The ``--device`` check every command runs before any work."""

from __future__ import annotations

from mrisr.utilities.errors import MrisrError

DEVICES = ("cpu", "cuda", "mps")


def check_device(device: str) -> str:
    """``device`` if it is known and usable here; else a one-line MrisrError with the fix."""
    if device not in DEVICES:
        raise MrisrError(f"unknown device '{device}'; valid devices: {', '.join(DEVICES)}")
    if device == "cpu":
        return device
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise MrisrError("--device cuda: no CUDA device is visible here; use --device cpu")
    if device == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise MrisrError("--device mps: no Apple GPU (MPS) is available here; use --device cpu")
    return device


def cpu_bf16_supported() -> bool:
    """Whether oneDNN runs bf16 convolutions natively on this CPU."""
    import torch  # deferred, as in check_device: the CLI's --help does not load torch

    try:
        return bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    except (AttributeError, RuntimeError):
        return False
