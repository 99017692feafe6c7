"""Sliding windows and their adjoint, in the layouts the batched DSGAN needs.

``shifted_windows(x, S)`` copies the ``S x S`` shifted views of ``x`` (im2col with the
shift as the leading axes); ``shift_sum(b)`` adds shifted blocks back together (col2im).
Each is the other's adjoint and serves as its backward. For large blocks the shift-add
of whole contiguous planes is faster than ``F.fold`` on a CPU; for small ones (the
generator's 7x7 composition, a chunk of the discriminator's first layer) ``F.fold``'s one
kernel beats ``S*S`` small adds (``benchmarks/bench_dsgan.py`` times both):
:data:`FOLD_MAX_BLOCK` separates the two. ``window_correlation`` is the
discriminator's first layer on these windows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _windows(x: torch.Tensor, s: int) -> torch.Tensor:
    m, c, h, w = x.shape
    x = x.contiguous()
    s0, s1, s2, s3 = x.stride()
    win = x.as_strided((m, s, s, c, h - s + 1, w - s + 1), (s0, s2, s3, s1, s2, s3))
    return win.contiguous()


#: elements of one shifted block up to which ``F.fold`` beats the loop of shifted adds (one
#: kernel instead of ``s*s`` small ones; larger blocks: the adds stream whole planes)
FOLD_MAX_BLOCK = 30_000


def _shift_sum(b: torch.Tensor) -> torch.Tensor:
    m, s, _, c, ah, aw = b.shape
    if m * c * ah * aw <= FOLD_MAX_BLOCK:
        cols = b.permute(0, 3, 4, 5, 1, 2).reshape(m, c * ah * aw, s * s)
        return F.fold(cols, (ah + s - 1, aw + s - 1), (ah, aw))
    out = b.new_zeros(m, c, ah + s - 1, aw + s - 1)
    for i in range(s):
        for j in range(s):
            out[:, :, i : i + ah, j : j + aw] += b[:, i, j]
    return out


class _ShiftedWindows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, s: int) -> torch.Tensor:
        ctx.s = s
        return _windows(x, s)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _shift_sum(grad), None


class _ShiftSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, b: torch.Tensor) -> torch.Tensor:
        ctx.s = b.shape[1]
        return _shift_sum(b)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _windows(grad, ctx.s)


def shifted_windows(x: torch.Tensor, s: int) -> torch.Tensor:
    """``(M, C, H, W)`` -> ``(M, s, s, C, H-s+1, W-s+1)``: ``out[m, i, j] = x[m, :, i:, j:]``
    cropped to the window size. Differentiable (backward: :func:`shift_sum`)."""
    return _ShiftedWindows.apply(x, s)


def shift_sum(b: torch.Tensor) -> torch.Tensor:
    """``(M, s, s, C, A, B)`` -> ``(M, C, A+s-1, B+s-1)``: the sum over ``(i, j)`` of
    ``b[m, i, j]`` placed at offset ``(i, j)``. Differentiable (backward:
    :func:`shifted_windows`)."""
    return _ShiftSum.apply(b)


class _WindowCorrelation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, s: int, grad_from: int):
        n, b, h, wd = x.shape
        cols = _windows(x, s).view(n, s * s, b * (h - s + 1) * (wd - s + 1))
        ctx.s, ctx.shape, ctx.grad_from = s, x.shape, grad_from
        ctx.save_for_backward(cols if ctx.needs_input_grad[1] else None, w)
        return torch.baddbmm(bias, w, cols)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        cols, w = ctx.saved_tensors
        s, (n, b, h, wd) = ctx.s, ctx.shape
        c = w.shape[1]
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            # the adjoint of the correlation is one grouped transposed convolution, in at
            # least float32: oneDNN's grouped kernel is fastest there
            k = ctx.grad_from
            g = grad.view(n, c, b, h - s + 1, wd - s + 1)[:, :, k:].permute(2, 0, 1, 3, 4)
            ft = torch.promote_types(grad.dtype, torch.float32)
            g = g.reshape(b - k, n * c, h - s + 1, wd - s + 1).to(ft)
            gk = F.conv_transpose2d(g, w.to(ft).reshape(n * c, 1, s, s), groups=n)
            gx = gk.permute(1, 0, 2, 3).to(grad.dtype)
            if k:  # the crops before grad_from are data: zero gradient
                gx = torch.cat([gx.new_zeros(n, k, h, wd), gx], dim=1)
        if ctx.needs_input_grad[1]:
            gw = torch.bmm(grad, cols.transpose(1, 2))
        if ctx.needs_input_grad[2]:
            gb = grad.sum(dim=2, keepdim=True)
        return gx, gw, gb, None, None


def window_correlation(
    x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, s: int, grad_from: int = 0
) -> torch.Tensor:
    """Each unit's ``s x s`` correlation kernels over its crops: ``x`` ``(N, B, H, W)``,
    ``w`` ``(N, C, s*s)``, ``bias`` ``(N, C, 1)`` -> ``(N, C, B*P)``, ``P = (H-s+1)(W-s+1)``
    (crop-major), i.e. ``baddbmm(bias, w, shifted_windows(x, s))``. Differentiable; the
    input gradient is a grouped transposed convolution rather than a shift-sum of the
    windows' gradient (2x faster on 2 cores for 24 units of 64 channels), computed for the
    crops ``grad_from:`` only (zero for the others: crops that are data)."""
    return _WindowCorrelation.apply(x, w, bias, s, grad_from)
