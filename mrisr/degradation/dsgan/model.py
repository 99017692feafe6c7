"""The DSGAN as a registered degradation model: training units per kernel mode, the
kernels they learn, and the synthetic LR made with them.

Kernel modes (planned): ``per_slice``: one GAN per slice of each pair, as in the paper;
``per_volume``: one per pair; ``per_dataset``: one for all the given cases. Each slice is
degraded with its own kernel; slices and cases without a kernel of their own (skipped or
implausible units, HR-only cases) use the mean kernel of the units trained. Units already
trained are reused (resumable); ``"share_units_with"`` reads the units of another
configuration (same GANs, another synthesis kernel).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from mrisr import paths
from mrisr.degradation.base import (
    DEGRADATIONS,
    Degradation,
    PlanningContext,
    SynthesisContext,
    seed_of,
)
from mrisr.degradation.dsgan.params import DEFAULT_UNITS_PER_BATCH
from mrisr.degradation.dsgan.planning import plan_dsgan_configurations
from mrisr.degradation.dsgan.unit_batches import train_dsgan
from mrisr.degradation.dsgan.units import DSGANUnit
from mrisr.degradation.kernel_analysis import (
    implausible_reason,
    kernel_statistics,
    save_kernel_grid_png,
    signed_kernel,
)
from mrisr.degradation.kernels import KERNEL_SIZE, degrade_with_kernel
from mrisr.degradation.width_calibration import (
    MAX_PAIRS,
    calibrate_widths,
    choose_pooling,
    stretch_kernel,
)
from mrisr.plans import Plans, content_hash
from mrisr.preprocessing import storage
from mrisr.preprocessing.dataset import PreprocessedDataset
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import load_json, save_json, save_npy

logger = logging.getLogger(__name__)

#: keys of a "dsgan" section that the stage reads (the rest are the GAN's parameters)
STAGE_KEYS = (
    "name",
    "kernel_mode",
    "synthesis_kernel",
    "fallback",
    "share_units_with",
    "seeds_per_unit",
    "width_calibration",
    "kernel_pooling",
)
KERNEL_MODES = ("per_slice", "per_volume", "per_dataset")


def units_dir(plans: Plans, config: str) -> Path:
    """Where the DSGAN units of ``config`` live: its own folder, or that of the
    configuration it shares them with (``"share_units_with"``: same GANs, other synthesis)."""
    deg = plans.configuration(config).degradation or {}
    owner = deg.get("share_units_with") or config
    return paths.degradation_folder(plans.dataset_name, plans.plans_name, owner) / "units"


def load_unit_summaries(plans: Plans, config: str) -> list[dict]:
    out = units_dir(plans, config)
    return [load_json(f) for f in sorted(out.glob("*.json"))]


def _units(ds: PreprocessedDataset, mode: str, cases: list[str], mid: str) -> dict[str, tuple]:
    """unit name -> (case or None, slice index or None, cases of the unit)."""
    pairs = [c for c in cases if ds.is_registered_pair(c)]
    units: dict[str, tuple] = {}
    if mode == "per_slice":
        for c in pairs:
            for z in range(ds.properties[c]["hr"]["shape_zyx"][0]):
                units[f"{c}__z{z:03d}"] = (c, z, [c])
    elif mode == "per_volume":
        for c in pairs:
            units[c] = (c, None, [c])
    elif mode == "per_dataset":
        units[f"dataset_{mid}"] = (None, None, list(cases))
    else:
        raise MrisrError(f"unknown kernel_mode '{mode}' in the plans")
    return units


def _padded_stack(arrs: list[np.ndarray]) -> np.ndarray:
    """Slices of scans of different sizes, zero-padded to a common in-plane size (zero
    weight: never sampled)."""
    h = max(a.shape[1] for a in arrs)
    w = max(a.shape[2] for a in arrs)
    out = np.zeros((sum(len(a) for a in arrs), h, w), dtype=np.float32)
    i = 0
    for a in arrs:
        out[i : i + len(a), : a.shape[1], : a.shape[2]] = a
        i += len(a)
    return out


def _measured_noise(ds: PreprocessedDataset, cases: list[str]) -> tuple[float, list | None]:
    """The LR noise of ``cases`` on the working grid, as the SR training adds it
    (:meth:`PreprocessedDataset.lr_noise_level`: the residual against the registered HR
    where the cases are pairs, the noise where the signal is; else the scans' background
    or in-tissue estimates) and its colour. ``(0, None)`` when nothing was measured.

    One level for every unit (the dataset's, all its LR scans: one protocol): a single
    pair's residual carries its own registration and model errors, and a scan's
    background misses a g-factor map's in-tissue noise (bench_noise.py)."""
    level = ds.lr_noise_level(cases)
    if level is None:
        return 0.0, None
    return float(level["sigma"]), level["rho"]


def _make_unit(
    ds: PreprocessedDataset, name: str, spec: tuple, noise: tuple[float, list | None] | None
) -> DSGANUnit:
    """The unit's slices; with a measured ``noise`` (sigma, rho) the raw real LR, else the
    (denoised) working LR and noise-free fakes."""
    case, z, members = spec
    sl = slice(z, z + 1) if z is not None else slice(None)
    hr_cases = [c for c in members if ds.properties[c]["has_hr"]]
    lr_cases = [c for c in members if ds.properties[c]["has_lr"]]
    if case is not None:
        hr_cases, lr_cases = [case], [case]

    def stack(cs: list[str], key: str) -> np.ndarray:
        return _padded_stack([np.asarray(ds.array(c, key)[sl]) for c in cs])

    noisy = noise is not None
    sigma, rho = noise if noisy else (0.0, None)
    return DSGANUnit(
        name=name,
        hr=stack(hr_cases, "hr"),
        lr=stack(lr_cases, "lr_raw" if noisy else "lr"),
        seed=seed_of(name),
        hr_weight=stack(hr_cases, "hr_weight"),
        lr_weight=stack(lr_cases, "lr_weight"),
        noise_sigma=sigma,
        noise_rho=rho,
    )


def _unit_summary(r, out: Path) -> dict:
    summary = {"unit": r.name, "status": r.status, "message": r.message, "losses": r.losses}
    if r.status == "ok":
        save_npy(out / f"{r.name}_kernel_raw.npy", r.kernel_raw.astype(np.float32))
        save_npy(out / f"{r.name}_kernel.npy", r.kernel.astype(np.float32))
        summary["raw"] = kernel_statistics(r.kernel_raw)
        summary["kernel"] = kernel_statistics(r.kernel)
    else:
        logger.warning("DSGAN unit %s: %s (%s)", r.name, r.status, r.message)
    return summary


def _flag_implausible(out: Path, post: dict, scale: int) -> dict[str, str]:
    """unit -> why its post-processed kernel is not a plausible PSF (multi-modal, mass on
    the border, a width outlier against the median of the units); noted in its summary."""
    sigmas = [np.mean(kernel_statistics(k)["sigma"]) for k in post.values() if k is not None]
    median = float(np.median(sigmas)) if len(sigmas) >= 3 else None
    flagged = {}
    for n, k in post.items():
        why = implausible_reason(k, scale, median) if k is not None else None
        if why:
            flagged[n] = why
            summary = load_json(out / f"{n}.json")
            if summary.get("implausible") != why:
                summary["implausible"] = why
                save_json(summary, out / f"{n}.json")
    return flagged


def _seed_members(units: dict, seeds: int) -> dict[str, list[str]]:
    """unit -> the GANs that estimate its kernel: the unit itself and ``seeds - 1`` more
    with other seeds (``<unit>__seed<j>``, the seed follows from the name)."""
    return {n: [n] + [f"{n}__seed{j}" for j in range(1, max(seeds, 1))] for n in units}


def _median_kernel(kernels: list) -> np.ndarray | None:
    """The element-wise median of a unit's usable kernels (one GAN's estimate varies with
    its seed), sum 1; None when none is usable."""
    good = [k for k in kernels if k is not None]
    if len(good) <= 1:
        return good[0] if good else None
    med = np.median(np.stack(good), axis=0)
    return med / med.sum()


def _sigma_hr(kernel: np.ndarray) -> list[float]:
    k = np.clip(kernel, 0, None)
    return kernel_statistics(k / k.sum())["sigma"]


@DEGRADATIONS.register
class DSGANDegradation(Degradation):
    """Blur kernels learned by DSGANs (KernelGAN with the paper's edge maps), then
    decimation. The GAN parameters are the section's keys beyond :data:`STAGE_KEYS`."""

    name = "dsgan"
    label = "DSGAN"
    plan_order = 10

    @classmethod
    def plan(cls, fingerprint, context: PlanningContext) -> dict[str, dict]:
        """``dsgan_edsr`` and ``dsgan_paper_edsr`` (:mod:`mrisr.degradation.dsgan.planning`)."""
        return plan_dsgan_configurations(fingerprint, context)

    @classmethod
    def plan_summary(cls, section: dict) -> tuple[str, str]:
        return "DSGAN", (
            f"kernel mode {section['kernel_mode']}, crops HR {section['hr_crop']} / "
            f"LR {section['lr_crop']}, {section['iterations']} iterations"
        )

    def __init__(self, params: dict, scale: int):
        super().__init__(params, scale)
        self.kernel_mode = self.params.get("kernel_mode", "per_slice")

    @property
    def learned_on_case_set(self) -> bool:
        return self.kernel_mode == "per_dataset"

    def degrade(self, hr: np.ndarray) -> np.ndarray:
        raise NotImplementedError("the DSGAN degrades through its trained units: synthesize()")

    def gan_params(self) -> dict:
        return {k: v for k, v in self.params.items() if k not in STAGE_KEYS}

    # ---- training
    def _train_units(
        self,
        ctx: SynthesisContext,
        todo: dict[str, tuple],
        out: Path,
        noise: tuple[float, list | None] | None,
    ) -> None:
        names = list(todo)
        step = DEFAULT_UNITS_PER_BATCH
        params, key = self.gan_params(), self.settings_key()
        for a in range(0, len(names), step):
            chunk = names[a : a + step]
            logger.info("DSGAN: training units %d-%d of %d", a + 1, a + len(chunk), len(names))
            units = [_make_unit(ctx.ds, n, todo[n], noise) for n in chunk]
            results = train_dsgan(
                units, self.scale, params, device=ctx.device, progress=ctx.progress
            )
            for r, u in zip(results, units):
                summary = _unit_summary(r, out)
                summary["settings"] = key
                summary["fake_noise_sigma"] = u.noise_sigma
                save_json(summary, out / f"{r.name}.json")  # last: marks it done

    def settings_key(self) -> str:
        """A hash of the GAN's parameters: a unit trained with others is trained again."""
        return content_hash(self.gan_params())

    def _fake_noise(self, ds: PreprocessedDataset) -> tuple[float, list | None] | None:
        """The noise on the generated crops (``"fake_noise": "measured"``), else None."""
        if self.params.get("fake_noise", "none") != "measured":
            return None
        return _measured_noise(ds, ds.with_lr())

    def _is_trained(self, summary_file: Path, noise_sigma: float) -> bool:
        """Trained with these GAN parameters and this noise level (a dataset preprocessed
        again may measure another)."""
        if not summary_file.is_file():
            return False
        summary = load_json(summary_file)
        return summary.get("settings") == self.settings_key() and math.isclose(
            summary.get("fake_noise_sigma", 0.0), noise_sigma, rel_tol=1e-6, abs_tol=1e-9
        )

    def _unit_kernels(self, out: Path, names: list[str]) -> tuple[dict, dict]:
        """unit -> synthesis kernel (None: no usable kernel), and unit -> why it was
        replaced. ``"synthesis_kernel": "signed"`` synthesises with the generator's own
        kernel (negative lobes kept), else with the post-processed one."""
        post = {
            n: np.load(out / f"{n}_kernel.npy") if (out / f"{n}_kernel.npy").is_file() else None
            for n in names
        }
        flagged = _flag_implausible(out, post, self.scale)
        kernels = {}
        for n, k in post.items():
            if k is None or n in flagged:
                kernels[n] = None
            elif self.params.get("synthesis_kernel") == "signed":
                try:
                    raw = np.load(out / f"{n}_kernel_raw.npy")
                    kernels[n] = signed_kernel(raw, self.scale, pad=(k.shape[0] - KERNEL_SIZE) // 2)
                except ValueError as e:  # a raw kernel that does not sum to a positive value
                    logger.warning(
                        "DSGAN unit %s: signed kernel unusable (%s): post-processed", n, e
                    )
                    kernels[n] = k
            else:
                kernels[n] = k
        return kernels, flagged

    def _trained_kernels(self, ctx: SynthesisContext) -> tuple[dict, dict, np.ndarray]:
        out = units_dir(ctx.plans, ctx.config)
        out.mkdir(parents=True, exist_ok=True)
        units = _units(ctx.ds, self.kernel_mode, list(ctx.cases), ctx.mid)
        members = _seed_members(units, int(self.params.get("seeds_per_unit", 1)))
        gans = {m: units[n] for n, ms in members.items() for m in ms}
        noise = self._fake_noise(ctx.ds)
        sigma = noise[0] if noise else 0.0
        todo = {m: s for m, s in gans.items() if not self._is_trained(out / f"{m}.json", sigma)}
        if len(todo) < len(gans):
            logger.info(
                "DSGAN: %d of %d units already trained: reused", len(gans) - len(todo), len(gans)
            )
        if todo:
            self._train_units(ctx, todo, out, noise)
        per_gan, flagged = self._unit_kernels(out, list(gans))
        for n, why in flagged.items():
            logger.warning(
                "DSGAN unit %s: implausible kernel (%s): replaced by the pooled kernel", n, why
            )
        kernels = {n: _median_kernel([per_gan[m] for m in ms]) for n, ms in members.items()}
        good = [k for k in kernels.values() if k is not None]
        if not good:
            raise MrisrError(
                f"DSGAN produced no usable kernel for configuration '{ctx.config}' "
                f"(see the unit summaries in {out})"
            )
        mean_kernel = np.mean(good, axis=0)
        mean_kernel /= mean_kernel.sum()
        replaced = {n: flagged.get(n, "no usable kernel") for n, k in kernels.items() if k is None}
        return kernels, replaced, mean_kernel

    # ---- synthesis
    def _case_kernels(self, ctx, c, n_slices, kernels, mean_kernel) -> np.ndarray:
        """The kernel(s) of case ``c``: one per slice (per_slice pairs), else one."""
        own = {"per_volume": c, "per_dataset": f"dataset_{ctx.mid}"}.get(self.kernel_mode)
        if self.kernel_mode == "per_slice" and ctx.ds.is_registered_pair(c):
            names = [f"{c}__z{z:03d}" for z in range(n_slices)]
            return np.stack([kernels[n] if kernels[n] is not None else mean_kernel for n in names])
        if own is not None and kernels.get(own) is not None:
            return kernels[own]
        return mean_kernel

    def _registered_pairs(self, ctx) -> tuple[dict, dict]:
        """HR, and (real LR, mask) on the synthetic LR's grid, of the training pairs the
        calibration scores (the first ``MAX_PAIRS``, sorted; no more are loaded)."""
        hr, real = {}, {}
        for c in sorted(c for c in ctx.cases if ctx.ds.is_registered_pair(c)):
            if len(real) == MAX_PAIRS:
                break
            a, lr = ctx.ds.load(c, "hr"), ctx.ds.load(c, "lr_raw")
            if lr.shape == (a.shape[0], a.shape[1] // self.scale, a.shape[2] // self.scale):
                hr[c], real[c] = a, (lr, ctx.ds.load(c, "lr_mask").astype(bool))
        return hr, real

    def _calibrated(self, ctx, kernels: dict, mean_kernel: np.ndarray) -> tuple:
        """The kernels calibrated on the registered training pairs
        (:mod:`~mrisr.degradation.width_calibration`): ``"width_calibration":
        "registered_pairs"`` stretches them per axis, ``"kernel_pooling": "fidelity"``
        gives every case the pooled kernel where that matches the real LR better. Returns
        (kernels, pooled kernel, what was decided)."""
        widths = self.params.get("width_calibration", "none") == "registered_pairs"
        pooling = self.params.get("kernel_pooling", "units") == "fidelity"
        hr, real = self._registered_pairs(ctx) if widths or pooling else ({}, {})
        if not real:
            return kernels, mean_kernel, {}

        def own(ks: dict, pooled: np.ndarray) -> dict:
            return {c: self._case_kernels(ctx, c, hr[c].shape[0], ks, pooled) for c in real}

        report = {}
        if widths:
            calib = calibrate_widths(hr, own(kernels, mean_kernel), real, self.scale)
            f = tuple(calib["factors_yx"])
            logger.info(
                "%s: kernel widths calibrated on %d registered pairs: y x%.3f, x x%.3f; "
                "SSIM to the real LR %.4f -> %.4f",
                *(ctx.config, calib["pairs"], *f, calib["ssim_before"], calib["ssim_after"]),
            )
            kernels = {n: None if k is None else stretch_kernel(k, f) for n, k in kernels.items()}
            mean_kernel = stretch_kernel(mean_kernel, f)
            report["width_calibration"] = calib
        if pooling:
            choice = choose_pooling(hr, own(kernels, mean_kernel), mean_kernel, real, self.scale)
            logger.info(
                "%s: %s (SSIM to the real LR: own kernels %.4f, pooled %.4f)",
                ctx.config,
                "every case uses the pooled kernel"
                if choice["pooled"]
                else "cases keep their own kernels",
                choice["ssim_units"],
                choice["ssim_pooled"],
            )
            pooled_file = ctx.dest("kernel").parent / "kernel_pooled.npy"  # one per fold
            pooled_file.unlink(missing_ok=True)
            if choice["pooled"]:
                kernels = {n: mean_kernel for n in kernels}
                save_npy(pooled_file, mean_kernel.astype(np.float32))
            report["kernel_pooling"] = choice
        return kernels, mean_kernel, report

    def _save_slice_grid(self, ctx, c: str, ks: np.ndarray, flagged: dict) -> None:
        names = [f"{c}__z{z:03d}" for z in range(len(ks))]
        save_kernel_grid_png(
            list(ks),
            [n.split("__")[1] + (" replaced" if n in flagged else "") for n in names],
            ctx.folder() / f"{c}_kernels.png",
            title=f"{ctx.config}: {c}",
        )

    def synthesize(self, ctx: SynthesisContext) -> dict:
        kernels, flagged, mean_kernel = self._trained_kernels(ctx)
        kernels, mean_kernel, calibration = self._calibrated(ctx, kernels, mean_kernel)
        for c in ctx.cases:
            if not ctx.ds.properties[c]["has_hr"]:
                continue
            dest = ctx.dest(c)
            if dest.is_file():
                continue
            hr = ctx.ds.load(c, "hr")
            ks = self._case_kernels(ctx, c, hr.shape[0], kernels, mean_kernel)
            if ks.ndim == 3:
                self._save_slice_grid(ctx, c, ks, flagged)
            storage.save_array(dest, degrade_with_kernel(hr, ks, self.scale))
        if self.kernel_mode != "per_slice":
            shown = [(n, k if k is not None else mean_kernel) for n, k in kernels.items()][:64]
            save_kernel_grid_png(
                [k for _, k in shown],
                [n + (" replaced" if n in flagged else "") for n, _ in shown],
                ctx.folder() / "kernels.png",
                title=ctx.config,
            )
        return {"psf_sigma_hr": _sigma_hr(mean_kernel), "replaced_units": flagged, **calibration}
