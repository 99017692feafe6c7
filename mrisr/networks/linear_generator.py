"""Deep linear generator of the downsampling GAN (KernelGAN's G) and its collapsed form.

The generator is six bias-free, activation-free, unpadded ("valid") convolutions
7x7 (1->C), 5x5, 3x3, 1x1, 1x1 (C->C) and 1x1 (C->1), the last with stride ``scale``.
Being linear with a 13x13 receptive field, it is *exactly* one 13x13 correlation kernel
``k`` followed by decimation::

    forward(x) == F.conv2d(x, k[None, None], stride=scale)

Kernel convention (used everywhere in mrisr): ``k`` is a **correlation** kernel (PyTorch's
``conv2d`` convention, no flip): output pixel ``m`` is ``sum_t k[t] * x[scale*m + t]``.
KernelGAN obtains the same ``k`` as the generator's response to a delta, flipped in both
axes (the response to a delta is the *convolution* kernel).

The deep parameterisation is kept as the trainable parameters (it is the implicit
regulariser of KernelGAN); only its evaluation is collapsed. :func:`compose_kernel`
composes the layers from the **output side**: the three 1x1 layers collapse into a
C-vector, which is then composed with the 3x3, the 5x5 and finally the 7x7 layer
(about 1.1 MMAC per kernel instead of about 20 MMAC for pushing a delta through the
network, as KernelGAN does). It works on stacked weights of N independent generators and
is differentiable, so the gradients w.r.t. the deep weights are the exact gradients of the
deep network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mrisr.networks.generator_structure import G_STRUCTURE, receptive_field, valid_output_size
from mrisr.networks.windows import shift_sum
from mrisr.utilities.scale import check_scale

#: Initialisation gain of KernelGAN (Xavier-normal).
G_INIT_GAIN = 0.1


def layer_shapes(channels: int = 64, structure: Sequence[int] = G_STRUCTURE) -> list[tuple]:
    """``(out, in, k, k)`` of each generator layer."""
    shapes = []
    for i, k in enumerate(structure):
        cin = 1 if i == 0 else channels
        cout = 1 if i == len(structure) - 1 else channels
        shapes.append((cout, cin, k, k))
    return shapes


def xavier_normal_std(shape: Sequence[int], gain: float = G_INIT_GAIN) -> float:
    """Standard deviation of ``nn.init.xavier_normal_`` for a conv weight of ``shape``."""
    receptive = math.prod(shape[2:])
    fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


def init_generator_weights(
    generators: Sequence[torch.Generator],
    channels: int = 64,
    structure: Sequence[int] = G_STRUCTURE,
    gain: float = G_INIT_GAIN,
) -> list[torch.Tensor]:
    """Stacked Xavier-normal weights of N generators, one RNG stream per generator.

    Returns one tensor per layer of shape ``(N, out, in, k, k)``; unit ``n`` depends only on
    ``generators[n]``, so a unit's initialisation is the same whatever batch it is in.
    """
    out = []
    for shape in layer_shapes(channels, structure):
        std = xavier_normal_std(shape, gain)
        w = torch.stack([torch.empty(shape).normal_(0.0, std, generator=g) for g in generators])
        out.append(w)
    return out


def _compose(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Compose a single-output effective filter ``a`` with the layer ``w`` below it.

    ``a``: ``(N, C, p, p)`` filter applied to layer ``w``'s output; ``w``: ``(N, C, D, q, q)``.
    Returns ``(N, D, p+q-1, p+q-1)`` with
    ``out[n, d, t] = sum_{c, u+v=t} a[n, c, u] * w[n, c, d, v]`` (a full convolution of
    correlation kernels), computed as one batched matmul and one shift-add of the blocks
    (:func:`~mrisr.networks.windows.shift_sum`, ~3x faster than ``F.fold`` here).
    """
    n, c, p, _ = a.shape
    d, q = w.shape[2], w.shape[3]
    if p == 1:  # 1x1 filter: a plain matrix product
        return torch.bmm(a.reshape(n, 1, c), w.reshape(n, c, d * q * q)).reshape(n, d, q, q)
    # blocks[n, u, (d, v)] = sum_c a[n, c, u] w[n, c, d, v]
    blocks = torch.bmm(a.reshape(n, c, p * p).transpose(1, 2), w.reshape(n, c, d * q * q))
    return shift_sum(blocks.view(n, p, p, d, q, q))


def compose_kernel(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """Collapse N stacked deep linear generators into N correlation kernels.

    ``weights[l]`` has shape ``(N, out_l, in_l, k_l, k_l)`` (layer ``l`` of every unit, in
    forward order, the last layer having a single output channel). Returns ``(N, K, K)``
    with ``K`` the receptive field, such that for every unit the layer-by-layer forward
    pass equals ``conv2d(x, kernel[n][None, None], stride=scale)``. Differentiable.
    """
    if len(weights) == 0:
        raise ValueError("compose_kernel needs at least one layer")
    a = weights[-1]  # (N, 1, C, k, k): the filter on the previous layer's output
    if a.shape[1] != 1:
        raise ValueError(f"the last layer must have one output channel, got {a.shape[1]}")
    a = a[:, 0]
    for w in reversed(weights[:-1]):
        a = _compose(a, w)
    if a.shape[1] != 1:
        raise ValueError(f"the first layer must have one input channel, got {a.shape[1]}")
    return a[:, 0]


class _ApplyKernels(torch.autograd.Function):
    """Grouped strided correlation with a fast kernel gradient (images are data).

    Forward: one grouped convolution. Backward w.r.t. the kernels:
    ``dk[n, t] = sum_m g[n, m] * x[n, s*m + t]``, i.e. the images correlated with the
    output gradient dilated by ``s`` -- again one grouped convolution (measured ~10x faster
    than im2col + bmm and ~40x faster than autograd's default weight gradient here).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernels: torch.Tensor, stride: int) -> torch.Tensor:
        n, _, h, w = x.shape
        out = F.conv2d(x.reshape(1, n, h, w), kernels[:, None], stride=stride, groups=n)
        ctx.save_for_backward(x)
        ctx.stride, ctx.ksize = stride, kernels.shape[-1]
        return out.reshape(n, 1, *out.shape[2:])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        s, k = ctx.stride, ctx.ksize
        n, _, oh, ow = grad.shape
        xs = x[:, 0, : k + s * (oh - 1), : k + s * (ow - 1)].reshape(1, n, k + s * (oh - 1), -1)
        dk = F.conv2d(xs, grad.contiguous(), dilation=s, groups=n)
        return None, dk.reshape(n, k, k), None


def apply_kernels(x: torch.Tensor, kernels: torch.Tensor, stride: int) -> torch.Tensor:
    """Apply N kernels to N single-channel images ("valid" correlation, then decimation).

    ``x``: ``(N, 1, H, W)`` (or ``(N, H, W)``), ``kernels``: ``(N, K, K)``; returns
    ``(N, 1, (H-K)//stride+1, (W-K)//stride+1)``. One grouped convolution; differentiable
    w.r.t. ``kernels`` (and w.r.t. ``x`` through autograd's generic path when ``x``
    requires a gradient).
    """
    if x.dim() == 3:
        x = x[:, None]
    n = x.shape[0]
    if kernels.shape[0] != n:
        raise ValueError(f"{kernels.shape[0]} kernels for {n} images")
    if x.requires_grad:
        out = F.conv2d(x.reshape(1, n, *x.shape[2:]), kernels[:, None], stride=stride, groups=n)
        return out.reshape(n, 1, *out.shape[2:])
    return _ApplyKernels.apply(x.contiguous(), kernels, int(stride))


class LinearGenerator(nn.Module):
    """KernelGAN's deep linear generator (one unit).

    Parameters
    ----------
    scale:
        Integer downsampling factor (stride of the last layer).
    channels:
        Width of the hidden layers (64 in KernelGAN and the paper).
    structure:
        Kernel sizes of the layers (``G_STRUCTURE``).
    """

    def __init__(
        self, scale: int, channels: int = 64, structure: Sequence[int] = G_STRUCTURE
    ) -> None:
        super().__init__()
        self.scale = check_scale(scale)
        self.structure = tuple(structure)
        self.kernel_size = receptive_field(self.structure)
        layers = []
        for i, (cout, cin, k, _) in enumerate(layer_shapes(channels, self.structure)):
            last = i == len(self.structure) - 1
            layers.append(nn.Conv2d(cin, cout, k, stride=self.scale if last else 1, bias=False))
        self.layers = nn.ModuleList(layers)
        for layer in self.layers:
            nn.init.xavier_normal_(layer.weight, G_INIT_GAIN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Layer-by-layer evaluation (the reference; training uses :meth:`kernel`)."""
        for layer in self.layers:
            x = layer(x)
        return x

    def kernel(self) -> torch.Tensor:
        """The exact ``(K, K)`` correlation kernel of the network (differentiable)."""
        return compose_kernel([layer.weight[None] for layer in self.layers])[0]

    def forward_collapsed(self, x: torch.Tensor) -> torch.Tensor:
        """Same result as :meth:`forward`, evaluated as one strided convolution."""
        return F.conv2d(x, self.kernel()[None, None], stride=self.scale)

    def output_size(self, input_size: int) -> int:
        """Spatial output size for an input of ``input_size`` pixels."""
        return valid_output_size(input_size, self.kernel_size, self.scale)
