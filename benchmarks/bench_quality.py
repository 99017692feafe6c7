"""The quality harness: every configuration, the same budget, held-out real LR, one table.

For each demo protocol (``python -m mrisr.dataset.demo --protocol``): build the demo
dataset with ``--test-pairs`` held-out pairs, plan (the demo's planner, every model) and preprocess, train
every configuration on the same folds with the same trainer, super-resolve the held-out
real LR scans (``imagesLRTs``), evaluate them against ``imagesHRTs`` and print one table:
PSNR, SSIM, BRISQUE (mean +- sd) and the paired difference to bicubic with its p-value.

It also trains an **oracle**: EDSR on HR degraded by the demo simulator's own acquisition
model (its k-space band, raw-data filter and partial Fourier; the noise as every noisy
configuration: the real LR's measured level and colour), the upper bound of any learned
degradation. And it reports the estimates the method makes against the simulator's truth:
the LR noise sigma (native grid, background Rayleigh fit), the learned PSF's FWHM
(k-space window and DSGAN kernels) and how close each configuration's synthetic LR is to
the real LR of the registered pairs (SSIM, PSNR).

    python benchmarks/bench_quality.py                       # both protocols, fold 0
    python benchmarks/bench_quality.py --protocols default --configs bicubic,dsgan_edsr
    python benchmarks/bench_quality.py --folds 0 1 2 3 4     # all folds (ensemble)
    python benchmarks/bench_quality.py --protocols random:1000-1007 --configs bicubic,dsgan_edsr

``random:A-B`` runs the demo's protocol family (:mod:`mrisr.dataset.demo_protocol_family`);
with several protocols the report starts with each configuration's gain over bicubic per
protocol and its distribution. Each protocol's result is written to ``--results``
(default ``<workdir>/results/``) as soon as it is done: a re-run resumes where it stopped.
A study longer than a session keeps its finished protocols in the repository
(``--results benchmarks/results/quality``), so the next session continues with the next
protocol on a fresh workdir.

Everything lives under ``--workdir`` (default ``quality_work``); finished stages are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

from mrisr.dataset.demo_protocol_family import expand
from mrisr.degradation.base import DEGRADATIONS, Degradation, as_slice_stack
from mrisr.degradation.kernel_analysis import fwhm_of_profile, kernel_statistics
from mrisr.degradation.kspace_acquisition import _lr_band_spectrum
from mrisr.planning.planners import PLANNERS, DemoPlanner
from mrisr.utilities.errors import MrisrError

CONFIGS = (
    "bicubic",
    "zerofill_edsr",
    "gaussian_edsr",
    "dsn_edsr",
    "dsgan_paper_edsr",
    "dsgan_edsr",
    "kspace_edsr",
    "oracle_edsr",
)
PLANNER, PLANS, TRAINER = "QualityHarnessPlanner", "mrisrDemoPlans", "EDSRTrainer_quality"
#: starting weights of every new training (mrisr_train -pretrained_weights; bench_warm_start.py)
PRETRAINED_WEIGHTS: Path | None = None
#: without starting weights: random ones (True), or the plans' initialisation (False: the
#: generic network shipped with mrisr where one of the trainer's size exists)
FROM_SCRATCH = False


@PLANNERS.register
class QualityHarnessPlanner(DemoPlanner):
    """The demo's plans with every model, the DSN included (the harness compares them all)."""

    left_out_models = ()


@DEGRADATIONS.register(name="demo_oracle")
class DemoOracle(Degradation):
    """The demo simulator's LR acquisition applied to HR on the working grid (benchmark only)."""

    name = "demo_oracle"

    def window(self, h: int, w: int, hr_fov: tuple[float, float]) -> np.ndarray:
        from mrisr.dataset.demo_acquisition import AcquisitionProtocol
        from mrisr.dataset.demo_acquisition import window_1d as _window_1d

        p = AcquisitionProtocol(**self.params["protocol"])
        # LR-grid bin j is j / FOV cycles/mm; the acquisition holds |f| < 1 / (2 spacing),
        # along y the phase resolution's fraction of it
        uy = np.fft.fftfreq(h, 1.0 / h) / hr_fov[0] * 2 * p.spacing / p.phase_resolution
        ux = np.fft.fftfreq(w, 1.0 / w) / hr_fov[1] * 2 * p.spacing
        if p.window == "fermi":
            r = np.sqrt(uy[:, None] ** 2 + ux[None] ** 2)
            z = np.clip((r - p.window_param) / p.window_width, -60, 60)
            win = 1.0 / (1.0 + np.exp(z))
        else:
            win = np.outer(_window_1d(p, uy * p.matrix / 2), _window_1d(p, ux * p.matrix / 2))
        inside = (np.abs(uy)[:, None] < 1) & (np.abs(ux)[None] < 1)
        acquired = uy < 2 * p.partial_fourier - 1
        return (win * inside * acquired[:, None]).astype(np.float32)

    def degrade(self, hr: np.ndarray) -> np.ndarray:
        vol, squeeze = as_slice_stack(hr, self.scale)
        spec = _lr_band_spectrum(vol, self.scale)
        h, w = spec.shape[1:]
        sp = self.params["hr_spacing"]
        spec *= self.window(h, w, (h * self.scale * sp, w * self.scale * sp))
        out = np.abs(np.fft.ifft2(spec, axes=(-2, -1))).astype(np.float32)
        return out[0] if squeeze else out

    def psf_width_hr(self, n: int = 1024) -> list[float]:
        """:func:`_equivalent_width` per axis (y, x) of the acquisition's response to a
        real object on the lines through k-space's centre: ``(W(f) + W(-f)) / 2`` (partial
        Fourier keeps one side short)."""
        sp = self.params["hr_spacing"]
        win = self.window(n, n, (n * self.scale * sp, n * self.scale * sp))
        f = np.fft.fftfreq(n) / self.scale
        return [
            _equivalent_width(f, (prof + np.roll(prof[::-1], 1)) / 2)
            for prof in (win[:, 0], win[0])
        ]

    def psf_fwhm_hr(self, n: int = 512, central: bool = False) -> list[float]:
        """FWHM (HR px, y/x) of the line-spread functions ``|ifft(W(f, 0))|`` and
        ``|ifft(W(0, f))|``: the response to a line, the same quantity as a kernel's FWHM
        (:func:`kernel_statistics`: its marginal profiles). ``central``: the profiles of
        the point-spread function ``|ifft2(W)|`` through its centre instead (wider where
        the window is not separable, e.g. a radial Fermi filter)."""
        sp = self.params["hr_spacing"]
        win = self.window(n, n, (n * self.scale * sp, n * self.scale * sp))
        if central:
            psf = np.abs(np.fft.fftshift(np.fft.ifft2(win)))
            profiles = (psf[:, n // 2], psf[n // 2])
        else:
            profiles = (np.abs(np.fft.fftshift(np.fft.ifft(line))) for line in (win[:, 0], win[0]))
        return [fwhm_of_profile(p) * self.scale for p in profiles]


def _equivalent_width(freqs: np.ndarray, response: np.ndarray) -> float:
    """``1 / integral of response / response(0)`` over the frequencies (cycles per HR px):
    the width, in HR px, of the ideal low-pass with the same area. Unlike the FWHM it
    compares kernels of any shape (negative lobes, band limits, partial Fourier)."""
    order = np.argsort(freqs)
    f, r = freqs[order], response[order]
    r0 = r[np.argmin(np.abs(f))]
    return float(1.0 / np.trapezoid(r / r0, f))


def kernel_width(kernel: np.ndarray) -> list[float]:
    """:func:`_equivalent_width` per axis (y, x) of a kernel on the HR grid (its marginal
    profiles' Fourier magnitude)."""
    f = np.linspace(-0.5, 0.5, 2049)
    out = []
    for prof in (kernel.sum(axis=1), kernel.sum(axis=0)):
        t = np.arange(len(prof))
        out.append(_equivalent_width(f, np.abs(np.exp(-2j * np.pi * f[:, None] * t) @ prof)))
    return out


def _paired(values: dict, config: str, key: str) -> tuple[float, float | None]:
    a = np.array([values[config][c][key] for c in values["bicubic"]], float)
    b = np.array([values["bicubic"][c][key] for c in values["bicubic"]], float)
    d = a - b
    p = float(stats.ttest_rel(a, b).pvalue) if len(d) > 1 and np.ptp(d) > 0 else None
    return float(np.mean(d)), p


def _truth(raw: Path) -> dict:
    """The simulated LR acquisition and each LR scan's noise sigma: per channel
    (``noise_sigma``) and its mean over the tissue (``noise_sigma_tissue``: g-factor maps)."""
    from mrisr.dataset.demo_acquisition import AcquisitionProtocol, load_template

    acq = json.loads((raw / "demo_acquisition.json").read_text())
    proto = AcquisitionProtocol(**acq["protocols"]["LR"])
    truth = {}
    for c, v in acq["cases"].items():
        if "LR" not in v["intensity_scale"]:
            continue
        if "truth" in v:
            truth[c] = v["truth"]["LR"]
        else:  # built before the truth was recorded: no g-factor map then
            sigma = proto.noise * load_template().median * v["intensity_scale"]["LR"]
            truth[c] = {"noise_sigma": sigma, "noise_sigma_tissue": sigma}
    return {
        "protocol": proto,
        "noise_sigma": {c: t["noise_sigma"] for c, t in truth.items()},
        "noise_sigma_tissue": {c: t["noise_sigma_tissue"] for c, t in truth.items()},
    }


def run_protocol(protocol: str, args, configs: list[str]) -> dict:
    from mrisr.dataset.demo import build_demo_dataset
    from mrisr.evaluation.evaluate_api import evaluate_folders
    from mrisr.inference.predict_api import predict_folder
    from mrisr.planning.plan_and_preprocess_api import plan_and_preprocess
    from mrisr.plans import Plans
    from mrisr.training.train_api import fold_folder, results_folder, run_training
    from mrisr.utilities.file_io import load_json, save_json

    work = Path(args.workdir).resolve() / slug(protocol)
    for k in ("mrisr_raw", "mrisr_preprocessed", "mrisr_results"):
        (work / k).mkdir(parents=True, exist_ok=True)
        os.environ[k] = str(work / k)
    t0 = time.time()
    raw = build_demo_dataset(
        work / "mrisr_raw", 1, num_test_pairs=args.test_pairs, protocol=protocol
    )
    dataset = raw.name
    _, plans = plan_and_preprocess(dataset, 2, planner=PLANNER)
    if FROM_SCRATCH:  # as mrisr_plan_and_preprocess --from-scratch: the screen too
        from mrisr.cli.plan_and_preprocess import plan_from_scratch

        plan_from_scratch(plans)
    truth = _truth(raw)
    # the oracle: the simulator's acquisition, the noise and input of dsgan_edsr
    plans_path = work / "mrisr_preprocessed" / dataset / f"{PLANS}.json"
    data = load_json(plans_path)
    from dataclasses import asdict

    data["configurations"]["oracle_edsr"] = {
        "inherits_from": "dsgan_edsr",
        "label": "oracle+EDSR",
        "description": "benchmark only: EDSR on HR through the demo simulator's LR acquisition",
        "degradation": {
            "name": "demo_oracle",
            "protocol": asdict(truth["protocol"]),
            "hr_spacing": plans.hr_spacing,
        },
    }
    save_json(data, plans_path)
    plans = Plans.load(plans_path)
    selected = None
    if args.select:  # the selection rule, as mrisr_plan_and_preprocess runs it
        from mrisr.training.selection import candidates_of, select_configuration

        t = time.time()
        cands = [n for n in candidates_of(plans) if n != "oracle_edsr"]
        selected = select_configuration(plans, cands, device=args.device)
        selected["seconds"] = time.time() - t
        print(f"  {protocol}: selection ({selected['seconds']:.0f} s): {selected['reason']}")
        configs = resolve_configs(configs, selected, cands)

    evals: dict[str, dict] = {}
    timings = {}
    for config in configs:
        t = time.time()
        folds = [] if config == "bicubic" else [str(f) for f in args.folds]
        for f in args.folds:
            fold_dir = fold_folder(results_folder(dataset, TRAINER, PLANS, config), f)
            if (fold_dir / "validation" / "summary.json").is_file() and (
                config == "bicubic" or (fold_dir / "checkpoint_final.pth").is_file()
            ):
                continue
            resume = (fold_dir / "checkpoint_latest.pth").is_file()
            run_training(
                f,
                dataset,
                config,
                TRAINER,
                PLANS,
                continue_training=resume,
                device=args.device,
                progress=False,
                pretrained_weights=None if resume else PRETRAINED_WEIGHTS,
                from_scratch=FROM_SCRATCH and PRETRAINED_WEIGHTS is None,
            )
        pred = work / "predictions" / TRAINER / config
        predict_folder(
            raw / "imagesLRTs",
            pred,
            dataset,
            config,
            TRAINER,
            PLANS,
            folds=folds or None,
            device=args.device,
            resume=True,
        )
        res = evaluate_folders(raw / "imagesHRTs", pred, pred / "evaluation.json")
        evals[config] = {c["case"]: c for c in res["cases"]}
        timings[config] = time.time() - t
        print(
            f"  {protocol}/{config}: PSNR {res['mean']['psnr']['mean']:.2f} SSIM {res['mean']['ssim']['mean']:.4f} ({timings[config]:.0f} s)",
            flush=True,
        )

    # estimates against the truth
    fp = load_json(work / "mrisr_preprocessed" / dataset / "dataset_fingerprint.json")
    noise, noise_tissue, tissue_tissue, residual = [], [], [], []
    for c in fp["cases"]:
        if not c.get("lr") or c["name"] not in truth["noise_sigma"]:
            continue
        t_tissue = truth["noise_sigma_tissue"][c["name"]]
        if c["lr"].get("noise_sigma_background"):
            est = c["lr"]["noise_sigma_background"]
            noise.append(est / truth["noise_sigma"][c["name"]] - 1)
            noise_tissue.append(est / t_tissue - 1)
        if c["lr"].get("noise_sigma_tissue"):
            tissue_tissue.append(c["lr"]["noise_sigma_tissue"] / t_tissue - 1)
        if c["lr"].get("noise_sigma_residual"):
            residual.append(c["lr"]["noise_sigma_residual"] / t_tissue - 1)
    oracle = DemoOracle(plans.configuration("oracle_edsr").degradation, plans.scale)
    estimates = {
        "noise_sigma_rel_error": noise,
        "noise_sigma_tissue_rel_error": noise_tissue,
        "noise_sigma_in_tissue_rel_error": tissue_tissue,
        # each pair's residual against its HR; the dataset's estimate is the lowest
        # (PreprocessedDataset.lr_noise_level)
        "noise_sigma_residual_rel_error": residual,
        "psf_fwhm_truth_hr": oracle.psf_fwhm_hr(),
        "psf_fwhm_truth_central_hr": oracle.psf_fwhm_hr(central=True),
        "psf_width_truth_hr": oracle.psf_width_hr(),
    }
    res_root = work / "mrisr_results" / dataset
    for config in configs:
        for summ in sorted(
            (
                work / "mrisr_preprocessed" / dataset / plans.data_identifier / "synthetic" / config
            ).glob("*/summary.json")
        ):
            s = load_json(summ)
            estimates.setdefault("fidelity", {}).setdefault(config, []).append(
                s.get("fidelity", {}) and s["fidelity"]["mean"]
            )
            if s.get("fidelity"):
                cases = estimates.setdefault("fidelity_cases", {}).setdefault(config, {})
                cases.update({c: v["ssim"] for c, v in s["fidelity"]["cases"].items()})
            if s.get("psf_fwhm_hr"):
                estimates.setdefault("psf_fwhm_hr", {})[config] = s["psf_fwhm_hr"]
            rel = s.get("intensity_relation")
            if rel and "deviation" in rel:
                estimates.setdefault("intensity_relation", {})[config] = {
                    "deviation": rel["deviation"],
                    "applied": rel["applied"],
                }
            if config == "dsgan_edsr" and s.get("width_calibration"):
                estimates["width_calibration"] = s["width_calibration"]
            if config == "dsgan_edsr" and s.get("kernel_pooling"):
                estimates["kernel_pooling"] = s["kernel_pooling"]
                if s["kernel_pooling"]["pooled"]:
                    pooled = np.load(summ.parent / "kernel_pooled.npy")
                    estimates["psf_width_dsgan_pooled_hr"] = kernel_width(pooled)
                    estimates.setdefault("psf_fwhm_hr", {})["dsgan (pooled, as used)"] = [
                        float(v) for v in kernel_statistics(pooled)["fwhm"]
                    ]
    units = res_root / f"degradation__{PLANS}__dsgan_edsr" / "units"
    kf = [
        load_json(f)["kernel"]["fwhm"]
        for f in sorted(units.glob("*.json"))
        if "kernel" in load_json(f)
    ]
    kernels = [np.load(f) for f in sorted(units.glob("*_kernel.npy"))]
    if kernels:
        widths = [kernel_width(k) for k in kernels]
        estimates["psf_width_dsgan_hr"] = np.median(np.asarray(widths, float), axis=0).tolist()
    if kernels and estimates.get("width_calibration"):
        from mrisr.degradation.width_calibration import stretch_kernel

        f = tuple(estimates["width_calibration"]["factors_yx"])
        widths = [kernel_width(stretch_kernel(k, f)) for k in kernels]
        estimates["psf_width_dsgan_calibrated_hr"] = np.median(
            np.asarray(widths, float), axis=0
        ).tolist()
    if kf:
        estimates["psf_fwhm_hr"] = {
            **estimates.get("psf_fwhm_hr", {}),
            "dsgan (post-processed kernels, median)": np.nanmedian(
                np.asarray(kf, float), axis=0
            ).tolist(),
        }
    return {
        "protocol": protocol,
        "selection": selected,
        "evals": evals,
        "estimates": estimates,
        "seconds": time.time() - t0,
        "timings": timings,
    }


def report(result: dict) -> str:
    ev = result["evals"]
    lines = [
        f"### protocol `{result['protocol']}` ({len(ev['bicubic'])} held-out pairs, {result['seconds'] / 60:.0f} min)",
        "",
        "| configuration | PSNR | SSIM | BRISQUE | dPSNR vs bicubic (p) | dSSIM vs bicubic (p) |",
        "|---|---|---|---|---|---|",
    ]
    for config, cases in ev.items():
        cells = []
        for key, fmt in (
            ("psnr", "{:.2f} ± {:.2f}"),
            ("ssim", "{:.3f} ± {:.3f}"),
            ("brisque", "{:.1f} ± {:.1f}"),
        ):
            v = np.array([c[key] for c in cases.values()], float)
            cells.append(fmt.format(np.nanmean(v), np.nanstd(v, ddof=1) if len(v) > 1 else 0))
        for key, fmt in (("psnr", "{:+.2f}"), ("ssim", "{:+.3f}")):
            if config == "bicubic":
                cells.append("—")
                continue
            d, p = _paired(ev, config, key)
            cells.append(fmt.format(d) + (f" ({p:.2g})" if p is not None else ""))
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    est = result["estimates"]
    lines += [
        "",
        "- LR noise sigma (native grid, background Rayleigh) relative error: "
        + ", ".join(f"{100 * e:+.1f}%" for e in est["noise_sigma_rel_error"])
        + "; against the in-tissue truth: "
        + ", ".join(f"{100 * e:+.1f}%" for e in est.get("noise_sigma_tissue_rel_error", [])),
        "- LR noise sigma measured in tissue (native grid) against the in-tissue truth: "
        + ", ".join(f"{100 * e:+.1f}%" for e in est.get("noise_sigma_in_tissue_rel_error", [])),
    ]
    if est.get("noise_sigma_residual_rel_error"):
        res = est["noise_sigma_residual_rel_error"]
        lines.append(
            "- LR noise sigma from each pair's residual against its HR (native grid) against "
            "the in-tissue truth: "
            + ", ".join(f"{100 * e:+.1f}%" for e in res)
            + f"; the dataset's (the lowest): {100 * min(res):+.1f}%"
        )
    t, tc = est["psf_fwhm_truth_hr"], est.get("psf_fwhm_truth_central_hr") or [np.nan] * 2
    lines.append(
        "- PSF FWHM (HR px, y/x, of the line-spread functions, as the kernels' marginal "
        f"profiles): truth {t[0]:.2f}/{t[1]:.2f} (through the PSF's centre "
        f"{tc[0]:.2f}/{tc[1]:.2f}); "
        + "; ".join(
            f"{k} {v[0]:.2f}/{v[1]:.2f} "
            f"({100 * (v[0] / t[0] - 1):+.0f}%/{100 * (v[1] / t[1] - 1):+.0f}%)"
            for k, v in est.get("psf_fwhm_hr", {}).items()
        )
    )
    if est.get("psf_width_dsgan_hr"):
        wt, wd = est["psf_width_truth_hr"], est["psf_width_dsgan_hr"]
        lines.append(
            "- PSF equivalent width (HR px, y/x: 1 / the area under the normalised response, "
            f"comparable across kernel shapes): truth {wt[0]:.2f}/{wt[1]:.2f}; dsgan "
            f"(post-processed kernels, median) {wd[0]:.2f}/{wd[1]:.2f} "
            f"({100 * (wd[0] / wt[0] - 1):+.0f}%/{100 * (wd[1] / wt[1] - 1):+.0f}%)"
        )
    if est.get("psf_width_dsgan_calibrated_hr"):
        wt, wc = est["psf_width_truth_hr"], est["psf_width_dsgan_calibrated_hr"]
        cal = est["width_calibration"]
        lines.append(
            f"  - calibrated on {cal['pairs']} registered pairs (factors y/x "
            f"{cal['factors_yx'][0]:.3f}/{cal['factors_yx'][1]:.3f}, SSIM to the real LR "
            f"{cal['ssim_before']:.4f} -> {cal['ssim_after']:.4f}): {wc[0]:.2f}/{wc[1]:.2f} "
            f"({100 * (wc[0] / wt[0] - 1):+.0f}%/{100 * (wc[1] / wt[1] - 1):+.0f}%)"
        )
    pool = est.get("kernel_pooling")
    if pool:
        line = (
            f"  - kernel pooling: SSIM to the real LR with each case's own kernel "
            f"{pool['ssim_units']:.4f}, with the pooled kernel {pool['ssim_pooled']:.4f}: "
            + ("pooled" if pool["pooled"] else "own kernels")
        )
        if est.get("psf_width_dsgan_pooled_hr"):
            wt, wp = est["psf_width_truth_hr"], est["psf_width_dsgan_pooled_hr"]
            line += (
                f"; the pooled kernel's width {wp[0]:.2f}/{wp[1]:.2f} "
                f"({100 * (wp[0] / wt[0] - 1):+.0f}%/{100 * (wp[1] / wt[1] - 1):+.0f}%)"
            )
        lines.append(line)
    if est.get("intensity_relation"):
        lines.append(
            "- intensity relation of the LR series (departure from a pure scale; applied?): "
            + "; ".join(
                f"{k} {v['deviation']:.3f} ({'applied' if v['applied'] else 'not applied'})"
                for k, v in est["intensity_relation"].items()
            )
        )
    fid = est.get("fidelity", {})
    if fid:
        lines.append(
            "- synthetic LR vs real LR of the registered training pairs (SSIM / PSNR): "
            + "; ".join(
                f"{k} {v[0]['ssim']:.4f} / {v[0]['psnr']:.2f}" for k, v in fid.items() if v and v[0]
            )
        )
    lines.extend(_per_pair_fidelity(est.get("fidelity_cases", {})))
    return "\n".join(lines)


#: the degradations with nothing learned from the real LR (bicubic has no synthetic LR)
FIXED_BASELINES = ("gaussian_edsr", "zerofill_edsr")


def _per_pair_fidelity(cases: dict) -> list[str]:
    """The bar's own form: on how many registered pairs ``dsgan_edsr``'s synthetic LR is
    closer (SSIM) to the real LR than every fixed baseline's, and the tightest margin."""
    fixed = [b for b in FIXED_BASELINES if b in cases]
    if "dsgan_edsr" not in cases or not fixed:
        return []
    mine = cases["dsgan_edsr"]
    pairs = sorted(c for c in mine if all(c in cases[b] for b in fixed))
    margins = [mine[c] - max(cases[b][c] for b in fixed) for c in pairs]
    if not margins:
        return []
    wins = sum(m > 0 for m in margins)
    return [
        f"- per registered pair, dsgan_edsr closer to the real LR than {', '.join(fixed)}: "
        f"{wins} of {len(pairs)} pairs (SSIM margin to the best of them "
        + ", ".join(f"{m:+.4f}" for m in margins)
        + ")"
    ]


def main(argv=None) -> int:
    global TRAINER, FROM_SCRATCH
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocols", default="default,fermi_pf")
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--folds", nargs="+", type=int, default=[0])
    p.add_argument("--test-pairs", type=int, default=4)
    p.add_argument("--workdir", default="quality_work")
    p.add_argument(
        "--results",
        default=None,
        help="folder of the finished protocols' results (default: <workdir>/results)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--trainer", default=TRAINER, help="trainer class for every configuration")
    p.add_argument(
        "--select",
        action="store_true",
        help="run the selection rule per protocol (implied by the names 'default', "
        "'runner_up' and 'all' in --configs) and report how well it predicts the outcome",
    )
    p.add_argument(
        "--from-scratch",
        action="store_true",
        help="every training from random weights (default: the plans' initialisation, the "
        "generic network shipped with mrisr where one of the trainer's size exists)",
    )
    args = p.parse_args(argv)
    TRAINER = args.trainer
    FROM_SCRATCH = args.from_scratch
    import logging

    logging.basicConfig(level=logging.WARNING)
    configs = [c for c in args.configs.split(",") if c]
    args.select = args.select or bool(set(configs) & set(ALIASES))
    if "bicubic" not in configs:
        configs.insert(0, "bicubic")
    out, results = [], []
    for protocol in expand(args.protocols):
        try:
            r = _run_or_reuse(protocol, args, configs)
        except MrisrError as e:  # a protocol mrisr refuses is a finding, not the end
            print(f"  {protocol}: refused: {e}", flush=True)
            out.append(f"### protocol `{protocol}`: refused\n\n{e}")
            continue
        results.append(r)
        text = report(r)
        print(text, flush=True)
        out.append(text)
    if len(results) > 1:
        out.insert(0, distribution(results, configs))
        print(out[0], flush=True)
    if any(r.get("selection") for r in results):
        out.insert(0, rule_study(results))
        print(out[0], flush=True)
    Path(args.workdir, "quality_report.md").write_text("\n\n".join(out) + "\n")
    print(f"report: {Path(args.workdir, 'quality_report.md')}")
    return 0


def slug(protocol: str) -> str:
    """A folder name for a protocol (``random:1000`` -> ``random_1000``)."""
    return protocol.replace(":", "_")


def _run_or_reuse(protocol: str, args, configs: list[str]) -> dict:
    """One protocol's result, written to ``<workdir>/results/<protocol>.json`` when done; a
    re-run reuses it (and, inside a protocol, every finished stage), so the harness resumes
    where it stopped."""
    path = Path(args.results or Path(args.workdir, "results"), f"{slug(protocol)}__{TRAINER}.json")
    if path.is_file():
        r = json.loads(path.read_text())
        if r.get("selection"):
            configs = resolve_configs(configs, r["selection"], r["selection"]["candidates"])
        if (r.get("selection") or not args.select) and all(c in r["evals"] for c in configs):
            r["evals"] = {c: r["evals"][c] for c in configs}
            return r
    r = run_protocol(protocol, args, configs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(r, indent=1))
    os.replace(tmp, path)
    return r


#: --configs names resolved per protocol from its selection
ALIASES = ("default", "runner_up", "all")


def resolve_configs(configs: list[str], selected: dict, candidates: list[str]) -> list[str]:
    """``default`` / ``runner_up`` / ``all`` -> the protocol's configurations (in order, once)."""
    out: list[str] = []
    for c in configs:
        names = {"default": [selected["default"]], "runner_up": [selected.get("runner_up")]}
        names["all"] = list(candidates)
        out += [n for n in names.get(c, [c]) if n]
    return list(dict.fromkeys(out))


def rule_study(results: list[dict]) -> str:
    """How well each selection rule predicts the held-out outcome, over the protocols: per
    protocol the rank correlation of the rule's score with the held-out gain over bicubic
    (candidates with a held-out result), and whether its pick is the best or within 0.3 dB.
    Rules: the screen (its mean validation PSNR; the plans' default is its pick) and the
    in-sample fidelity of the synthetic LR (SSIM to the registered real LR)."""
    lines = [
        "### selection rules against the held-out outcome",
        "",
        "| protocol | selected default (gain) | best in hindsight (gain) | screen rho | "
        "fidelity pick (gain) | fidelity rho |",
        "|---|---|---|---|---|---|",
    ]
    hits = {"screen": [], "fidelity": []}
    for r in results:
        sel = r.get("selection")
        if not sel or not sel.get("scores"):
            continue
        scored = [c for c in sel["scores"] if c in r["evals"]]
        g = {c: gains(r, c) for c in scored}
        best = max(g, key=g.get)
        screen_rho = _rho([sel["scores"][c]["psnr"] for c in scored], [g[c] for c in scored])
        fid = {c: sel["scores"][c].get("fidelity_ssim") for c in scored}
        fid = {c: v for c, v in fid.items() if v is not None}
        fid_pick = max(fid, key=fid.get) if fid else None
        fid_rho = _rho([fid[c] for c in fid], [g[c] for c in fid]) if fid else float("nan")
        chosen = sel["default"]
        if chosen in g:
            hits["screen"].append(g[chosen] >= g[best] - 0.3)
        if fid_pick:
            hits["fidelity"].append(g[fid_pick] >= g[best] - 0.3)
        lines.append(
            f"| {r['protocol']} | {chosen} ({g.get(chosen, float('nan')):+.2f}) | {best} "
            f"({g[best]:+.2f}) | {screen_rho:+.2f} | "
            + (f"{fid_pick} ({g[fid_pick]:+.2f})" if fid_pick else "—")
            + f" | {fid_rho:+.2f} |"
        )
    lines.append("")
    for rule, h in hits.items():
        lines.append(f"- {rule} rule: pick best or within 0.3 dB on {sum(h)} / {len(h)} protocols")
    return "\n".join(lines)


def _rho(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (nan with fewer than 3 values)."""
    if len(a) < 3:
        return float("nan")
    return float(stats.spearmanr(a, b)[0])


def gains(result: dict, config: str, key: str = "psnr") -> float:
    """Mean held-out gain of ``config`` (or the protocol's ``default`` / ``runner_up``)
    over bicubic on one protocol."""
    sel = result.get("selection") or {}
    config = sel.get(config) or config if config in ALIASES else config
    return _paired(result["evals"], config, key)[0]


def distribution(results: list[dict], configs: list[str]) -> str:
    """The per-protocol gains over bicubic and, per configuration, their distribution."""
    trained = [c for c in configs if c not in ("bicubic", "all")]
    if "all" in configs:  # every candidate evaluated everywhere
        trained += sorted(set.intersection(*(set(r["evals"]) for r in results)) - {"bicubic"})
    trained = list(dict.fromkeys(trained))
    lines = [
        f"### gain over bicubic (held-out PSNR dB / SSIM), {len(results)} protocols",
        "",
        "| protocol | bicubic PSNR | " + " | ".join(trained) + " | best |",
        "|---|---|" + "---|" * len(trained) + "---|",
    ]
    for r in results:
        g = {c: (gains(r, c), gains(r, c, "ssim")) for c in trained}
        bic = np.mean([v["psnr"] for v in r["evals"]["bicubic"].values()])
        best = max(g, key=lambda c: g[c][0]) if g else "—"
        lines.append(
            f"| {r['protocol']} | {bic:.2f} | "
            + " | ".join(f"{g[c][0]:+.2f} / {g[c][1]:+.3f}" for c in trained)
            + f" | {best} |"
        )
    lines += [
        "",
        "| configuration | median | min | max | >= +1 dB and +0.03 SSIM | < 0 dB | best or within 0.3 dB |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in trained:
        d = np.array([gains(r, c) for r in results])
        ds = np.array([gains(r, c, "ssim") for r in results])
        best = np.array([max(gains(r, o) for o in trained) for r in results])
        lines.append(
            f"| {c} | {np.median(d):+.2f} | {d.min():+.2f} | {d.max():+.2f} | "
            f"{int(((d >= 1.0) & (ds >= 0.03)).sum())} / {len(d)} | {int((d < 0).sum())} | "
            f"{int((d >= best - 0.3).sum())} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
