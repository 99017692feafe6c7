"""Reading dataset.json (finding datasets by id or name: :mod:`mrisr.paths`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mrisr.utilities.errors import IntegrityError
from mrisr.utilities.file_io import load_json

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
        data = load_json(path)
    except ValueError as e:
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
