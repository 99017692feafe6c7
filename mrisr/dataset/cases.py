"""Discovering the cases of a raw dataset: HR scans, LR scans, and the pairs among them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mrisr.dataset.dataset_json import HR_FOLDER, LR_FOLDER, DatasetInfo
from mrisr.utilities.errors import IntegrityError


@dataclass(frozen=True)
class Case:
    """One case: a session with an HR scan, a real LR scan, or both (a pair)."""

    name: str
    hr: Path | None
    lr: Path | None

    @property
    def is_pair(self) -> bool:
        return self.hr is not None and self.lr is not None

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "hr": str(self.hr) if self.hr else None,
            "lr": str(self.lr) if self.lr else None,
        }


def _scan_folder(folder: Path, ending: str) -> dict[str, Path]:
    """``<case><file_ending>`` files, and ``<case>/`` folders each holding one DICOM series."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            name = p.name
            if name in found:
                raise IntegrityError(
                    f"{p}: case '{name}' is given twice (a file and a DICOM folder); keep one"
                )
            found[name] = p
            continue
        if not p.name.endswith(ending):
            raise IntegrityError(
                f"{p}: wrong file ending (dataset.json says file_ending '{ending}'); "
                f"rename or convert it, or remove it from {folder.name}/"
            )
        name = p.name[: -len(ending)]
        if name in found:
            raise IntegrityError(
                f"{p}: case '{name}' is given twice (a file and a DICOM folder); keep one"
            )
        found[name] = p
    return found


def find_cases(dataset_dir: Path, info: DatasetInfo) -> list[Case]:
    """All cases of a dataset, sorted by name; IntegrityError on a foreign file."""
    dataset_dir = Path(dataset_dir)
    hr = _scan_folder(dataset_dir / HR_FOLDER, info.file_ending)
    lr = _scan_folder(dataset_dir / LR_FOLDER, info.file_ending)
    names = sorted(set(hr) | set(lr))
    return [Case(n, hr.get(n), lr.get(n)) for n in names]
