"""Read access to a preprocessed dataset (what the degradation and SR trainers consume)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np

from mrisr import paths
from mrisr.plans import Plans
from mrisr.preprocessing import storage
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import load_json

KEYS = ("hr", "hr_mask", "hr_weight", "lr", "lr_mask", "lr_weight", "lr_raw")


class PreprocessedDataset:
    """The cases of ``$mrisr_preprocessed/<dataset>/<plans>_preprocessed``.

    Arrays are opened lazily and kept open, so repeated crops touch only the blocks they need.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise MrisrError(
                f"{self.folder}: preprocessed data not found; run mrisr_plan_and_preprocess first"
            )
        self._open: dict[tuple[str, str], object] = {}

    @classmethod
    def for_plans(cls, plans: Plans) -> PreprocessedDataset:
        return cls(paths.preprocessed_folder(plans.dataset_name, plans.data_identifier))

    @cached_property
    def properties(self) -> dict[str, dict]:
        props = {}
        for f in sorted(self.folder.glob("*.json")):
            try:
                d = load_json(f)
            except (ValueError, OSError) as e:
                raise MrisrError(
                    f"{f}: damaged preprocessed case file ({type(e).__name__}); re-run "
                    "mrisr_plan_and_preprocess (it redoes the case)"
                ) from None
            if not isinstance(d, dict) or not isinstance(d.get("case"), str):
                raise MrisrError(
                    f"{f}: not a preprocessed case file (no 'case'); re-run "
                    "mrisr_plan_and_preprocess (it redoes the case)"
                )
            props[d["case"]] = d
        if not props:
            raise MrisrError(f"{self.folder}: no preprocessed cases; run mrisr_plan_and_preprocess")
        return props

    @property
    def cases(self) -> list[str]:
        return list(self.properties)

    def with_hr(self) -> list[str]:
        return [c for c, p in self.properties.items() if p["has_hr"]]

    def with_lr(self) -> list[str]:
        return [c for c, p in self.properties.items() if p["has_lr"]]

    def pairs(self) -> list[str]:
        return [c for c, p in self.properties.items() if p["is_pair"]]

    def flagged_pairs(self) -> dict[str, str]:
        """Pairs whose LR and HR share no structure (:mod:`mrisr.preprocessing.pair_check`)
        -> why; they are left out of validation and fidelity."""
        return {
            c: p["pair_check"]["reason"]
            for c, p in self.properties.items()
            if p["is_pair"] and not p.get("pair_check", {}).get("shares_structure", True)
        }

    def is_registered_pair(self, case: str) -> bool:
        """A pair whose two scans can be compared voxel by voxel (not flagged)."""
        p = self.properties[case]
        return bool(p["is_pair"]) and p.get("pair_check", {}).get("shares_structure", True)

    def lr_noise(self, cases: list[str]) -> list[dict]:
        """The real LR noise measured by preprocessing (working grid, before denoising:
        ``{"sigma", "rho", ...}``) of those ``cases`` that have one."""
        return [self.properties[c]["lr"]["noise"] for c in cases if self._has_noise(c)]

    def lr_noise_level(self, cases: list[str]) -> dict | None:
        """The noise the training LR of ``cases`` gets (working grid, normalised units):
        ``{"sigma", "rho", "method", "scans"}``, None when no case has a measurement.

        Where registered pairs measured it against their HR (``sigma_residual``,
        :mod:`mrisr.preprocessing.pair_noise`), the lowest of them: the noise is one
        protocol's, and the residual's model errors only add to it. Else the median of the
        scans' background (or in-tissue) estimates. The colour (``rho``) is the mean of the
        background's measurements."""
        measured = self.lr_noise(cases)
        if not measured:
            return None
        rhos = [np.asarray(m["rho"]) for m in measured if m.get("rho") is not None]
        residual = [
            self.properties[c]["lr"]["noise"]["sigma_residual"]
            for c in cases
            if self._has_noise(c)
            and self.is_registered_pair(c)
            and self.properties[c]["lr"]["noise"].get("sigma_residual")
        ]
        if residual:
            sigma = float(min(residual))
            method = f"residual against the registered HR, lowest of {len(residual)} pairs"
        else:
            sigma = float(np.median([m["sigma"] for m in measured]))
            method = f"median of {len(measured)} scans' {measured[0].get('method', 'estimates')}"
        return {
            "sigma": sigma,
            "rho": np.mean(rhos, axis=0).tolist() if rhos else None,
            "method": method,
            "scans": len(measured),
        }

    def _has_noise(self, case: str) -> bool:
        p = self.properties[case]
        return bool(p["has_lr"] and p["lr"].get("noise"))

    def path(self, case: str, key: str) -> Path:
        if key not in KEYS:
            raise ValueError(f"unknown array '{key}'; one of {KEYS}")
        return self.folder / f"{case}_{key}{storage.SUFFIX}"

    def array(self, case: str, key: str):
        """The stored array, opened once (slice it to read)."""
        k = (case, key)
        if k not in self._open:
            self._open[k] = storage.open_array(self.path(case, key))
        return self._open[k]

    def load(self, case: str, key: str) -> np.ndarray:
        return np.asarray(self.array(case, key)[...])
