"""The linear generator's layer structure and receptive field (no torch: the kernel size
it fixes is read by planning and the kernel module)."""

from __future__ import annotations

from collections.abc import Sequence

#: Kernel sizes of the generator's layers (KernelGAN's ``G_structure``).
G_STRUCTURE: tuple[int, ...] = (7, 5, 3, 1, 1, 1)


def receptive_field(structure: Sequence[int] = G_STRUCTURE) -> int:
    """Size of the kernel the generator collapses to (13 for KernelGAN's structure)."""
    return sum(structure) - len(structure) + 1


def valid_output_size(input_size: int, kernel_size: int, stride: int) -> int:
    """Output pixels of a "valid" strided correlation: ``(n - K) // s + 1``."""
    return (input_size - kernel_size) // stride + 1
