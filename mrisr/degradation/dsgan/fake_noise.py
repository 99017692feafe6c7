"""The real LR's noise on the DSGAN's generated crops (``"fake_noise": "measured"``).

KernelGAN's discriminator compares the real LR with ``G(HR)`` plus a faint white noise
(``d_input_noise_sd``, 1/255). A real LR scan carries Rician noise several times stronger
than that, spatially correlated by the scanner's raw-data filter and the resampling. Fed
with a denoised LR, the discriminator sees NLM's flat regions and kept edges; fed with the
raw LR and noise-free fakes, noise is the easiest cue and the generator answers it with a
sharper kernel. Here the generated crop is what the scanner would have produced:
``|G(HR) + sigma (n1 + i n2)|`` with ``sigma`` and the colour the SR training adds (the
dataset's level on the working grid, :meth:`PreprocessedDataset.lr_noise_level`: the
registered pairs' residual, else the background), and D judges it against the *raw* real
LR, so the two differ only in the PSF the generator controls. The noise is drawn afresh
every iteration from the unit's own noise stream (deterministic per seed); the magnitude
is differentiable, so the G step backpropagates through it.
"""

from __future__ import annotations

import numpy as np
import torch

from mrisr.imageio.noise_estimates import colouring_filter


class FakeNoise:
    """Coloured complex Gaussian noise per unit, and the Rician magnitude it makes."""

    def __init__(self, sigmas: list[float], rhos: list, crop: int, device: torch.device):
        self.crop = crop
        self.sigma = torch.tensor(sigmas, dtype=torch.float32, device=device)[:, None, None, None]
        flat = np.ones((crop, crop // 2 + 1), dtype=np.float32)
        filters = []
        for rho in rhos:
            f = colouring_filter(np.asarray(rho), (crop, crop)) if rho is not None else None
            filters.append(flat if f is None else f)
        self.filters = torch.from_numpy(np.stack(filters)[:, None]).to(device)  # (N,1,h,w/2+1)

    def block(self, iterations: int, rngs: list[np.random.Generator]) -> torch.Tensor:
        """``(iterations, N, 4, crop, crop)``: two complex noise fields per unit and
        iteration (the G step's and the D step's), coloured and scaled."""
        shape = (iterations, 4, self.crop, self.crop)
        white = np.stack([r.standard_normal(shape, dtype=np.float32) for r in rngs], axis=1)
        spec = torch.fft.rfft2(torch.from_numpy(white).to(self.filters.device))
        return torch.fft.irfft2(spec * self.filters, s=(self.crop, self.crop)) * self.sigma

    @staticmethod
    def rician(x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``|x + n_re + i n_im|`` for ``x (N, C, h, w)`` and ``noise (N, 2C, h, w)``."""
        c = x.shape[1]
        re, im = x + noise[:, :c], noise[:, c:]
        return torch.sqrt(re * re + im * im + 1e-12)
