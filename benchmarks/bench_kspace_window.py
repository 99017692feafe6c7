"""The k-space model's learned window against the real LR and the simulator's truth, per
protocol of the demo family: no SR training, a few seconds per protocol once preprocessed.

- out of sample: fit on all registered training pairs but one, degrade that one's HR and
  compare with its real LR (NMSE after a least-squares gain, inside the LR mask), the band
  as the plans use it; the mean over the pairs left out. The simulator's own acquisition
  scored the same way is the reference: the registered real LR on the working grid also
  carries the resampling and the residual misregistration, which no acquisition holds;
- the PSF of the fit on every pair against the simulator's acquisition (``DemoOracle`` of
  ``bench_quality``): FWHM of the line-spread functions, and the equivalent width of the
  response to a real object (partial Fourier's short side half-weighted).

Datasets are those of ``bench_acquired_band.py --pairs`` (the same ``--workdir`` layout:
built and preprocessed where missing). Develop on seeds 0-99, report on 1000 and above:

    python benchmarks/bench_kspace_window.py --protocols random:0-19 --workdir DIR
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np


def prepared(protocol: str, work: Path):
    """(raw dataset folder, plans) of ``protocol``, built and preprocessed if missing."""
    from bench_acquired_band import use_folders

    from mrisr.dataset.demo import build_demo_dataset
    from mrisr.planning.plan_and_preprocess_api import plan_and_preprocess
    from mrisr.plans import Plans

    slug = protocol.replace(":", "_")
    raw = work / slug / "Dataset001_MNIDemo"
    if not (raw / "demo_acquisition.json").is_file():
        raw = build_demo_dataset(work / slug, 1, protocol=protocol)
    use_folders(raw, work / f"{slug}_work")
    plans_path = work / f"{slug}_work" / "mrisr_preprocessed" / raw.name / "mrisrDemoPlans.json"
    if plans_path.is_file():
        return raw, Plans.load(plans_path)
    return raw, plan_and_preprocess(raw.name, 2, planner="DemoPlanner")[1]


def nmse(synthetic: np.ndarray, real: np.ndarray, mask: np.ndarray) -> float:
    """Mean squared error of ``synthetic`` (gain fitted) against ``real`` over the mask,
    relative to the real LR's mean square there."""
    z, h, w = synthetic.shape
    m = np.asarray(mask)[:z, :h, :w] > 0
    a, b = synthetic[m].astype(np.float64), np.asarray(real)[:z, :h, :w][m].astype(np.float64)
    gain = (a * b).sum() / max((a * a).sum(), 1e-30)
    return float(((gain * a - b) ** 2).mean() / max((b * b).mean(), 1e-30))


def equivalent_width(model, axis: int) -> float:
    """1 / the area under the model's window on the HR grid's frequencies (HR px)."""
    from mrisr.degradation.kspace_acquisition import window_profile

    f = np.linspace(-0.5, 0.5, 4097)
    u = f * 2 * model.scale / model.band[axis]
    return float(1.0 / np.trapezoid(window_profile(model.params["window"], u, axis), f))


def protocol_row(protocol: str, work: Path) -> dict:
    from bench_quality import DemoOracle, _truth

    from mrisr.degradation.kspace_acquisition import KSpaceAcquisition
    from mrisr.preprocessing.dataset import PreprocessedDataset

    raw, plans = prepared(protocol, work)
    ds = PreprocessedDataset.for_plans(plans)
    cases = sorted(set(ds.pairs()) - set(ds.flagged_pairs()))
    section = plans.configuration("kspace_edsr").degradation
    data = {c: (ds.load(c, "hr"), ds.load(c, "lr_raw"), ds.load(c, "lr_mask")) for c in cases}

    def fitted(on):
        model = KSpaceAcquisition(json.loads(json.dumps(section)), plans.scale)
        model.fit([data[c][:2] for c in on])
        return model

    errors = []
    for c in cases if len(cases) > 1 else []:
        model = fitted([o for o in cases if o != c])
        errors.append(nmse(model.degrade(data[c][0]), data[c][1], data[c][2]))
    model = fitted(cases)
    truth = _truth(raw)
    oracle = DemoOracle(
        {"protocol": asdict(truth["protocol"]), "hr_spacing": plans.hr_spacing}, plans.scale
    )
    oracle_errors = [nmse(oracle.degrade(data[c][0]), data[c][1], data[c][2]) for c in cases]
    fwhm, tf = model.psf_fwhm_hr(), oracle.psf_fwhm_hr()
    width, tw = [equivalent_width(model, a) for a in (0, 1)], oracle.psf_width_hr()
    return {
        "protocol": protocol,
        "pairs": len(cases),
        "band": list(model.band),
        "nmse_out_of_sample": float(np.mean(errors)) if errors else None,
        "nmse_acquisition": float(np.mean(oracle_errors)),
        "psf_fwhm_hr": fwhm,
        "psf_fwhm_truth_hr": tf,
        "psf_fwhm_rel_error": [a / b - 1 for a, b in zip(fwhm, tf)],
        "psf_width_hr": width,
        "psf_width_truth_hr": tw,
        "psf_width_rel_error": [a / b - 1 for a, b in zip(width, tw)],
    }


def main() -> None:
    from mrisr.dataset.demo_protocol_family import expand

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocols", default="random:0-19")
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--out", type=Path, help="JSON lines, one protocol per line (appended)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(
        f"{'protocol':<11} pairs  NMSE x1e3 (the acquisition's)  FWHM vs truth y/x   "
        "width vs truth y/x"
    )
    rows = []
    for p in expand(args.protocols):
        r = protocol_row(p, args.workdir.resolve())
        rows.append(r)
        n = r["nmse_out_of_sample"]
        print(
            f"{p:<11} {r['pairs']:>5}  {n * 1e3 if n is not None else float('nan'):9.3f} "
            f"({r['nmse_acquisition'] * 1e3:6.3f})          "
            "{:+6.0%} / {:+6.0%}     {:+6.0%} / {:+6.0%}".format(
                *r["psf_fwhm_rel_error"], *r["psf_width_rel_error"]
            ),
            flush=True,
        )
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(r) + "\n")
    both = [r for r in rows if r["nmse_out_of_sample"] is not None]
    n = np.array([r["nmse_out_of_sample"] for r in both])
    a = np.array([r["nmse_acquisition"] for r in both])
    fw = np.abs([r["psf_fwhm_rel_error"] for r in rows]).max(axis=1)
    print(
        f"mean out-of-sample NMSE x1e3 {n.mean() * 1e3:.3f} (the acquisition's "
        f"{a.mean() * 1e3:.3f}; the model at or below it on {(n <= a).sum()}/{n.size}); "
        f"PSF FWHM within 10 % of the truth on {(fw <= 0.1).sum()}/{fw.size}"
    )


if __name__ == "__main__":
    main()
