"""DICOM series in and out, with SimpleITK (GDCM): what scanners export and PACS import.

Reading: a folder holding exactly one DICOM series (GDCM series discovery; slices sorted
by position along the slice normal by ``ImageSeriesReader``). Two or more series in one
folder is a one-line error naming their Series Instance UIDs.

Writing: one file per slice (``IM_0001.dcm``, ...) with the geometry of the image (pixel
spacing, Image Position (Patient) of every slice, Image Orientation (Patient), slice
thickness and spacing), a new Series Instance UID, ``ImageType`` DERIVED\\SECONDARY, and the
patient, study and frame-of-reference tags of the source series copied unchanged (no new
patient identity is invented; without a source they are left empty). Pixel values are
stored as int16 with one Rescale Slope per series (``0028|1053``): a reader gets the
intensities back to within half the slope (1/64000 of the largest magnitude).
"""

from __future__ import annotations

import contextlib
import locale
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mrisr.utilities.errors import IntegrityError

# tags copied from the source series: patient, study, frame of reference, acquisition context
COPIED_TAGS = (
    "0010|0010",  # Patient's Name
    "0010|0020",  # Patient ID
    "0010|0030",  # Patient's Birth Date
    "0010|0040",  # Patient's Sex
    "0010|1010",  # Patient's Age
    "0020|000d",  # Study Instance UID
    "0008|0020",  # Study Date
    "0008|0030",  # Study Time
    "0008|0050",  # Accession Number
    "0008|0090",  # Referring Physician's Name
    "0008|1030",  # Study Description
    "0020|0010",  # Study ID
    "0020|0052",  # Frame of Reference UID (same physical frame as the source)
    "0008|0060",  # Modality
    "0018|0015",  # Body Part Examined
    "0008|0070",  # Manufacturer
    "0018|0087",  # Magnetic Field Strength
)
PATIENT_TAGS = ("0010|0010", "0010|0020", "0010|0030", "0010|0040")
SERIES_UID = "0020|000e"
SERIES_DESCRIPTION = "0008|103e"
SERIES_NUMBER = "0020|0011"
MAX_INT16 = 32000.0


@dataclass
class DicomSeries:
    """A series read from a folder: the image and the tags of its first slice."""

    image: sitk.Image
    series_uid: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def description(self) -> str:
        return self.tags.get(SERIES_DESCRIPTION, "").strip()


@contextlib.contextmanager
def _keep_locale():
    """GDCM sets the process locale to "C" while it reads or writes, and leaves it so: Python
    then opens text files as ASCII. Restore whatever was set before."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def new_uid() -> str:
    """A globally unique DICOM UID (the ``2.25.<UUID as integer>`` form, PS3.5 B.2)."""
    return f"2.25.{uuid.uuid4().int}"


def _quiet_series_ids(folder: Path) -> tuple[str, ...]:
    warn = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        with _keep_locale():
            return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warn)


def series_ids(folder: str | os.PathLike) -> tuple[str, ...]:
    """Series Instance UIDs of the DICOM files directly in ``folder`` (none: empty)."""
    folder = Path(folder)
    if not folder.is_dir():
        return ()
    return _quiet_series_ids(folder)


def is_dicom_folder(folder: str | os.PathLike) -> bool:
    return bool(series_ids(folder))


def _only_series(folder: Path) -> str:
    ids = series_ids(folder)
    if not ids:
        raise IntegrityError(
            f"{folder}: a folder, but it holds no DICOM series; give one scan file or a "
            "folder with the DICOM files of one series"
        )
    if len(ids) > 1:
        raise IntegrityError(
            f"{folder}: holds {len(ids)} DICOM series ({', '.join(ids)}); put each series "
            "in a folder of its own"
        )
    return ids[0]


def series_files(folder: str | os.PathLike) -> list[str]:
    """The files of the one series in ``folder``, sorted along the slice normal."""
    folder = Path(folder)
    uid = _only_series(folder)
    with _keep_locale():
        return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))


def read_series(folder: str | os.PathLike) -> DicomSeries:
    """The one DICOM series in ``folder`` as a 3D image (intensities rescaled, float)."""
    folder = Path(folder)
    uid = _only_series(folder)
    with _keep_locale():
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        with _keep_locale():
            image = reader.Execute()
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else "read error"
        raise IntegrityError(
            f"{folder}: DICOM series {uid} could not be read ({first}); export it again"
        ) from None
    tags = {k: reader.GetMetaData(0, k) for k in reader.GetMetaDataKeys(0)}
    return DicomSeries(image, uid, tags)


def _ds(value: float) -> str:
    """A Decimal String (at most 16 characters) with as many digits as fit."""
    for digits in range(12, 4, -1):
        s = f"{value:.{digits}g}"
        if len(s) <= 16:
            return s
    return f"{value:.4g}"


def _lo(text: str) -> str:
    return text[:64]


def geometry_tags(image: sitk.Image, k: int) -> dict[str, str]:
    """Per-slice geometry: position of slice ``k``, orientation, spacing, thickness."""
    d = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    sx, sy, sz = image.GetSpacing()
    pos = image.TransformIndexToPhysicalPoint((0, 0, int(k)))
    return {
        "0020|0032": "\\".join(_ds(v) for v in pos),
        "0020|0037": "\\".join(_ds(v) for v in (*d[:, 0], *d[:, 1])),
        "0028|0030": f"{_ds(sy)}\\{_ds(sx)}",  # row spacing (y), then column spacing (x)
        "0018|0050": _ds(sz),
        "0018|0088": _ds(sz),
        "0020|1041": _ds(float(np.dot(pos, np.cross(d[:, 0], d[:, 1])))),
        "0020|0013": str(k + 1),
    }


def _right_handed(image: sitk.Image) -> sitk.Image:
    """DICOM's slice normal is row x column: flip the slice order of a left-handed grid
    (same voxels at the same physical points, other index order)."""
    d = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    if np.linalg.det(d) >= 0:
        return image
    return sitk.Flip(image, (False, False, True), flipAboutOrigin=False)


def write_series(
    image: sitk.Image,
    folder: str | os.PathLike,
    source: DicomSeries | None = None,
    description: str = "mrisr SR",
    derivation: str = "",
) -> str:
    """Write ``image`` as a new DICOM series into ``folder`` (atomically); returns its UID.

    The folder is written under a temporary name beside ``folder`` and renamed at the end,
    so an interrupted run never leaves a partial series under the final name.
    """
    folder = Path(folder)
    image = _right_handed(image)
    if image.GetDimension() != 3:
        image = sitk.JoinSeries(image)
    arr = sitk.GetArrayViewFromImage(image)
    peak = float(np.abs(arr).max()) if arr.size else 0.0
    slope = peak / MAX_INT16 if peak > 0 else 1.0
    src = source.tags if source is not None else {}
    series_uid = new_uid()
    common = {k: src[k].strip() for k in COPIED_TAGS if k in src}
    for k in PATIENT_TAGS:
        common.setdefault(k, "")  # type 2: present, empty when unknown (never invented)
    common.setdefault("0020|000d", new_uid())
    common.setdefault("0020|0052", new_uid())
    common.setdefault("0008|0060", "MR")
    src_number = src.get(SERIES_NUMBER, "").strip()
    now = datetime.now()
    common.update(
        {
            SERIES_UID: series_uid,
            "0008|0008": "DERIVED\\SECONDARY",
            SERIES_DESCRIPTION: _lo(description),
            "0008|2111": derivation[:1024],
            SERIES_NUMBER: str(int(src_number) + 1000) if src_number.isdigit() else "1000",
            "0008|0021": now.strftime("%Y%m%d"),  # Series Date
            "0008|0031": now.strftime("%H%M%S"),  # Series Time
            "0028|1053": _ds(slope),  # Rescale Slope (GDCM quantises with this value)
            "0028|1052": "0",  # Rescale Intercept
            "0028|1054": "US",  # Rescale Type: unspecified
            "0028|0100": "16",  # Bits Allocated
            "0028|0101": "16",  # Bits Stored
            "0028|0102": "15",  # High Bit
            "0028|0103": "1",  # Pixel Representation: signed
        }
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        with _keep_locale():
            _write_slices(image, tmp, common)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return series_uid


def _write_slices(image: sitk.Image, tmp: Path, common: dict[str, str]) -> None:
    """One GDCM file per slice with the series tags and the slice's geometry."""
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")
    img64 = sitk.Cast(image, sitk.sitkFloat64)  # float + Rescale Slope -> int16 on disk
    for k in range(image.GetDepth()):
        sl = img64[:, :, k]
        for key, value in common.items():
            sl.SetMetaData(key, value)
        for key, value in geometry_tags(image, k).items():
            sl.SetMetaData(key, value)
        sl.SetMetaData("0008|0018", new_uid())  # SOP Instance UID
        writer.SetFileName(str(tmp / f"IM_{k + 1:04d}.dcm"))
        writer.Execute(sl)
