"""Checks at the command boundaries that keep inputs and earlier outputs safe.

Each function raises a one-line :class:`MrisrError` naming the path and the fix; they are
called before a command writes anything.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from mrisr.utilities.devices import check_device
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import load_json

#: plans and trainer names become folder names: no separators, no ``..``
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

#: the predict arguments that decide what an output file holds (``--continue`` compares them)
RESUME_KEYS = (
    "input",
    "dataset",
    "configuration",
    "trainer",
    "plans",
    "folds",
    "checkpoint",
    "tta",
    "output_format",
    "save_uncertainty",
)


def safe_name(value: str, what: str) -> str:
    """``value`` if it can be a single folder-name component; else a one-line error."""
    if not SAFE_NAME.fullmatch(str(value)) or ".." in str(value):
        raise MrisrError(
            f"{what} '{value}': only letters, digits, '_', '-' and '.' are allowed (it names a "
            "folder)"
        )
    return str(value)


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_predict_args(inp: Path, out: Path, num_parts: int, part_id: int, device: str) -> None:
    """The arguments of ``mrisr_predict`` that need no model: parts, device, -i / -o."""
    if num_parts < 1:
        raise MrisrError(f"--num-parts {num_parts}: must be at least 1")
    if not 0 <= part_id < num_parts:
        raise MrisrError(f"--part-id {part_id} must be in 0..{num_parts - 1}")
    check_device(device)
    inp, out = Path(inp).resolve(), Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise MrisrError(f"-o {out}: is a file; give a folder for the super-resolved scans")
    if _is_within(out, inp):
        raise MrisrError(
            f"-o {out}: lies inside the input folder {inp}; choose an output folder outside it "
            "(inputs are never overwritten)"
        )


def _recorded_args(out: Path) -> list[tuple[Path, dict]]:
    found = []
    for f in sorted(out.glob("predict_args*.json")):
        try:
            data = load_json(f)
        except (ValueError, OSError):
            raise MrisrError(
                f"{f}: unreadable record of an earlier run; delete it and drop --continue to "
                "redo every scan"
            ) from None
        if isinstance(data, dict):
            found.append((f, data))
    return found


def check_resume_args(out: Path, args: dict, resume: bool) -> None:
    """With ``--continue``, the outputs kept must have been made with the same model and
    options: refuse when an earlier run's ``predict_args*.json`` records others."""
    if not resume or not Path(out).is_dir():
        return
    for f, old in _recorded_args(Path(out)):
        for k in RESUME_KEYS:
            if k in old and old[k] != args.get(k):
                raise MrisrError(
                    f"{out}: --continue would keep scans made with {k} {old[k]!r} (see {f.name}), "
                    f"not {args.get(k)!r}; drop --continue to redo them or choose another -o"
                )


def check_finite_output(image, source: Path) -> None:
    """A prediction with NaN/Inf (or, from a broken model, nothing but zeros) is not
    written."""
    import SimpleITK as sitk

    arr = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(arr).all():
        raise MrisrError(
            f"{source}: the model produced NaN/Inf voxels; its checkpoint is damaged or "
            "diverged: retrain it (nothing was written for this scan)"
        )


def check_finite_network(net, path: Path) -> None:
    """Refuse a network with NaN/Inf parameters (a diverged or damaged checkpoint)."""
    for name, p in net.state_dict().items():
        if p.is_floating_point() and not bool(p.isfinite().all()):
            raise MrisrError(
                f"{path}: weight '{name}' holds NaN/Inf (training diverged or the file is "
                "damaged); retrain the fold or use another checkpoint (-chk)"
            )


# ----------------------------------------------------------- raw files' content fingerprint
CHUNK = 1 << 20


def content_hash(path: str | os.PathLike) -> str:
    """size + mtime + sha1 of the first and last MiB: changes when a raw scan is replaced
    or edited (what decides whether a preprocessed case is stale). A folder (a DICOM
    series): the names and hashes of its files."""
    p = Path(path)
    if p.is_dir():
        h = hashlib.sha1()
        for f in sorted(x for x in p.iterdir() if x.is_file()):
            h.update(f"{f.name}:{content_hash(f)}".encode())
        return h.hexdigest()[:20]
    st = p.stat()
    h = hashlib.sha1(f"{st.st_size}:{st.st_mtime_ns}".encode())
    with open(p, "rb") as f:
        h.update(f.read(CHUNK))
        if st.st_size > CHUNK:
            f.seek(max(CHUNK, st.st_size - CHUNK))
            h.update(f.read(CHUNK))
    return h.hexdigest()[:20]
