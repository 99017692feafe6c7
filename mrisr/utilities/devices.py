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


def _onednn_native(dtype: str) -> bool:
    import torch  # deferred, as in check_device: the CLI's --help does not load torch

    try:
        check = getattr(torch.ops.mkldnn, f"_is_mkldnn_{dtype}_supported")
        return bool(torch.backends.mkldnn.is_available() and check())
    except (AttributeError, RuntimeError):
        return False


def cpu_bf16_supported() -> bool:
    """Whether oneDNN runs bf16 convolutions natively on this CPU (AVX512-BF16 / AMX)."""
    return _onednn_native("bf16")


def cpu_fp16_supported() -> bool:
    """Whether oneDNN runs fp16 convolutions natively on this CPU (AVX512-FP16 / AMX-FP16)."""
    return _onednn_native("fp16")


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``; ``platform`` elsewhere)."""
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            return next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model
            )
    except OSError:
        return model
