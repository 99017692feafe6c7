"""Patch discriminator of the downsampling GAN (KernelGAN's D with the paper's edge maps).

Input: three channels ``[LR, Sobel-x(LR), Sobel-y(LR)]`` (paper eq. 1), computed by
:func:`sobel_features`. Architecture (KernelGAN ``Discriminator``, ``D_n_layers = 7``):

* spectral-normalised 7x7 conv (3 -> C), bias, **no** activation;
* five blocks [spectral-normalised 1x1 conv (C -> C) + BatchNorm + ReLU];
* spectral-normalised 1x1 conv (C -> 1) + sigmoid.

All convolutions are unpadded and have a bias (as in KernelGAN), so the receptive field is
7x7 and a 26x26 crop gives a 20x20 map. KernelGAN initialises conv weights Xavier-normal
(gain 0.1), biases 0, BatchNorm weights N(1, 0.02) and BatchNorm biases 0; BatchNorm is
always in training mode with a batch of one crop.

Two implementations:

* :class:`PatchDiscriminator`, a plain ``nn.Module`` with torch's spectral norm (one unit;
  the reference).
* :class:`StackedPatchDiscriminator`, N independent discriminators evaluated together with
  batched matrix products, a per-unit batched power iteration and per-unit BatchNorm. It
  is what the batched DSGAN trainer uses.

Sobel convention: the LR crop is padded by one pixel by edge replication and correlated
with ``SOBEL_X`` / ``SOBEL_Y`` (paper eq. 1, no flip), so the edge maps have the size of
the crop; the padding is applied identically to real and generated crops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mrisr.networks.windows import window_correlation

#: Sobel operators of paper eq. 1 (used as correlation kernels).
SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
SOBEL_Y = torch.tensor([[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]])
#: KernelGAN's initialisation gain for conv weights.
D_INIT_GAIN = 0.1
#: Number of spectral-normalised 1x1 blocks between the first and the last layer.
D_N_MIDDLE = 5
BN_EPS = 1e-5
SN_EPS = 1e-12


def sobel_features(lr: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` LR images -> ``(B, 3, H, W)`` = [LR, Sobel-x, Sobel-y].

    One convolution with both operators on the edge-replicated image.
    """
    if lr.dim() != 4 or lr.shape[1] != 1:
        raise ValueError(f"expected (B, 1, H, W), got {tuple(lr.shape)}")
    weight = torch.stack([SOBEL_X, SOBEL_Y])[:, None].to(lr)
    edges = F.conv2d(F.pad(lr, (1, 1, 1, 1), mode="replicate"), weight)
    return torch.cat([lr, edges], dim=1)


def _init_d_module(m: nn.Module) -> None:
    """KernelGAN's ``weights_init_D``."""
    if isinstance(m, nn.Conv2d):
        nn.init.xavier_normal_(m.weight, D_INIT_GAIN)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class PatchDiscriminator(nn.Module):
    """One patch discriminator (reference implementation, torch's spectral norm).

    ``forward`` takes the 3-channel input (see :func:`sobel_features`); :meth:`score` takes
    the LR image itself.
    """

    def __init__(self, channels: int = 64, kernel_size: int = 7) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        first = nn.Conv2d(3, channels, kernel_size, bias=True)
        middle = [nn.Conv2d(channels, channels, 1, bias=True) for _ in range(D_N_MIDDLE)]
        last = nn.Conv2d(channels, 1, 1, bias=True)
        bns = [nn.BatchNorm2d(channels) for _ in range(D_N_MIDDLE)]
        for m in [first, last, *middle, *bns]:
            _init_d_module(m)
        self.first_layer = sn(first)
        blocks: list[nn.Module] = []
        for conv, bn in zip(middle, bns):
            blocks += [sn(conv), bn, nn.ReLU(inplace=True)]
        self.feature_block = nn.Sequential(*blocks)
        self.final_layer = nn.Sequential(sn(last), nn.Sigmoid())
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layer(self.feature_block(self.first_layer(x)))

    def score(self, lr: torch.Tensor) -> torch.Tensor:
        """Probability map of an LR batch ``(B, 1, H, W)`` -> ``(B, 1, H-6, W-6)``."""
        return self.forward(sobel_features(lr))

    def output_size(self, input_size: int) -> int:
        return input_size - self.kernel_size + 1


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(SN_EPS)


def sobel_composed_first_layer(w: torch.Tensor) -> torch.Tensor:
    """Fold the Sobel edge maps into the first layer.

    ``w``: ``(M, 3, k, k)`` first-layer weights acting on [LR, Sobel-x, Sobel-y]. Returns
    ``(M, (k+2)**2)``: the equivalent single-channel ``(k+2) x (k+2)`` correlation kernel
    acting on the edge-replicated (1-pixel padded) LR crop. Exact (linear composition).
    """
    m, _, k, _ = w.shape
    sob = torch.stack([SOBEL_X, SOBEL_Y]).flip(-1, -2)[None].to(w)  # (1, 2, 3, 3)
    edges = F.conv2d(F.pad(w[:, 1:], (2, 2, 2, 2)), sob)  # full convolution -> (M, 1, k+2, k+2)
    return (F.pad(w[:, :1], (1, 1, 1, 1)) + edges).reshape(m, (k + 2) ** 2)


class StackedPatchDiscriminator(nn.Module):
    """N independent patch discriminators evaluated as one batched model.

    Parameters are stacked with a leading unit dimension; unit ``n`` is initialised from
    ``generators[n]`` only. Arithmetic per unit is that of :class:`PatchDiscriminator`:

    * spectral norm per unit and layer, by a batched power iteration with per-unit ``u``
      and ``v`` vectors (the buffers ``u*``/``v*``); torch's ``spectral_norm`` on a stacked
      weight would normalise all units by one shared singular value, which is wrong;
    * the Sobel maps are folded into a 9x9 first layer on the edge-replicated crop
      (exactly the same linear map, 45% fewer multiply-adds);
    * 1x1 convolutions are batched matrix products;
    * BatchNorm (training mode, batch of one crop) is per unit, per crop and per channel:
      one ``group_norm`` with ``N*C*B`` groups over a ``(1, N*C*B, P)`` view (same
      statistics as ``BatchNorm2d`` in training mode: mean and biased variance over the
      crop's pixels, then the per-channel affine);
    * the bias of the five middle 1x1 convs is omitted: BatchNorm's mean subtraction
      cancels it exactly (its gradient is zero);
    * the power-iteration vectors start random and get ``warmup_power_iterations`` (15)
      iterations at construction, as torch's ``parametrizations.spectral_norm`` does;
    * ``compute_dtype`` (float32 by default; ``torch.bfloat16`` where a probe finds it
      faster, see :mod:`mrisr.degradation.dsgan.discriminator_precision`) is the arithmetic of the
      layers: the crops, products, BatchNorm and ReLU, forward and backward (products
      accumulate in float32). The parameters, the spectral norm, the last layer's bias,
      the sigmoid and the losses stay float32.
    """

    def __init__(
        self,
        generators: Sequence[torch.Generator],
        channels: int = 64,
        kernel_size: int = 7,
        warmup_power_iterations: int = 15,
    ) -> None:
        super().__init__()
        n, c, k = len(generators), channels, kernel_size
        self.n_units, self.channels, self.kernel_size = n, c, k
        self.compute_dtype = torch.float32

        def xavier(shape: tuple[int, ...]) -> torch.Tensor:
            rec = math.prod(shape[2:])
            std = D_INIT_GAIN * math.sqrt(2.0 / (shape[1] * rec + shape[0] * rec))
            return torch.stack(
                [torch.empty(shape).normal_(0.0, std, generator=g) for g in generators]
            )

        def unit_normal(dim: int) -> torch.Tensor:
            return torch.stack([_normalize(torch.randn(dim, generator=g)) for g in generators])

        self.w_first = nn.Parameter(xavier((c, 3, k, k)))  # (N, C, 3, k, k)
        self.b_first = nn.Parameter(torch.zeros(n, c, 1))
        mids = [xavier((c, c, 1, 1)).reshape(n, c, c) for _ in range(D_N_MIDDLE)]
        self.w_mid = nn.Parameter(torch.stack(mids, dim=1))  # (N, 5, C, C)
        gammas = [
            torch.stack([torch.empty(c).normal_(1.0, 0.02, generator=g) for g in generators])
            for _ in range(D_N_MIDDLE)
        ]
        self.bn_weight = nn.Parameter(torch.stack(gammas, dim=1))  # (N, 5, C)
        self.bn_bias = nn.Parameter(torch.zeros(n, D_N_MIDDLE, c))
        self.w_last = nn.Parameter(xavier((1, c, 1, 1)).reshape(n, 1, c))
        self.b_last = nn.Parameter(torch.zeros(n, 1, 1))
        # Power-iteration vectors: first (N, C)/(N, 3k^2), middle (N*5, C)/(N*5, C), last.
        self.register_buffer("u_first", unit_normal(c))
        self.register_buffer("v_first", unit_normal(3 * k * k))
        self.register_buffer("u_mid", torch.stack([unit_normal(c) for _ in range(D_N_MIDDLE)], 1))
        self.register_buffer("v_mid", torch.stack([unit_normal(c) for _ in range(D_N_MIDDLE)], 1))
        # Linear map (3*k*k) -> (k+2)**2 folding the Sobel maps into the first layer.
        basis = torch.eye(3 * k * k).view(3 * k * k, 3, k, k)
        self.register_buffer("sobel_fold", sobel_composed_first_layer(basis))
        self.register_buffer("u_last", unit_normal(1))
        self.register_buffer("v_last", unit_normal(c))
        if warmup_power_iterations:
            self.normalized_weights(power_iterations=warmup_power_iterations)

    # ------------------------------------------------------------------ spectral norm
    @staticmethod
    def _sigma(w: torch.Tensor, u: torch.Tensor, v: torch.Tensor, iterations: int) -> torch.Tensor:
        """Batched power iteration on ``w`` (M, out, in); updates ``u``/``v`` in place."""
        if iterations > 0:
            with torch.no_grad():
                wd = w.detach()
                uu, vv = u, v
                for _ in range(iterations):  # same order as torch's parametrization
                    uu = _normalize(torch.bmm(wd, vv[:, :, None])[:, :, 0])
                    vv = _normalize(torch.bmm(uu[:, None], wd)[:, 0])
                u.copy_(uu)
                v.copy_(vv)
        # Clones: the buffers are updated in place by later power iterations, which must
        # not invalidate this graph (as in torch's spectral_norm).
        u, v = u.clone(), v.clone()
        return torch.bmm(u[:, None], torch.bmm(w, v[:, :, None]))[:, 0, 0]  # (M,)

    def singular_values(self, power_iterations: int = 0) -> dict[str, torch.Tensor]:
        """Current spectral-norm estimates ``sigma`` per unit and layer."""
        with torch.no_grad():
            return self._all_sigmas(power_iterations)

    def _all_sigmas(self, it: int) -> dict[str, torch.Tensor]:
        n, c, k = self.n_units, self.channels, self.kernel_size
        s1 = self._sigma(self.w_first.reshape(n, c, 3 * k * k), self.u_first, self.v_first, it)
        u_mid, v_mid = self.u_mid.view(n * D_N_MIDDLE, c), self.v_mid.view(n * D_N_MIDDLE, c)
        sm = self._sigma(self.w_mid.reshape(n * D_N_MIDDLE, c, c), u_mid, v_mid, it)
        sl = self._sigma(self.w_last, self.u_last, self.v_last, it)
        return {"first": s1, "mid": sm.view(n, D_N_MIDDLE), "last": sl}

    def normalized_weights(self, power_iterations: int = 1) -> dict[str, torch.Tensor]:
        """Everything :meth:`forward` needs: spectral-normalised weights, biases, BN affine.

        Runs ``power_iterations`` batched power-iteration steps first (torch's
        ``spectral_norm`` runs one per forward pass in training mode). Differentiable
        w.r.t. the parameters unless called under ``torch.no_grad()``, which gives a
        frozen discriminator (no parameter gradients are computed through it). The first
        layer is returned Sobel-folded: ``(N, C, (k+2)**2)``.
        """
        n, c, k = self.n_units, self.channels, self.kernel_size
        sig = self._all_sigmas(power_iterations)
        w1 = self.w_first.view(n * c, 3 * k * k) @ self.sobel_fold
        w1 = w1.view(n, c, (k + 2) ** 2) / sig["first"].view(n, 1, 1)
        out = {
            "first": w1,
            "mid": self.w_mid / sig["mid"].view(n, D_N_MIDDLE, 1, 1),
            "last": self.w_last / sig["last"].view(n, 1, 1),
            "b_first": self.b_first,
            "b_last": self.b_last,
            "bn_weight": self.bn_weight,
            "bn_bias": self.bn_bias,
        }
        if not torch.is_grad_enabled():
            out = {key: v.detach() for key, v in out.items()}
        return out

    # ------------------------------------------------------------------ forward
    def forward(
        self, lr: torch.Tensor, weights: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Probability maps of N units x B crops.

        ``lr``: ``(N, B, h, w)`` LR crops (unit ``n`` scores ``lr[n]`` with its own
        discriminator; each of the B crops is its own BatchNorm batch, as B separate
        forward passes of :class:`PatchDiscriminator` would be). ``weights``: from
        :meth:`normalized_weights` (computed with one power iteration if None). Returns
        ``(N, B, h-k+1, w-k+1)``.
        """
        if weights is None:
            weights = self.normalized_weights(1)
        if lr.shape[0] != self.n_units:
            raise ValueError(f"got crops for {lr.shape[0]} units, the model has {self.n_units}")
        return self._forward(lr, weights)

    def backward_in_chunks(
        self,
        lr: torch.Tensor,
        weights: dict[str, torch.Tensor],
        loss_of,
        chunk: int,
        grad_from: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Score ``lr`` and backpropagate ``loss_of``, ``chunk`` units at a time.

        The same arithmetic as ``loss_of(self(lr, weights), slice(None)).backward()``, but
        each chunk's activations are used by its backward pass while they are still in the
        processor's cache (one pass over all units streams them through memory several
        times per layer: ``bench_dsgan.py``). Units never mix, so chunks are independent.
        ``loss_of(scores, units)`` returns ``(scalar to backpropagate, per-unit statistics)``
        for the units ``units`` (a slice). Gradients reach the tensors of ``weights`` that
        require them (accumulated into the parameters through ``weights``' own graph, in
        one backward call at the end) and ``lr`` when it requires one: its gradient is
        returned (not accumulated), with the concatenated statistics; only for the crops
        ``grad_from:`` (zero for the others).
        """
        n = lr.shape[0]
        need_w = [key for key, v in weights.items() if v.requires_grad]
        leaves = {key: v.detach() for key, v in weights.items()}
        grads = {key: torch.empty_like(weights[key]) for key in need_w}
        x_all = lr.detach()
        g_lr = torch.empty_like(x_all) if lr.requires_grad else None
        stats = []
        for a in range(0, n, chunk):
            units = slice(a, min(n, a + chunk))
            sub = {key: v[units] for key, v in leaves.items()}
            for key in need_w:
                sub[key].requires_grad_()
            x = x_all[units].requires_grad_(g_lr is not None)
            loss, st = loss_of(self._forward(x, sub, grad_from), units)
            stats.append(st)
            loss.backward()
            for key in need_w:
                grads[key][units] = sub[key].grad
            if g_lr is not None:
                g_lr[units] = x.grad
        if need_w:
            torch.autograd.backward([weights[k] for k in need_w], [grads[k] for k in need_w])
        return torch.cat(stats), g_lr

    def _forward(
        self, lr: torch.Tensor, weights: dict[str, torch.Tensor], grad_from: int = 0
    ) -> torch.Tensor:
        n, b, h, w = lr.shape
        k2 = self.kernel_size + 2
        oh, ow = h - self.kernel_size + 1, w - self.kernel_size + 1
        p = oh * ow
        c, dt = self.channels, self.compute_dtype
        padded = F.pad(lr.reshape(n * b, 1, h, w), (1, 1, 1, 1), mode="replicate").to(dt)
        # (N, C, B*P); in reduced precision every weight is cast once per forward
        x = window_correlation(
            padded.view(n, b, h + 2, w + 2),
            weights["first"].to(dt),
            weights["b_first"].to(dt),
            k2,
            grad_from,
        )
        # unbind (one backward node) rather than indexing per layer (five full-size
        # zero-filled gradients)
        mids = weights["mid"].to(dt).unbind(1)
        gammas = weights["bn_weight"].to(dt).unbind(1)
        betas = weights["bn_bias"].to(dt).unbind(1)
        for i in range(D_N_MIDDLE):
            x = torch.bmm(mids[i], x)
            gamma = gammas[i][:, :, None].expand(n, c, b).reshape(-1)
            beta = betas[i][:, :, None].expand(n, c, b).reshape(-1)
            # One group per (unit, channel, crop) row: mean and biased variance over the
            # crop's pixels, then the per-channel affine -- exactly BatchNorm2d in training
            # mode with a batch of one crop (group_norm's CPU kernel is ~3x faster than
            # batch_norm's for this shape).
            x = F.group_norm(x.view(1, n * c * b, p), n * c * b, gamma, beta, eps=BN_EPS)
            x = torch.relu_(x).view(n, c, b * p)
        scores = torch.bmm(weights["last"].to(dt), x).float() + weights["b_last"]
        out = torch.sigmoid(scores)
        return out.view(n, b, oh, ow)

    @torch.no_grad()
    def load_units(self, modules: Sequence[PatchDiscriminator]) -> None:
        """Copy the weights (and power-iteration vectors) of N reference discriminators."""
        if len(modules) != self.n_units:
            raise ValueError(f"{len(modules)} modules for {self.n_units} units")
        for i, m in enumerate(modules):
            par = m.first_layer.parametrizations.weight
            self.w_first[i] = par.original
            self.u_first[i], self.v_first[i] = par[0]._u, par[0]._v
            self.b_first[i, :, 0] = m.first_layer.bias
            for j in range(D_N_MIDDLE):
                conv, bn = m.feature_block[3 * j], m.feature_block[3 * j + 1]
                cp = conv.parametrizations.weight
                self.w_mid[i, j] = cp.original[:, :, 0, 0]
                self.u_mid[i, j], self.v_mid[i, j] = cp[0]._u, cp[0]._v
                self.bn_weight[i, j], self.bn_bias[i, j] = bn.weight, bn.bias
            lp = m.final_layer[0].parametrizations.weight
            self.w_last[i] = lp.original[:, :, 0, 0]
            self.u_last[i], self.v_last[i] = lp[0]._u, lp[0]._v
            self.b_last[i] = m.final_layer[0].bias.view(1, 1)
