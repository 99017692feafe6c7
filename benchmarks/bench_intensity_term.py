"""How much of a held-out PSNR is intensity, not resolution: each prediction of a quality
harness run scored as ``bench_quality.py`` scores it, and again after a monotone intensity
map fitted from the prediction to its registered HR (a diagnostic, never part of mrisr).

The metrics divide each image by its own foreground 99.5th percentile
(:mod:`mrisr.metrics.fidelity`). A blurred, noisy LR has another percentile than the HR, and
another contrast moves it again, so bicubic's PSNR carries an intensity term that differs
between protocols. The gap between the mapped scores compares the configurations with that
term taken out. Reads the harness's workdir (``<workdir>/<protocol>/predictions``)::

    python benchmarks/bench_intensity_term.py --workdir /tmp/qall \\
        --protocols random:1019,random:1020 --configs bicubic,dsgan_edsr
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from bench_quality import TRAINER, slug  # noqa: E402


def scores(prediction: Path, reference: Path) -> tuple[float, float]:
    """(PSNR as the harness scores it, PSNR after the monotone map prediction -> HR)."""
    import SimpleITK as sitk

    from mrisr.metrics.fidelity import aligned_in_physical_space, psnr
    from mrisr.preprocessing.pair_noise import _monotone_map

    pred_img = sitk.ReadImage(str(prediction), sitk.sitkFloat32)
    ref_img = sitk.ReadImage(str(reference), sitk.sitkFloat32)
    r, q, mask, _ = aligned_in_physical_space(ref_img, pred_img)
    kx, ky = _monotone_map(q[mask].astype(np.float64), r[mask].astype(np.float64), bins=128)
    mapped = q.copy()
    mapped[mask] = np.interp(q[mask], kx, ky)
    return psnr(r, q, mask), psnr(r, mapped, mask)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, help="bench_quality.py's --workdir")
    p.add_argument("--protocols", required=True, help="comma-separated, e.g. random:1019")
    p.add_argument("--configs", default="bicubic,dsgan_edsr")
    args = p.parse_args(argv)
    configs = args.configs.split(",")
    print("| protocol | configuration | PSNR (as scored) | after the monotone map | map's share |")
    print("|---|---|---|---|---|")
    for protocol in args.protocols.split(","):
        work = Path(args.workdir) / slug(protocol)
        hr = next((work / "mrisr_raw").glob("Dataset*")) / "imagesHRTs"
        for config in configs:
            preds = sorted((work / "predictions" / TRAINER / config).glob("*.nii.gz"))
            if not preds:
                print(f"| {protocol} | {config} | no predictions | | |")
                continue
            rows = np.array([scores(f, hr / f.name) for f in preds])
            a, b = rows.mean(axis=0)
            print(f"| {protocol} | {config} | {a:.2f} | {b:.2f} | +{b - a:.2f} dB |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
