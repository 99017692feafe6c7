"""What ``mrisr_predict`` reads and writes: scan files and DICOM series, and their names.

Inputs (``-i IN``): every image file in IN, every sub-folder of IN holding one DICOM series,
or, when IN itself holds DICOM files, IN as one series. Outputs (``--output-format``):

- ``same`` (default): a file input gives a file of the same name; a DICOM input a DICOM
  series (a folder named after the input);
- ``nifti``: ``<name>.nii.gz``;
- ``dicom``: a folder ``<name>/`` holding the SR series.

With ``--save-uncertainty`` the standard-deviation map lies beside the SR scan, in the same
format: ``<name>_uncertainty<ending>`` or ``<name>_uncertainty/``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from mrisr.imageio.dicom import DicomSeries, read_series, series_ids, write_series
from mrisr.imageio.sitk_io import as_checked_volume, is_complete_image, read_scan, write_scan
from mrisr.utilities.errors import IntegrityError

OUTPUT_FORMATS = ("same", "nifti", "dicom")
NIFTI = ".nii.gz"


@dataclass(frozen=True)
class InputScan:
    path: Path  # a file, or a folder holding one DICOM series
    name: str  # the output name: file name, or the folder's name for a series

    @property
    def is_dicom(self) -> bool:
        return self.path.is_dir()

    @property
    def stem(self) -> str:
        if self.is_dicom:
            return self.name
        low = self.name.lower()
        for ending in (".nii.gz", ".nhdr", ".nrrd", ".nii", ".mha", ".mhd", ".tiff", ".tif"):
            if low.endswith(ending):
                return self.name[: -len(ending)]
        return Path(self.name).stem


def discover(folder: Path, image_endings: tuple[str, ...]) -> list[InputScan] | None:
    """IN as one DICOM series, or None when IN is a plain folder of scans.

    IN is looked at as a series only if it holds files that are not named like images
    (DICOM files rarely have an ending), so a folder of NIfTI files is never scanned by GDCM.
    """
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    if not any(not p.name.lower().endswith(image_endings) for p in files):
        return None
    ids = series_ids(folder)
    if not ids:
        return None
    if len(ids) > 1:
        raise IntegrityError(
            f"{folder}: holds {len(ids)} DICOM series ({', '.join(ids)}); put each series in "
            "a folder of its own (sub-folders of the input folder are predicted one by one)"
        )
    return [InputScan(folder, folder.name)]


def read_input(scan: InputScan) -> tuple[sitk.Image, DicomSeries | None]:
    """The scan as a float32 3D image (checked), and its series when it is DICOM."""
    if scan.is_dicom:
        series = read_series(scan.path)
        return as_checked_volume(scan.path, series.image), series
    return read_scan(scan.path), None


def writes_dicom(scan: InputScan, fmt: str) -> bool:
    return fmt == "dicom" or (fmt == "same" and scan.is_dicom)


def output_path(scan: InputScan, out: Path, fmt: str) -> Path:
    if writes_dicom(scan, fmt):
        return out / scan.stem
    if fmt == "nifti":
        return out / f"{scan.stem}{NIFTI}"
    return out / scan.name


def uncertainty_path(dest: Path, scan: InputScan, fmt: str) -> Path:
    if writes_dicom(scan, fmt):
        return dest.with_name(f"{dest.name}_uncertainty")
    stem = InputScan(dest, dest.name).stem
    return dest.with_name(f"{stem}_uncertainty{dest.name[len(stem) :]}")


def write_output(
    image: sitk.Image,
    dest: Path,
    as_dicom: bool,
    source: DicomSeries | None,
    description: str,
    derivation: str,
) -> None:
    """Write a scan file (format from the ending) or a DICOM series folder, atomically."""
    if as_dicom:
        write_series(image, dest, source, description=description, derivation=derivation)
    else:
        write_scan(image, dest)


def series_label(source: DicomSeries | None, scan: InputScan) -> str:
    """How the SR series names its source: series number and description, or the file."""
    if source is None:
        return scan.name
    number = source.tags.get("0020|0011", "").strip()
    desc = source.description
    return " ".join(s for s in (f"#{number}" if number else "", desc) if s) or source.series_uid


def output_done(path: Path) -> bool:
    """``--continue`` keeps an output only if it is a complete, readable image."""
    if not Path(path).exists():
        return False
    if is_complete_image(path):
        return True
    logging.getLogger(__name__).warning("%s is incomplete or unreadable: redoing it", path)
    return False
