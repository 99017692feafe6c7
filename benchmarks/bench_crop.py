"""Time cropping a random 48x48 LR patch with its 96x96 HR partner from the preprocessed store.

Bar: <= 1 ms per pair of crops on the 2-core machine.

    python benchmarks/bench_crop.py                     # a synthetic 128x128x72 / 256x256x72 case
    python benchmarks/bench_crop.py PREPROCESSED_FOLDER # every paired case of a real store
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mrisr.preprocessing import storage


def synthetic_store(folder: Path) -> list[str]:
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[0:72, 0:256, 0:256].astype(np.float32)
    hr = 0.5 + 0.3 * np.sin(x / 7) * np.cos(y / 11) + 0.05 * rng.standard_normal(x.shape)
    hr *= ((x - 128) ** 2 + (y - 128) ** 2) < 110**2
    lr = hr.reshape(72, 128, 2, 128, 2).mean(axis=(2, 4))
    storage.save_array(folder / "bench_hr.b2nd", hr.astype(np.float32))
    storage.save_array(folder / "bench_lr.b2nd", lr.astype(np.float32))
    return ["bench"]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tmp)
        if len(sys.argv) > 1:
            cases = sorted(
                p.name[: -len("_lr.b2nd")]
                for p in folder.glob("*_lr.b2nd")
                if (folder / p.name.replace("_lr.", "_hr.")).is_file()
            )
        else:
            cases = synthetic_store(folder)
        arrays = [
            (
                storage.open_array(folder / f"{c}_lr.b2nd"),
                storage.open_array(folder / f"{c}_hr.b2nd"),
            )
            for c in cases
        ]
        rng = np.random.default_rng(0)
        n = 5000
        picks = rng.integers(0, len(arrays), n)
        t0 = time.perf_counter()
        for i in range(n):
            lr, hr = arrays[picks[i]]
            zs, ys, xs = lr.shape
            zz = rng.integers(zs)
            yy = rng.integers(0, ys - 48 + 1)
            xx = rng.integers(0, xs - 48 + 1)
            a = lr[zz, yy : yy + 48, xx : xx + 48]
            b = hr[zz, 2 * yy : 2 * yy + 96, 2 * xx : 2 * xx + 96]
        dt = (time.perf_counter() - t0) / n * 1e3
        assert a.shape == (48, 48) and b.shape == (96, 96)
        print(f"cases: {len(cases)}  crops: {n}")
        print(
            f"48x48 LR + 96x96 HR crop from the preprocessed store: {dt:.3f} ms per pair (bar: <= 1 ms)"
        )


if __name__ == "__main__":
    main()
