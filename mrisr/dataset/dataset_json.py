"""Finding datasets by id or name, and reading dataset.json."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from mrisr.utilities.errors import IntegrityError, MrisrError

DATASET_RE = re.compile(r"^Dataset(\d{3})_([A-Za-z0-9_-]+)$")
HR_FOLDER = "imagesHR"
LR_FOLDER = "imagesLR"


@dataclass
class DatasetInfo:
    """The content of dataset.json (``name`` and ``file_ending`` are required)."""

    name: str
    file_ending: str
    modality: str = ""
    description: str = ""
    num_training: int | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = dict(self.extra)
        d.update(name=self.name, file_ending=self.file_ending)
        if self.modality:
            d["modality"] = self.modality
        if self.description:
            d["description"] = self.description
        if self.num_training is not None:
            d["numTraining"] = self.num_training
        return d


def load_dataset_json(dataset_dir: Path) -> DatasetInfo:
    """Read and validate ``dataset_dir/dataset.json``; IntegrityError with the fix if bad."""
    path = Path(dataset_dir) / "dataset.json"
    if not path.is_file():
        raise IntegrityError(
            f"{path}: dataset.json is missing; create it with at least "
            '{"name": "...", "file_ending": ".nii.gz"}'
        )
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IntegrityError(f"{path}: not valid JSON ({e}); fix the syntax") from None
    if not isinstance(data, dict):
        raise IntegrityError(f"{path}: must hold a JSON object with 'name' and 'file_ending'")
    missing = [
        k for k in ("name", "file_ending") if not isinstance(data.get(k), str) or not data[k]
    ]
    if missing:
        raise IntegrityError(
            f"{path}: missing or empty key(s) {', '.join(missing)}; add e.g. "
            '"name": "MyData", "file_ending": ".nii.gz"'
        )
    if not data["file_ending"].startswith("."):
        raise IntegrityError(
            f"{path}: file_ending '{data['file_ending']}' must start with a dot, e.g. '.nii.gz'"
        )
    known = {"name", "file_ending", "modality", "description", "numTraining"}
    num = data.get("numTraining")
    return DatasetInfo(
        name=data["name"],
        file_ending=data["file_ending"],
        modality=str(data.get("modality", "")),
        description=str(data.get("description", "")),
        num_training=int(num) if isinstance(num, int) else None,
        extra={k: v for k, v in data.items() if k not in known},
    )


def list_datasets(root: Path) -> list[str]:
    """Names of the DatasetNNN_Name folders under ``root``, sorted."""
    if not Path(root).is_dir():
        return []
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir() and DATASET_RE.match(p.name))


def resolve_dataset_name(identifier: str | int, root: Path) -> str:
    """``1``, ``"1"``, ``"001"`` or ``"Dataset001_Name"`` -> ``"Dataset001_Name"`` found in root."""
    ident = str(identifier).strip()
    if DATASET_RE.fullmatch(ident):
        if not (Path(root) / ident).is_dir():
            raise MrisrError(f"dataset {ident} not found in {root}")
        return ident
    if not (ident.isascii() and ident.isdigit()):
        raise MrisrError(
            f"dataset identifier '{ident}' is neither a number (e.g. 1) nor a name like "
            "Dataset001_Name (letters, digits, '_' and '-' only)"
        )
    num = int(ident)
    hits = [n for n in list_datasets(root) if int(DATASET_RE.match(n).group(1)) == num]
    if not hits:
        available = ", ".join(list_datasets(root)) or "none"
        raise MrisrError(f"no dataset with id {num} in {root} (available: {available})")
    if len(hits) > 1:
        raise MrisrError(f"dataset id {num} is ambiguous in {root}: {', '.join(hits)}")
    return hits[0]
