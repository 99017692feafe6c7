"""The embedded demo dataset: paired real-like LR/HR brain MRI simulated from MNI152.

The toolkit is meant for *real* low-resolution scans, whose degradation is not a blur plus
decimation. To demonstrate it without shipping patient data, this module simulates two MR
acquisitions of the same object per session from the 1 mm MNI152 T1 template bundled with
nilearn (nothing is downloaded):

Object
    The template (skull-stripped, 1 mm, background 0) is cropped to the head and upsampled
    in-plane to 0.5 mm by Fourier zero-padding, once per build. Each *case* (session) sees
    the template through its own pose: a random small 3D rotation, a shift and a mild
    anisotropic scaling (a different "subject"), and its own axial slab (different cases
    cover different, partly overlapping, z ranges).

Acquisition (per scan; see :data:`HR_PROTOCOL` and :data:`LR_PROTOCOL`)
    1. *Slice profile*: every slice integrates the object over its 2.7 mm slab (box profile,
       5-point midpoint rule). LR and HR of a pair use the same slice positions.
    2. *Fine grid*: the object is sampled on a 1 mm in-plane grid that spans exactly the
       scan's field of view (``fine_matrix * fine_spacing == matrix * spacing``).
    3. *Complex object*: magnitude times a smooth multiplicative bias field, a global scale,
       and a smooth phase map (constant + linear + quadratic).
    4. *k-space*: 2D FFT per slice; only the central ``matrix x matrix`` frequencies are
       kept (truncation at a non-integer factor for LR: 2.7 / 1.25 = 2.16 relative to HR),
       complex Gaussian noise is added to the kept samples, then the raw-data filter
       (apodisation window) is applied to signal and noise alike (the noise is coloured,
       as on a scanner).
    5. *Image*: magnitude of the inverse FFT at size ``matrix``: an image exactly on the
       scan's grid, no interpolation involved.

    HR: 1.25 mm, 160 x 160 (FOV 200 mm), mild Tukey filter, low noise. LR: 2.7 mm, 80 x 80
    (FOV 216 mm, 8 % larger, as 430 vs 400 mm in Huang et al. 2021), Hamming filter,
    several times more noise. Both: 15 contiguous 2.7 mm slices.

Motion
    Between the HR and LR acquisition of a pair the object moves rigidly: an in-plane
    rotation of up to 3 degrees, an in-plane shift of up to 2 mm and a through-plane shift
    of up to 0.5 mm. The motion is recorded per case in ``demo_acquisition.json``.

Geometry
    Both scans are written in the template's physical space (same direction matrix, LPS
    axes, each grid centred on the same point), so physical space is the common frame of
    a pair, up to the recorded motion.

Layout (the raw dataset contract of ARCHITECTURE.md)::

    DatasetNNN_Name/
      dataset.json, demo_acquisition.json
      imagesHR/demo_000.nii.gz ...   num_pairs pairs + one HR-only case
      imagesLR/demo_000.nii.gz ...   num_pairs pairs + one LR-only case
      imagesHRTs/, imagesLRTs/       num_test_pairs held-out pairs

The physics of one scan is :mod:`mrisr.dataset.demo_acquisition`, the sessions (cases, slabs,
poses, motion) :mod:`mrisr.dataset.demo_cases`; this module builds, reuses or replaces the
dataset.

``--protocol`` picks the LR acquisition: the two fixed ones, or ``random:SEED``, one drawn
from the protocol family (:mod:`mrisr.dataset.demo_protocol_family`: other filters,
contrasts, noise maps, grids, anatomy).

Command line: ``python -m mrisr.dataset.demo OUTDIR [--seed N] [--num-cases N] [--protocol P]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import SimpleITK as sitk
from tqdm import tqdm

from mrisr.dataset.demo_acquisition import (
    FILE_ENDING,
    GENERATOR_VERSION,
    HR_PROTOCOL,
    NUM_SLICES,
    PARAMS_FILE,
    SLICE_THICKNESS_MM,
    TEMPLATE_FILE,
    load_template,
    template_path,
)
from mrisr.dataset.demo_cases import case_folders, plan_cases, simulate_case, slab_centres
from mrisr.dataset.demo_protocol_family import describe as describe_acquisition
from mrisr.dataset.demo_protocol_family import resolve as resolve_protocol
from mrisr.dataset.demo_thick_slice import THICK_PROTOCOLS, build_thick_dataset
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import atomic_path, load_json, save_json

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- dataset


def _build_parameters(
    name: str, seed: int, num_pairs: int, num_test_pairs: int, protocol: str = "default"
) -> dict:
    params = {
        "generator_version": GENERATOR_VERSION,
        "name": name,
        "seed": seed,
        "num_pairs": num_pairs,
        "num_test_pairs": num_test_pairs,
    }
    if protocol != "default":
        params["protocol"] = protocol
    return params


def _expected_files(num_pairs: int, num_test_pairs: int) -> list[str]:
    files = ["dataset.json", PARAMS_FILE]
    for case in plan_cases(num_pairs, num_test_pairs):
        files += [f"{folder}/{case.name}{FILE_ENDING}" for folder in case_folders(case.role)]
    return files


def _is_complete(folder: Path, params: dict) -> bool:
    """True if ``folder`` holds a demo dataset built with ``params``; raises if foreign."""
    marker = folder / PARAMS_FILE
    if not marker.is_file():
        raise MrisrError(
            f"{folder} exists and is not a demo dataset built by mrisr; move it away, or give "
            "mrisr_demo another --workdir"
        )
    try:
        built = load_json(marker).get("build", {})
    except (OSError, ValueError):
        built = {}
    if built != params:
        raise MrisrError(
            f"{folder} was built with other parameters ({built}); delete it to rebuild it "
            "(API: build_demo_dataset(..., overwrite=True)), or give mrisr_demo another --workdir"
        )
    missing = [
        f
        for f in _expected_files(params["num_pairs"], params["num_test_pairs"])
        if not (folder / f).is_file()
    ]
    if missing:
        logger.warning("%s is incomplete (missing %s); rebuilding it", folder, missing[0])
        return False
    return True


def build_demo_dataset(
    raw_root: str | os.PathLike,
    dataset_id: int = 1,
    name: str = "MNIDemo",
    seed: int = 0,
    num_pairs: int = 6,
    num_test_pairs: int = 2,
    overwrite: bool = False,
    protocol: str = "default",
) -> Path:
    """Simulate the demo dataset into ``raw_root/DatasetNNN_Name`` and return that folder.

    ``num_pairs`` training sessions with both an HR and an LR scan, one HR-only and one
    LR-only session, and ``num_test_pairs`` held-out sessions in ``imagesHRTs`` /
    ``imagesLRTs``. Deterministic for a given ``seed``. An existing complete dataset built
    with the same parameters is returned as is (``overwrite=True`` rebuilds it). The build
    happens in a hidden sibling folder that is renamed at the end, so an interrupted build
    never leaves a half-written dataset behind.
    """
    _check_arguments(dataset_id, name, num_pairs, num_test_pairs, seed, protocol)
    raw_root = Path(raw_root)
    folder_name = f"Dataset{dataset_id:03d}_{name}"
    final = raw_root / folder_name
    params = _build_parameters(name, seed, num_pairs, num_test_pairs, protocol)
    _check_id_free(raw_root, dataset_id, folder_name)
    replace = final.exists()  # overwrite=True, or an incomplete earlier demo build
    if replace and not overwrite and _is_complete(final, params):
        logger.info("demo dataset already built: %s", final)
        return final

    template_path()  # fail early, before creating anything, if nilearn is missing
    raw_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder_name}.build-", dir=raw_root))
    try:
        _build_into(tmp, params)
        try:
            _swap_into_place(tmp, final, replace)
        except OSError:
            # another process finished the same build first: keep theirs if it is complete
            if replace or not (final.exists() and _is_complete(final, params)):
                raise
            logger.info("demo dataset was built concurrently: %s", final)
            shutil.rmtree(tmp, ignore_errors=True)
            return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("demo dataset written to %s", final)
    return final


def _check_arguments(
    dataset_id: int, name: str, num_pairs: int, num_test_pairs: int, seed: int, protocol: str
) -> None:
    if not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        raise MrisrError(f"dataset id must be an integer in 1..999, got {dataset_id!r}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise MrisrError(f"dataset name must be letters, digits, '_' or '-', got {name!r}")
    if num_pairs < 1:
        raise MrisrError(f"num_pairs must be >= 1, got {num_pairs}")
    if num_test_pairs < 0:
        raise MrisrError(f"num_test_pairs must be >= 0, got {num_test_pairs}")
    if seed < 0:
        raise MrisrError(f"seed must be >= 0, got {seed}")
    resolve_protocol(protocol)


def _check_id_free(raw_root: Path, dataset_id: int, folder_name: str) -> None:
    """A dataset id names one dataset: another DatasetNNN_* with this id is an error."""
    if not raw_root.is_dir():
        return
    clash = [
        p.name
        for p in raw_root.glob(f"Dataset{dataset_id:03d}_*")
        if p.is_dir() and p.name != folder_name
    ]
    if clash:
        raise MrisrError(
            f"dataset id {dataset_id} is already used by {clash[0]} in {raw_root}; "
            "choose another id"
        )


def _swap_into_place(tmp: Path, final: Path, replace: bool) -> None:
    """Rename the finished build to ``final``; with ``replace`` an existing one is removed.

    Without ``replace`` an existing ``final`` (a concurrent build) makes this raise OSError.
    """
    old = None
    if replace and final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _build_into(folder: Path, params: dict) -> None:
    t0 = time.perf_counter()
    seed = params["seed"]
    acquisition = resolve_protocol(params.get("protocol", "default"))
    lr_protocol = acquisition.protocol
    template = load_template(anatomy=acquisition.anatomy)
    cases = plan_cases(params["num_pairs"], params["num_test_pairs"])
    for case, z in zip(cases, slab_centres(template, len(cases), seed)):
        case.slab_centre_z = z

    infos: dict[str, Any] = {}
    for case in tqdm(cases, desc="simulating demo scans", unit="case", disable=None):
        images, info = simulate_case(template, case, seed, lr_protocol)
        for folder_name in case_folders(case.role):
            kind = folder_name[len("images") :][:2]  # "HR" or "LR"
            dest = folder / folder_name / f"{case.name}{FILE_ENDING}"
            with atomic_path(dest) as tmp_file:
                sitk.WriteImage(images[kind], str(tmp_file), True)
        infos[case.name] = info
        logger.debug("simulated %s (%s)", case.name, case.role)

    n_train = sum(c.role != "test_pair" for c in cases)
    save_json(
        {
            "name": params["name"],
            "description": (
                "mrisr demo: 2D multi-slice T1 brain MRI simulated from the MNI152 template "
                "(nilearn). Each session has an HR scan (1.25 x 1.25 x 2.7 mm) and a real-like "
                f"LR scan ({describe_acquisition(acquisition)}, x 2.7 mm, k-space "
                "truncation, more noise, rigid motion between the two). See "
                "documentation/demo_dataset.md."
            ),
            "modality": "T1",
            "file_ending": FILE_ENDING,
            "numTraining": n_train,
        },
        folder / "dataset.json",
    )
    save_json(
        {
            "build": params,
            "template": TEMPLATE_FILE,
            "protocols": {p.name: asdict(p) for p in (HR_PROTOCOL, lr_protocol)},
            "lr_protocol": params.get("protocol", "default"),
            "anatomy": acquisition.anatomy,
            "num_slices": NUM_SLICES,
            "slice_thickness_mm": SLICE_THICKNESS_MM,
            "cases": infos,
        },
        folder / PARAMS_FILE,
    )
    logger.info("simulated %d cases in %.1f s", len(cases), time.perf_counter() - t0)


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mrisr.dataset.demo",
        description="Build the mrisr demo dataset (simulated real-like LR/HR MRI pairs from "
        "the MNI152 template bundled with nilearn) into OUTDIR/DatasetNNN_Name.",
    )
    parser.add_argument("outdir", help="raw dataset root (e.g. $mrisr_raw)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--num-cases",
        "--num-pairs",
        dest="num_pairs",
        type=int,
        default=6,
        help="number of training LR/HR pairs (default 6; one HR-only and one LR-only case "
        "are always added)",
    )
    parser.add_argument("--num-test-pairs", type=int, default=2, help="held-out pairs (default 2)")
    parser.add_argument("-d", "--dataset-id", type=int, default=1, help="dataset id (default 1)")
    parser.add_argument("--name", default="MNIDemo", help="dataset name (default MNIDemo)")
    parser.add_argument("--overwrite", action="store_true", help="rebuild if it exists")
    parser.add_argument(
        "--protocol",
        default="default",
        help="the LR acquisition (default: 2.7 mm, Hamming; fermi_pf: 3 mm, Fermi filter, "
        "5/8 partial Fourier, less noise; random:SEED: one drawn from the protocol family, "
        "see mrisr.dataset.demo_protocol_family; thick4, thick3gap, thick5: thick-slice scans "
        "for mrisr_throughplane, see mrisr.dataset.demo_thick_slice)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.protocol in THICK_PROTOCOLS:  # thick-slice scans and their isotropic truth
        folder = Path(args.outdir) / f"Dataset{args.dataset_id:03d}_{args.name}"
        path = build_thick_dataset(
            folder, args.protocol, args.num_pairs, args.num_test_pairs, args.seed
        )
        print(f"thick-slice demo dataset ready: {path}")
        return 0
    try:
        path = build_demo_dataset(
            args.outdir,
            dataset_id=args.dataset_id,
            name=args.name,
            seed=args.seed,
            num_pairs=args.num_pairs,
            num_test_pairs=args.num_test_pairs,
            overwrite=args.overwrite,
            protocol=args.protocol,
        )
    except MrisrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"demo dataset ready: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
