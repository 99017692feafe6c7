"""A demo-dataset LR scan as a DICOM series, super-resolved by ``mrisr_predict``, read back.

    python benchmarks/dicom_demo.py

Builds and plans the demo dataset in a temporary folder, writes its first held-out real LR
scan (``imagesLRTs``) as a DICOM series (with made-up patient/study tags, as a scanner
export would have), runs ``mrisr_predict -c bicubic`` (the configuration that needs no
training; the SR networks use the same grid and writer) on the series and on the NIfTI
file, and checks with plain SimpleITK that the SR series has the geometry of the NIfTI
output (within 1e-4 mm), the source's patient/study tags, a new Series Instance UID and
ImageType DERIVED\\SECONDARY.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mrisr.cli.predict import main as predict_main
from mrisr.imageio.dicom import DicomSeries, write_series
from mrisr.imageio.sitk_io import read_scan

SOURCE_TAGS = {
    "0010|0010": "Demo^Subject",
    "0010|0020": "DEMO-001",
    "0020|000d": "2.25.1000000000000000000001",
    "0020|0052": "2.25.1000000000000000000002",
    "0008|103e": "demo t1 LR",
    "0020|0011": "3",
}


def main() -> None:
    from bench_predict import demo_plans

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plans = demo_plans(tmp / "work")
        raw = tmp / "work" / "mrisr_raw" / plans.dataset_name
        (tmp / "work" / "mrisr_results" / plans.dataset_name).mkdir(parents=True, exist_ok=True)
        scan = sorted((raw / "imagesLRTs").iterdir())[0]
        name = scan.name.split(".")[0]
        img = read_scan(scan)
        source = DicomSeries(img, "2.25.1000000000000000000003", dict(SOURCE_TAGS))
        write_series(img, tmp / "in_dcm" / name, source, description="demo t1 LR")
        (tmp / "in_nii").mkdir()
        sitk.WriteImage(img, str(tmp / "in_nii" / f"{name}.nii.gz"))
        common = ["-d", "1", "-c", "bicubic", "-p", plans.plans_name]
        assert predict_main(["-i", str(tmp / "in_dcm"), "-o", str(tmp / "o_dcm"), *common]) == 0
        assert predict_main(["-i", str(tmp / "in_nii"), "-o", str(tmp / "o_nii"), *common]) == 0
        reader = sitk.ImageSeriesReader()
        folder = str(tmp / "o_dcm" / name)
        (uid,) = reader.GetGDCMSeriesIDs(folder)
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder, uid))
        reader.MetaDataDictionaryArrayUpdateOn()
        sr = reader.Execute()
        nii = sitk.ReadImage(str(tmp / "o_nii" / f"{name}.nii.gz"))
        if np.linalg.det(np.reshape(nii.GetDirection(), (3, 3))) < 0:
            nii = sitk.Flip(nii, (False, False, True))
        d_origin = np.abs(np.subtract(sr.GetOrigin(), nii.GetOrigin())).max()
        d_spacing = np.abs(np.subtract(sr.GetSpacing(), nii.GetSpacing())).max()
        d_dir = np.abs(np.subtract(sr.GetDirection(), nii.GetDirection())).max()
        a, b = sitk.GetArrayFromImage(sr), sitk.GetArrayFromImage(nii)
        print(f"source {scan.name}: size {img.GetSize()}, spacing {img.GetSpacing()}")
        print(f"SR series {uid}: size {sr.GetSize()}, spacing {sr.GetSpacing()}")
        print(
            f"vs NIfTI output: origin {d_origin:.2e} mm, spacing {d_spacing:.2e} mm, direction "
            f"{d_dir:.2e}; intensities max abs {np.abs(a - b).max():.3g} of peak {np.abs(b).max():.4g}"
        )
        tags = {k: reader.GetMetaData(0, k).strip() for k in reader.GetMetaDataKeys(0)}
        print(
            f"tags: ImageType {tags['0008|0008']}, description '{tags['0008|103e']}', patient "
            f"{tags['0010|0010']} / {tags['0010|0020']}, study {tags['0020|000d']}"
        )
        ok = (
            max(d_origin, d_spacing, d_dir) < 1e-4
            and sr.GetSize() == nii.GetSize()
            and tags["0008|0008"] == "DERIVED\\SECONDARY"
            and tags["0010|0020"] == SOURCE_TAGS["0010|0020"]
            and tags["0020|000d"] == SOURCE_TAGS["0020|000d"]
        )
        print("geometry and tags as stated:", "yes" if ok else "NO")


if __name__ == "__main__":
    main()
