"""DSGAN networks: the collapsed generator is exact, the discriminators are per unit."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mrisr.networks.linear_generator import (
    LinearGenerator,
    apply_kernels,
    compose_kernel,
    init_generator_weights,
    receptive_field,
)
from mrisr.networks.patch_discriminator import (
    D_N_MIDDLE,
    PatchDiscriminator,
    StackedPatchDiscriminator,
    sobel_composed_first_layer,
    sobel_features,
)


def _randomise(g: LinearGenerator, seed: int) -> None:
    """O(1)-gain random weights, so that the kernel is far from zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in g.layers:
            w = layer.weight
            w.copy_(torch.randn(w.shape, generator=gen) / math.sqrt(w[0].numel()))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_collapsed_generator_equals_layer_by_layer(scale: int) -> None:
    torch.manual_seed(scale)
    g = LinearGenerator(scale)
    _randomise(g, scale)
    x = torch.rand(2, 1, 64, 70)
    with torch.no_grad():
        ref = g(x)
        fast = g.forward_collapsed(x)
    assert fast.shape == ref.shape == (2, 1, g.output_size(64), g.output_size(70))
    assert _rel(fast, ref) < 1e-5
    # KernelGAN's definition: the kernel is the flipped response to a delta.
    g1 = LinearGenerator(1)
    g1.load_state_dict(g.state_dict())
    delta = torch.zeros(1, 1, 25, 25)
    delta[0, 0, 12, 12] = 1.0
    with torch.no_grad():
        response = g1(F.pad(delta, (12, 12, 12, 12)))[0, 0, 12:25, 12:25]
    assert _rel(g.kernel().detach(), response.flip(0, 1)) < 1e-5


def test_collapsed_generator_gradients_are_exact() -> None:
    g = LinearGenerator(2).double()
    _randomise(g, 7)
    x = torch.rand(1, 1, 64, 64, dtype=torch.float64)
    r = torch.rand(1, 1, 26, 26, dtype=torch.float64)
    (g(x) * r).sum().backward()
    ref = [layer.weight.grad.clone() for layer in g.layers]
    g.zero_grad()
    (g.forward_collapsed(x) * r).sum().backward()
    for a, b in zip(ref, (layer.weight.grad for layer in g.layers)):
        assert _rel(b, a) < 1e-9


def test_batched_kernels_match_single_generators() -> None:
    gens = []
    for i in range(5):
        g = LinearGenerator(2)
        _randomise(g, 100 + i)
        gens.append(g)
    stacked = [torch.stack([g.layers[j].weight for g in gens]) for j in range(6)]
    k = compose_kernel(stacked)
    assert k.shape == (5, receptive_field(), receptive_field()) == (5, 13, 13)
    x = torch.rand(5, 1, 64, 64)
    out = apply_kernels(x, k, 2)
    for i, g in enumerate(gens):
        assert _rel(k[i].detach(), g.kernel().detach()) < 1e-5
        with torch.no_grad():
            assert _rel(out[i : i + 1], g(x[i : i + 1])) < 1e-5


def test_apply_kernels_gradient() -> None:
    x = torch.rand(2, 1, 17, 19, dtype=torch.float64)
    k = torch.rand(2, 5, 5, dtype=torch.float64, requires_grad=True)
    for s in (1, 2, 3):
        assert torch.autograd.gradcheck(lambda kk, s=s: apply_kernels(x, kk, s), (k,))


def test_init_depends_only_on_unit_rng() -> None:
    a = init_generator_weights([torch.Generator().manual_seed(s) for s in (1, 2, 3)])
    b = init_generator_weights([torch.Generator().manual_seed(s) for s in (3, 1)])
    for wa, wb in zip(a, b):
        assert torch.equal(wa[0], wb[1]) and torch.equal(wa[2], wb[0])
    # Xavier-normal with gain 0.1 (KernelGAN): std of the 5x5 layer.
    std = 0.1 * math.sqrt(2.0 / (64 * 25 + 64 * 25))
    assert abs(float(a[1].std()) / std - 1) < 0.02


def test_sobel_features_and_folding() -> None:
    ramp = torch.arange(12.0).repeat(10, 1)[None, None]  # intensity = column index
    f = sobel_features(ramp)
    assert f.shape == (1, 3, 10, 12)
    assert torch.allclose(f[0, 1, :, 1:-1], torch.full((10, 10), 8.0))  # Sobel-x of slope 1
    assert torch.allclose(f[0, 2], torch.zeros(10, 12))
    # The Sobel maps folded into a 9x9 first layer on the edge-padded crop: same map.
    w = torch.randn(4, 3, 7, 7, dtype=torch.float64)
    x = torch.rand(2, 1, 26, 26, dtype=torch.float64)
    ref = F.conv2d(sobel_features(x), w)
    w9 = sobel_composed_first_layer(w).view(4, 1, 9, 9)
    fast = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), w9)
    assert _rel(fast, ref) < 1e-12


def test_discriminator_output_size_and_receptive_field() -> None:
    d = PatchDiscriminator()
    d.eval()  # running BN statistics: outputs depend on their window only
    x = torch.rand(1, 3, 26, 26)
    with torch.no_grad():
        out = d(x)
        assert out.shape == (1, 1, 20, 20) and d.output_size(26) == 20
        x2 = x.clone()
        x2[0, :, 10, 13] += 1.0
        changed = (d(x2) - out).abs()[0, 0] > 0
    rows, cols = torch.nonzero(changed, as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (4, 10, 7, 13)  # 7x7 window
    assert changed.sum() == 49


def _bn_train_sn_eval(m: PatchDiscriminator) -> None:
    m.eval()
    for b in m.modules():
        if isinstance(b, torch.nn.BatchNorm2d):
            b.train()


def test_stacked_discriminator_matches_reference_modules() -> None:
    torch.manual_seed(0)
    mods = [PatchDiscriminator() for _ in range(3)]
    for m in mods:
        with torch.no_grad():
            for p in m.parameters():  # move away from the initialisation
                p.add_(0.05 * torch.randn_like(p))
        m.score(torch.rand(1, 1, 26, 26))
    stacked = StackedPatchDiscriminator([torch.Generator().manual_seed(i) for i in range(3)])
    stacked.load_units(mods)
    lr = torch.rand(3, 2, 26, 26)
    # One crop per unit, one power iteration in both (training mode).
    out = stacked(lr[:, :1])
    with torch.no_grad():
        ref = torch.stack([m.score(lr[i, :1][None])[0] for i, m in enumerate(mods)])
    assert out.shape == (3, 1, 20, 20)
    assert (out - ref).abs().max() < 1e-5
    # Two crops per unit: each crop is its own BatchNorm batch (no power iteration here).
    for m in mods:
        _bn_train_sn_eval(m)
    stacked.load_units(mods)
    out = stacked(lr, stacked.normalized_weights(0))
    with torch.no_grad():
        ref = torch.stack(
            [
                torch.cat([m.score(lr[i, b][None, None])[0] for b in range(2)])
                for i, m in enumerate(mods)
            ]
        )
    assert (out - ref).abs().max() < 1e-5


def test_spectral_norm_is_per_unit() -> None:
    stacked = StackedPatchDiscriminator([torch.Generator().manual_seed(i) for i in range(3)])
    with torch.no_grad():  # units with very different scales: a shared sigma would fail
        stacked.w_first[1] *= 50.0
        stacked.w_mid[2] *= 0.01
        stacked.w_last[0] *= 7.0
    sig = stacked.singular_values(power_iterations=200)
    n, c, k = 3, stacked.channels, stacked.kernel_size
    w1 = stacked.w_first.detach().reshape(n, c, 3 * k * k) / sig["first"].view(n, 1, 1)
    wm = stacked.w_mid.detach() / sig["mid"].view(n, D_N_MIDDLE, 1, 1)
    wl = stacked.w_last.detach() / sig["last"].view(n, 1, 1)
    for w in (w1, wm.reshape(n * D_N_MIDDLE, c, c), wl):
        top = torch.linalg.matrix_norm(w, ord=2)
        assert torch.allclose(top, torch.ones_like(top), atol=1e-3)


def test_shift_windows_match_unfold_and_fold_and_are_adjoint(monkeypatch) -> None:
    import mrisr.networks.windows as windows
    from mrisr.networks.windows import shift_sum, shifted_windows

    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 11, 9, generator=g, dtype=torch.float64, requires_grad=True)
    s = 4
    win = shifted_windows(x, s)  # (3, s, s, 2, 8, 6)
    assert win.shape == (3, s, s, 2, 8, 6)
    ref = F.unfold(x.reshape(6, 1, 11, 9), s).view(3, 2, s, s, 8, 6).permute(0, 2, 3, 1, 4, 5)
    assert torch.equal(win, ref)
    b = torch.randn(win.shape, generator=g, dtype=torch.float64, requires_grad=True)
    summed = shift_sum(b)
    folded = F.fold(b.permute(0, 3, 1, 2, 4, 5).reshape(6, s * s, 48), (11, 9), s).view(3, 2, 11, 9)
    assert torch.allclose(summed, folded)
    # small blocks are summed by F.fold, large ones by the loop of shifted adds: the same
    monkeypatch.setattr(windows, "FOLD_MAX_BLOCK", 0)
    assert torch.allclose(shift_sum(b), summed)
    # adjoint: <W x, b> == <x, W* b>, and each is the other's gradient
    assert torch.allclose((win * b).sum(), (x * summed).sum())
    assert torch.autograd.gradcheck(lambda t: shifted_windows(t, s), (x,))
    assert torch.autograd.gradcheck(shift_sum, (b,))


def test_window_correlation_equals_windows_times_kernels_and_its_gradients() -> None:
    from mrisr.networks.windows import shifted_windows, window_correlation

    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 2, 10, 9, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 5, 16, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, 5, 1, generator=g, dtype=torch.float64, requires_grad=True)
    ref = torch.baddbmm(bias, w, shifted_windows(x, 4).reshape(3, 16, 2 * 7 * 6))
    assert torch.allclose(window_correlation(x, w, bias, 4), ref)
    assert torch.autograd.gradcheck(lambda *t: window_correlation(*t, 4), (x, w, bias))
    # the input gradient alone (the G step's frozen discriminator)
    assert torch.autograd.gradcheck(
        lambda t: window_correlation(t, w.detach(), bias.detach(), 4), (x,)
    )
    # the input gradient of the later crops only (the real crop is data)
    (full,) = torch.autograd.grad(window_correlation(x, w, bias, 4).sum(), x)
    (part,) = torch.autograd.grad(window_correlation(x, w, bias, 4, grad_from=1).sum(), x)
    assert torch.allclose(part[:, 1], full[:, 1]) and not part[:, 0].any()


def _d_step_grads(stacked, lr, chunk=None):
    for prm in stacked.parameters():
        prm.grad = None
    x = lr.clone().requires_grad_()
    w = stacked.normalized_weights(0)

    def loss_of(scores, units):
        # a per-pixel loss like the adversarial one (a spatial mean of the scores would
        # be nearly invariant to the BatchNorm'd layers, its gradient pure cancellation)
        bce = torch.nn.functional.softplus(scores).mean(dim=(1, 2, 3))
        per_unit = bce * torch.arange(1.0, 6.0)[units]
        return per_unit.sum(), per_unit.detach()

    if chunk is None:
        per_unit = loss_of(stacked(x, w), slice(None))[0]
        per_unit.backward()
        g_x = x.grad
    else:
        _, g_x = stacked.backward_in_chunks(x, w, loss_of, chunk)
    return [prm.grad.clone() for prm in stacked.parameters()], g_x


def test_discriminator_in_chunks_equals_one_pass() -> None:
    """Chunks of units give the gradients (parameters and input) of one pass."""
    stacked = StackedPatchDiscriminator([torch.Generator().manual_seed(i) for i in range(5)])
    lr = torch.rand(5, 2, 26, 26, generator=torch.Generator().manual_seed(9))
    ref_w, ref_x = _d_step_grads(stacked, lr)
    for chunk in (1, 2, 5):
        got_w, got_x = _d_step_grads(stacked, lr, chunk)
        for a, b in zip(got_w, ref_w):
            assert _rel(a, b) < 1e-5
        assert _rel(got_x, ref_x) < 1e-5


def test_discriminator_in_bf16_is_close_to_fp32() -> None:
    """The middle blocks in bf16: scores and gradients within bf16 rounding of fp32."""
    if not torch.backends.mkldnn.is_available():
        pytest.skip("no oneDNN")
    stacked = StackedPatchDiscriminator([torch.Generator().manual_seed(i) for i in range(5)])
    lr = torch.rand(5, 2, 26, 26, generator=torch.Generator().manual_seed(9))
    ref = stacked(lr, stacked.normalized_weights(0)).detach()
    ref_w, ref_x = _d_step_grads(stacked, lr, 5)
    stacked.compute_dtype = torch.bfloat16
    out = stacked(lr, stacked.normalized_weights(0)).detach()
    assert out.dtype == torch.float32 and 0 < (out - ref).abs().max() < 0.02
    got_w, got_x = _d_step_grads(stacked, lr, 5)

    def cos(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))

    grads = {n: (a, b) for (n, _), a, b in zip(stacked.named_parameters(), got_w, ref_w)}
    # after the last BatchNorm: bf16 rounding only
    for name in ("bn_weight", "bn_bias", "w_last", "b_last"):
        assert _rel(*grads[name]) < 0.05, name
    # before a BatchNorm the gradient is a difference that BN's mean subtraction leaves of
    # larger terms: the rounding grows, the direction stays (the first bias's exact
    # gradient is zero, a BatchNorm follows it)
    for name in ("w_first", "w_mid"):
        assert cos(*grads[name]) > 0.95, name
    assert grads["b_first"][1].abs().max() < 1e-6
    assert cos(got_x, ref_x) > 0.95
