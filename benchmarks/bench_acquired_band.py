"""The LR's acquired band read from its spectrum (``dataset_fingerprint.json``'s
``acquired_band``) against the simulator's truth, per protocol of the demo family: no
training, a second or two per scan.

Two truths per in-plane axis, as fractions of the stored grid's Nyquist:

- acquired: the readout (x) ``1 / storage_factor``, the phase encoding (y)
  ``phase_resolution / storage_factor`` (``demo_acquisition.json``'s ``protocols.LR``);
- held: the acquired band times the raw-data filter's 10 %-amplitude edge, read from the
  simulator's own filter on its k-space grid (the convention of the k-space model's band
  measured on pairs); an edge at or beyond 0.95 counts as 1.

An estimate counts as right within 10 % of either. Develop on seeds 0-99, report on 1000
and above:

    python benchmarks/bench_acquired_band.py --protocols random:0-39 --workdir DIR

``--pairs`` also plans and preprocesses each dataset (the demo's planner) and fits the
k-space model on its registered pairs (no SR training, ~30 s per protocol): the band measured
on the pairs against the spectra's reading on the working grid (the plans'
``band_spectrum``), the agreement the fit records and warns on past 20 %.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np


def filter_edge(lr: dict) -> float:
    """The simulator's raw-data filter's 10 %-amplitude edge along the readout (fraction
    of its band), from the simulator's own filter (:func:`window_2d`, the k_y = 0 row)."""
    from mrisr.dataset.demo_acquisition import AcquisitionProtocol, window_2d

    protocol = AcquisitionProtocol(**lr)
    freqs = np.fft.fftfreq(protocol.matrix, 1.0 / protocol.matrix).round()
    row = window_2d(protocol, freqs)[0]
    kept = freqs[(freqs >= 0) & (row >= 0.1)]
    edge = float(kept.max() / (protocol.matrix / 2.0))
    return 1.0 if edge >= 0.95 else edge


def protocol_row(protocol: str, work: Path, pairs: bool = False) -> dict:
    from mrisr.dataset.demo import build_demo_dataset
    from mrisr.dataset.integrity import verify_dataset
    from mrisr.planning.fingerprint import fingerprint_case, through_plane_normal

    raw = build_demo_dataset(work / protocol.replace(":", "_"), 1, protocol=protocol)
    lr = json.loads((raw / "demo_acquisition.json").read_text())["protocols"]["LR"]
    sf, pr = lr.get("storage_factor", 1.0), lr.get("phase_resolution", 1.0)
    acquired = [pr / sf, 1.0 / sf]
    edge = filter_edge(lr)
    held = [b * edge if edge < 1 else b for b in acquired]
    verified = verify_dataset(raw, 1)
    normal = through_plane_normal(verified.cases, verified.geometries)
    bands, sources = [], set()
    for c in verified.cases:
        fp = fingerprint_case((c, normal))
        if fp.lr is not None and fp.lr.acquired_band is not None:
            bands.append(fp.lr.acquired_band[::-1])  # SimpleITK (x, y) -> (y, x)
            sources.add(min(fp.lr.acquired_band_drop_db))
    est = np.median(bands, axis=0).tolist() if bands else [float("nan")] * 2
    err = truth_error(est, (acquired, held))
    row = pair_band(raw, work / (protocol.replace(":", "_") + "_work")) if pairs else {}
    if row:  # the pairs' band (working grid) against the same truths (the LR grid's)
        on_lr = [p / h for p, h in zip(row["pairs_band"], row["band_headers"])]
        row["pairs_error"] = truth_error(on_lr, (acquired, held))
    return {
        **row,
        "protocol": protocol,
        "window": lr["window"],
        "background": lr.get("background", "noise"),
        "acquired": acquired,
        "held": held,
        "estimate": est,
        "range": [np.min(bands, axis=0).tolist(), np.max(bands, axis=0).tolist()]
        if bands
        else None,
        "min_drop_db": min(sources) if sources else None,
        "error": err,
    }


def truth_error(band: list[float], truths: tuple[list[float], ...]) -> float:
    """Relative error of a (y, x) band against the nearest of the truths (its worse axis)."""
    return min(max(abs(b / t - 1) for b, t in zip(band, truth)) for truth in truths)


def use_folders(raw: Path, work: Path) -> None:
    """Point the mrisr folders at ``raw``'s dataset and ``work`` (its preprocessed data and
    results, created if missing)."""
    import os

    os.environ["mrisr_raw"] = str(raw.parent)
    for k in ("mrisr_preprocessed", "mrisr_results"):
        (work / k).mkdir(parents=True, exist_ok=True)
        os.environ[k] = str(work / k)


def pair_band(raw: Path, work: Path) -> dict:
    """The k-space model's band measured on every registered pair of ``raw``'s dataset
    against the LR spectra's reading (both on the working grid, y / x), from its fit."""
    from mrisr.degradation.stage import degradation_dir, ensure_synthetic_lr, model_id
    from mrisr.planning.plan_and_preprocess_api import plan_and_preprocess
    from mrisr.preprocessing.dataset import PreprocessedDataset
    from mrisr.utilities.file_io import load_json

    use_folders(raw, work)
    _, plans = plan_and_preprocess(raw.name, 2, planner="DemoPlanner")
    cases = PreprocessedDataset.for_plans(plans).pairs()
    ensure_synthetic_lr(plans, "kspace_edsr", cases, progress=False)
    mid = model_id(plans, "kspace_edsr", cases)
    fit = load_json(degradation_dir(plans, "kspace_edsr") / f"kspace_acquisition_{mid}.json")["fit"]
    return {
        "band_headers": fit["band_headers"],
        "pairs_band": fit.get("band_pairs", fit["band"]),
        "spectrum_band": fit.get("band_spectrum"),
        "agreement": fit.get("band_spectrum_agreement"),
    }


def main() -> None:
    from mrisr.dataset.demo_protocol_family import expand

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocols", default="default,fermi_pf,random:0-39")
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--out", type=Path, help="JSON lines, one protocol per line (appended)")
    ap.add_argument(
        "--pairs", action="store_true", help="also the band measured on the registered pairs"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(
        f"{'protocol':<11} {'filter':<8} {'bg':<7} acquired y/x  held y/x    estimate y/x  min drop dB"
    )
    errors, agree, pairs_err = [], [], []
    for p in expand(args.protocols):
        r = protocol_row(p, args.workdir, args.pairs)
        errors.append(r["error"])
        (ay, ax), (hy, hx), (ey, ex) = r["acquired"], r["held"], r["estimate"]
        print(
            f"{p:<11} {r['window']:<8} {r['background']:<7} {ay:.2f}/{ax:.2f}     "
            f"{hy:.2f}/{hx:.2f}   {ey:.2f}/{ex:.2f}     {r['min_drop_db']:.0f}"
            + ("  <-- off by more than 10 %" if not r["error"] <= 0.10 else ""),
            flush=True,
        )
        if r.get("agreement"):
            agree.append(max(abs(a) for a in r["agreement"]))
            pairs_err.append(r["pairs_error"])
            print(
                "            pairs' band {:.2f}/{:.2f}, the spectra's {:.2f}/{:.2f}: ".format(
                    *r["pairs_band"], *r["spectrum_band"]
                )
                + "{:+.0%} / {:+.0%}".format(*r["agreement"])
                + " (pairs' band off the truth by {:.0%})".format(r["pairs_error"])
                + ("  <-- warned (past 20 %)" if agree[-1] > 0.2 else ""),
                flush=True,
            )
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(r) + "\n")
    e = np.asarray(errors)
    print(
        f"within 10 % of a truth: {(e <= 0.10).sum()}/{e.size}; within 5 %: {(e <= 0.05).sum()}/{e.size}"
    )
    if agree:
        a, pe = np.asarray(agree), np.asarray(pairs_err)
        print(
            f"the pairs' band within 10 % of a truth: {(pe <= 0.10).sum()}/{pe.size}; "
            f"within 5 %: {(pe <= 0.05).sum()}/{pe.size}"
        )
        print(
            f"pairs vs spectra: within 10 % on {(a <= 0.1).sum()}/{a.size}, within 20 % (no "
            f"warning) on {(a <= 0.2).sum()}/{a.size}; largest {a.max():.0%}"
        )


if __name__ == "__main__":
    main()
