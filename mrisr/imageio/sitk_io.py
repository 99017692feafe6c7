"""Reading and writing scans with SimpleITK, with the checks a user's data deserve.

Conventions: SimpleITK index order is (x, y, z); numpy arrays from it are (z, y, x).
Every scan is handled as a 3D volume: a 2D image becomes a one-slice volume. A scan is a
file SimpleITK reads, or a folder holding one DICOM series (:mod:`mrisr.imageio.dicom`).
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mrisr.imageio.dicom import read_series, series_files
from mrisr.utilities.errors import IntegrityError
from mrisr.utilities.file_io import IncompleteWrite, atomic_path, verify_file

#: file endings read as scans (besides DICOM series folders)
IMAGE_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".tif", ".tiff", ".png")


@dataclass
class Geometry:
    """Voxel grid in physical space (SimpleITK order: index axes x, y, z)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 values, row-major; column j = physical direction of axis j

    @classmethod
    def of(cls, image: sitk.Image) -> Geometry:
        return cls(
            size=tuple(int(v) for v in image.GetSize()),
            spacing=tuple(float(v) for v in image.GetSpacing()),
            origin=tuple(float(v) for v in image.GetOrigin()),
            direction=tuple(float(v) for v in image.GetDirection()),
        )

    @classmethod
    def from_json(cls, d: dict) -> Geometry:
        return cls(
            size=tuple(int(v) for v in d["size"]),
            spacing=tuple(float(v) for v in d["spacing"]),
            origin=tuple(float(v) for v in d["origin"]),
            direction=tuple(float(v) for v in d["direction"]),
        )

    def to_json(self) -> dict:
        return {
            "size": list(self.size),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
        }

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    def index_to_physical(self, index_xyz: np.ndarray) -> np.ndarray:
        """Continuous indices (..., 3) in (x, y, z) order -> physical points (..., 3)."""
        idx = np.asarray(index_xyz, dtype=np.float64)
        return np.asarray(self.origin) + (idx * np.asarray(self.spacing)) @ self.direction_matrix.T

    def physical_to_index(self, points: np.ndarray) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64) - np.asarray(self.origin)
        return (p @ self.direction_matrix) / np.asarray(self.spacing)

    def corners(self) -> np.ndarray:
        """Physical positions of the 8 outer corners of the field of view (voxel edges)."""
        lo = np.full(3, -0.5)
        hi = np.asarray(self.size, dtype=np.float64) - 0.5
        c = np.array(
            [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
        )
        return self.index_to_physical(c)

    def extent_mm(self) -> list[float]:
        return [float(n * s) for n, s in zip(self.size, self.spacing)]

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def _is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def nifti_header_problem(header) -> str | None:
    """What ITK would silently paper over in a NIfTI header: a zero dimension (read as one
    slice), a zero/negative/non-finite voxel spacing (read as 1 mm), a sheared sform (ITK
    falls back to the qform). None when the header is sound."""
    dim = [int(v) for v in header["dim"]]
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        return f"header dim[0]={ndim} is not 1..7"
    for k in range(1, ndim + 1):
        if dim[k] < 1:
            return f"header dim[{k}]={dim[k]} (a zero-sized axis); fix the header or export again"
    pixdim = [float(v) for v in header["pixdim"]]
    for k in range(1, min(ndim, 3) + 1):
        if not np.isfinite(pixdim[k]) or pixdim[k] <= 0:
            return (
                f"header voxel spacing pixdim[{k}]={pixdim[k]:g} (ITK would read it as 1 mm); "
                "write the real spacing into the header"
            )
    sform, code = header.get_sform(coded=True)
    if code and sform is not None:
        m = np.asarray(sform, dtype=np.float64)[:3, :3]
        norms = np.linalg.norm(m, axis=0)
        if np.all(norms > 0):
            u = m / norms
            if np.abs(u.T @ u - np.eye(3)).max() > 1e-3:
                return (
                    "sheared (non-orthogonal) sform direction; ITK cannot represent it and "
                    "would use the qform instead: resample the scan onto an orthogonal grid"
                )
    return None


def raw_nifti_header(path: Path):
    """The NIfTI header as stored (nibabel's loader silently "fixes" zero pixdims to 1)."""
    import io

    import nibabel as nib

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        head = f.read(540)
    size_le = int.from_bytes(head[:4], "little")
    size_be = int.from_bytes(head[:4], "big")
    cls = nib.Nifti2Header if 540 in (size_le, size_be) else nib.Nifti1Header
    return cls.from_fileobj(io.BytesIO(head), check=False)


def _check_complete(path: Path) -> int:
    """Detect truncated files, which some ImageIOs read without complaint.

    For NIfTI, also returns the number of non-finite voxels in the stored data: ITK's
    NIfTI reader silently replaces NaN, so it is counted on the raw data with nibabel.
    """
    if _is_nifti(path):
        import nibabel as nib

        try:
            nimg = nib.load(str(path))
            problem = nifti_header_problem(raw_nifti_header(path))
            data = None if problem else np.asarray(nimg.dataobj)
        except Exception as e:  # nibabel raises many types for broken files
            raise IntegrityError(
                f"{path}: truncated or corrupt NIfTI file ({type(e).__name__}); "
                "copy or export it again"
            ) from None
        if problem:
            raise IntegrityError(f"{path}: {problem}")
        if data.dtype.kind in "fc":
            return int((~np.isfinite(data)).sum())
        return 0
    if path.name.lower().endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                while f.read(1 << 24):
                    pass
        except (EOFError, OSError, zlib.error) as e:
            raise IntegrityError(
                f"{path}: truncated or corrupt compressed file ({e}); copy or export it again"
            ) from None
    return 0


def read_header(path: str | Path) -> sitk.ImageFileReader:
    """Read the header only; IntegrityError naming the file if it is not a readable image."""
    path = Path(path)
    reader = sitk.ImageFileReader()
    if path.is_dir():
        reader.SetFileName(series_files(path)[0])
        reader.ReadImageInformation()
        return reader
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise IntegrityError(
            f"{path}: not a readable image (unknown format or corrupt header); "
            "export it as NIfTI (.nii.gz) or another format SimpleITK reads"
        ) from None
    return reader


def read_scan(path: str | Path, check: bool = True) -> sitk.Image:
    """Read a scan as a 3D float32 image; a 2D image becomes a one-slice volume.

    With ``check`` the file is validated: readable, complete, one channel, at most 3D,
    finite and not constant. Each failure is an IntegrityError naming the file and the fix.
    """
    path = Path(path)
    if path.is_dir():
        image = read_series(path).image
        return as_checked_volume(path, image, check)
    reader = read_header(path)
    dim = reader.GetDimension()
    if dim > 3 and any(s > 1 for s in reader.GetSize()[3:]):
        raise IntegrityError(
            f"{path}: {dim}D image of size {reader.GetSize()}; mrisr needs one 3D (or 2D) scan "
            "per file: split the series into separate files"
        )
    if reader.GetNumberOfComponents() != 1:
        raise IntegrityError(
            f"{path}: image has {reader.GetNumberOfComponents()} channels per voxel; "
            "save one channel (e.g. the magnitude) per file"
        )
    n_nonfinite = _check_complete(path) if check else 0
    try:
        image = reader.Execute()
    except RuntimeError:
        raise IntegrityError(
            f"{path}: could not read the voxel data (truncated or corrupt); export it again"
        ) from None
    return as_checked_volume(path, image, check, n_nonfinite)


def as_checked_volume(
    path: Path, image: sitk.Image, check: bool = True, n_nonfinite: int = 0
) -> sitk.Image:
    """A read image as a float32 3D volume; with ``check``: finite and not constant."""
    if image.GetDimension() == 4:
        image = image[:, :, :, 0]
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    image = sitk.Cast(image, sitk.sitkFloat32)
    if check:
        arr = sitk.GetArrayViewFromImage(image)
        n_bad = max(n_nonfinite, int((~np.isfinite(arr)).sum()))
        if n_bad:
            raise IntegrityError(
                f"{path}: {n_bad} voxel(s) are NaN or Inf; replace them (e.g. by 0) and retry"
            )
        if float(arr.max()) == float(arr.min()):
            raise IntegrityError(
                f"{path}: image is empty (every voxel equals {float(arr.min())}); "
                "remove the file or export the scan again"
            )
    return image


def write_scan(image: sitk.Image, path: str | Path) -> None:
    """Write atomically and verified; the file format follows the ending of ``path``.

    ITK's writers do not always raise on a short write (the NIfTI writer prints ``NWAD:
    wrote only 0 of ... bytes`` and returns): the temporary file is read back (gzip stream
    to its CRC, header, voxel count) before it is renamed over ``path``.
    """
    path = Path(path)
    size = tuple(int(v) for v in image.GetSize())

    def readable(tmp: Path) -> None:
        try:
            r = sitk.ImageFileReader()
            r.SetFileName(str(tmp))
            r.ReadImageInformation()
        except RuntimeError:
            raise IncompleteWrite("the header cannot be read back") from None
        got = tuple(int(v) for v in r.GetSize())[: len(size)]
        if got != size:
            raise IncompleteWrite(f"size {got} read back, {size} written")
        if not _is_nifti(path) or path.name.lower().endswith(".gz"):
            return
        need = int(np.prod(size)) * image.GetSizeOfPixelComponent()
        if tmp.stat().st_size < need:
            raise IncompleteWrite(f"{tmp.stat().st_size} bytes for {need} bytes of voxels")

    with atomic_path(path, verify=readable) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)


def is_complete_image(path: str | Path) -> bool:
    """Whether ``path`` is a complete, readable image (``--continue`` redoes the others)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        verify_file(path)
        read_header(path)
    except (IncompleteWrite, IntegrityError):
        return False
    return True


def image_from_array(array_zyx: np.ndarray, geometry: Geometry) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(array_zyx))
    return geometry.apply_to(img)
