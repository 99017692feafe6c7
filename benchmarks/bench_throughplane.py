"""Through-plane SR on the thick-slice demo protocols: mrisr vs B-spline (vs ECLARE).

For each protocol (:data:`mrisr.dataset.demo_thick_slice.THICK_PROTOCOLS`) a dataset of
``--train-cases`` + ``--test-cases`` scans is simulated; every held-out scan is
super-resolved by each method and scored against its isotropic truth
(:func:`mrisr.metrics.fidelity.through_plane_metrics`: PSNR over the truth's foreground,
SSIM over the coronal slices, which hold the slice axis), with the wall time:

* ``bspline``: cubic B-spline along the slice axis (what a viewer shows);
* ``self_rect`` / ``self_gaussian`` / ``self_learned``: ``mrisr_throughplane`` on the one
  scan (self-supervised), profile a box / Gaussian of the stated thickness / the box whose
  width is measured from the scan (``--profile learned``), training capped at ``--budget``;
* ``dataset_rect``: one model trained on the training scans (``--save-model``, same
  budget), then applied to the held-out scan (``--model``): the time is the prediction's;
* ``dataset_learned``: as ``dataset_rect`` with the profile measured from the training scans;
* ``dataset_ref``: as ``dataset_rect`` with the training scans' isotropic truths as HR
  references (``--hr-reference``). The demo's scans are all one template in other poses,
  so this row flatters references: the held-out brain is the references' brain;
* ``eclare``: ``run-eclare`` from its own virtual environment (``--eclare-python``), its
  ESPRESO profile, ``--eclare-patches`` patches, output resampled onto the truth's grid.

Results are appended to ``WORKDIR/results.jsonl`` as they come; the table is printed and
written to ``WORKDIR/table.md``. Example::

    python benchmarks/bench_throughplane.py --workdir /tmp/tp --protocols thick4 \\
        --methods bspline,self_rect,dataset_rect --budget 5m
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mrisr.dataset.demo_thick_slice import THICK_PROTOCOLS, build_thick_dataset
from mrisr.metrics.fidelity import through_plane_metrics
from mrisr.throughplane.api import bspline_image, super_resolve
from mrisr.training.time_budget import parse_duration

METHODS = (
    "bspline", "self_rect", "self_gaussian", "self_learned", "dataset_rect", "dataset_ref",
    "dataset_learned", "eclare",
)  # fmt: skip
#: per-protocol models: (slice profile, the training scans' truths as HR references)
DATASET_MODELS = {
    "dataset_rect": ("rect", False), "dataset_ref": ("rect", True), "dataset_learned": ("learned", False),
}  # fmt: skip


def score(pred: np.ndarray, truth: np.ndarray) -> dict:
    m = through_plane_metrics(truth, pred, 0)  # the demo's thick axis is z
    return {"psnr": round(m["psnr"], 3), "ssim": round(m["ssim"], 4)}


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)


def on_grid(path: Path, reference: Path) -> np.ndarray:
    """A prediction resampled (linear, physical space) onto the truth's grid."""
    ref = sitk.ReadImage(str(reference))
    img = sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, 0.0))


def run_eclare(args, scan: Path, out: Path) -> Path:
    run = str(Path(args.eclare_python).parent / "run-eclare")  # its console script
    cmd = [run, "--in-fpath", str(scan), "--out-dir", str(out),
           "--n-patches", str(args.eclare_patches), "--gpu-id", "-1"]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out / scan.name.replace(".nii", "_eclare.nii")


def bench_protocol(args, protocol: str, methods: list[str], budget: float) -> list[dict]:
    folder = Path(args.workdir) / protocol
    if not (folder / "dataset.json").is_file():
        build_thick_dataset(folder, protocol, args.train_cases, args.test_cases, args.seed)
    thickness = THICK_PROTOCOLS[protocol].thickness
    train = sorted((folder / "imagesLR").glob("*.nii.gz"))
    rows = []
    models = {m: folder / f"{m}.pt" for m in DATASET_MODELS}
    for m, model in models.items():
        if m in methods and not model.is_file():
            t = time.perf_counter()
            profile, with_refs = DATASET_MODELS[m]
            refs = [folder / "imagesHR"] if with_refs else ()
            super_resolve(train, folder / f"out_train_{m}", thickness, profile, save_model_to=model,
                          seconds=budget, progress=False, references=refs)  # fmt: skip
            print(f"{protocol}: {m} model trained in {time.perf_counter() - t:.0f} s", flush=True)
    for scan in sorted((folder / "imagesLRTs").glob("*.nii.gz")):
        truth_path = folder / "imagesHRTs" / scan.name
        truth = read(truth_path)
        for m in methods:
            out = folder / f"out_{m}"
            t = time.perf_counter()
            if m == "bspline":
                pred = sitk.GetArrayFromImage(bspline_image(scan, thickness))
            elif m.startswith("self_"):
                super_resolve([scan], out, thickness, m[5:], seconds=budget, progress=False)
                pred = read(out / scan.name)
            elif m in models:
                super_resolve([scan], out, thickness, model=models[m], progress=False)
                pred = read(out / scan.name)
            elif m == "eclare":
                pred = on_grid(run_eclare(args, scan, out), truth_path)
            else:
                raise SystemExit(f"unknown method {m}; one of {METHODS}")
            row = {"protocol": protocol, "scan": scan.name, "method": m,
                   "seconds": round(time.perf_counter() - t, 1), **score(pred, truth)}  # fmt: skip
            if m.startswith(("self_", "dataset")):
                rec = json.loads((out / "throughplane.json").read_text())
                row["fwhm_mm"] = round(rec["profile"]["fwhm_mm"], 3)
                row["iterations"] = rec["training"]["iterations"]
            print(json.dumps(row), flush=True)
            with open(Path(args.workdir) / "results.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| protocol | scan | method | PSNR | SSIM | vs B-spline | s | FWHM mm |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    base = {(r["protocol"], r["scan"]): r for r in rows if r["method"] == "bspline"}
    for r in rows:
        b = base.get((r["protocol"], r["scan"]))
        gain = f"{r['psnr'] - b['psnr']:+.2f} dB / {r['ssim'] - b['ssim']:+.3f}" if b else "-"
        lines.append(
            f"| {r['protocol']} | {r['scan']} | {r['method']} | {r['psnr']:.2f} | "
            f"{r['ssim']:.4f} | {gain} | {r['seconds']:.0f} | {r.get('fwhm_mm', '-')} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--protocols", default=",".join(THICK_PROTOCOLS))
    ap.add_argument("--methods", default="bspline,self_rect,dataset_rect")
    ap.add_argument("--budget", default="5m", help="training budget per model")
    ap.add_argument("--train-cases", type=int, default=2)
    ap.add_argument("--test-cases", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eclare-python", default=sys.executable)
    ap.add_argument("--eclare-patches", type=int, default=12800)
    args = ap.parse_args(argv)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    budget = parse_duration(args.budget)
    rows = []
    for p in args.protocols.split(","):
        rows += bench_protocol(args, p, args.methods.split(","), budget)
    text = table(rows)
    print(text)
    (Path(args.workdir) / "table.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
