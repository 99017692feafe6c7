"""Validation of a fold: during training (fast) and at its end (the real thing).

* :class:`PairValidator` (during training, picks ``checkpoint_best``): the network on the
  validation pairs' *preprocessed real LR* (on the HR-aligned working grid, normalised and
  denoised exactly as at inference), compared with the preprocessed HR on its foreground
  mask; no TTA, at most ``max_slices`` evenly spaced slices per case. Same metric functions
  and intensity convention as :mod:`mrisr.metrics.fidelity`, without resampling.
* :func:`validate_fold` (end of fold, ``fold_K/validation/``): each validation case's raw
  real LR scan is super-resolved by the shared inference core (:class:`SRPredictor`, or
  :func:`bicubic_scan` for the ``bicubic`` configuration), written as
  ``<case><file_ending>`` (with its uncertainty map, the sd over the TTA ensemble,
  ``<case>_uncertainty<file_ending>``), and compared with its raw HR scan in physical space
  (:func:`compare_in_physical_space`), together with the bicubic baseline of the same
  cases. ``summary.json`` holds per-case numbers and mean ± sd for both.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from tqdm import tqdm

from mrisr.imageio.registration import rigid_register
from mrisr.imageio.sitk_io import read_scan, write_scan
from mrisr.inference.predictor import SRPredictor, bicubic_scan
from mrisr.metrics.fidelity import (
    compare_in_physical_space,
    normalise,
    reference_metrics,
    validation_summary,
)
from mrisr.metrics.registry import metrics
from mrisr.plans import BASELINE_CONFIGURATION, Plans
from mrisr.preprocessing.dataset import PreprocessedDataset
from mrisr.utilities import safety
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import save_json

logger = logging.getLogger(__name__)


class PairValidator:
    """Mean PSNR/SSIM of a network on the preprocessed validation pairs (fast, no TTA)."""

    def __init__(
        self,
        dataset: PreprocessedDataset,
        cases: list[str],
        max_slices: int = 16,
        batch_size: int = 8,
        lr_key: str = "lr",
    ):
        self.items: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.batch_size = batch_size
        for c in cases:
            z = dataset.properties[c]["hr"]["shape_zyx"][0]
            idx = np.unique(np.linspace(0, z - 1, min(z, max_slices)).round().astype(int))
            lr = dataset.load(c, lr_key)[idx]
            hr = dataset.load(c, "hr")[idx]
            mask = dataset.load(c, "hr_mask")[idx].astype(bool)
            if mask.any():
                self.items.append((lr, hr, mask))

    def __bool__(self) -> bool:
        return bool(self.items)

    @torch.inference_mode()
    def __call__(self, network: torch.nn.Module, device: torch.device) -> dict[str, float]:
        was_training = network.training
        network.eval()
        channels_last = device.type == "cpu"
        values: dict[str, list[float]] = {}
        for lr, hr, mask in self.items:
            out = []
            for a in range(0, len(lr), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(lr[a : a + self.batch_size, None]))
                x = x.to(device)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                out.append(network(x).float()[:, 0].cpu().numpy())
            pred = np.concatenate(out)[:, : hr.shape[1], : hr.shape[2]]
            ref = hr[:, : pred.shape[1], : pred.shape[2]]
            m = mask[:, : pred.shape[1], : pred.shape[2]]
            ref_n, pred_n = normalise(ref, m), normalise(pred, m)
            for k, v in reference_metrics(ref_n, pred_n, m).items():
                values.setdefault(k, []).append(v)
        network.train(was_training)
        return {k: float(np.mean(v)) for k, v in values.items()}


def _source(dataset: PreprocessedDataset, case: str, key: str) -> Path:
    f = dataset.properties[case].get("source_files", {}).get(key)
    if not f or not Path(f).is_file():
        raise MrisrError(
            f"validation case {case}: raw {key.upper()} scan {f} not found (moved?); "
            "restore it or re-run mrisr_plan_and_preprocess"
        )
    return Path(f)


def check_validation_inputs(dataset: PreprocessedDataset, cases: list[str]) -> None:
    """Every raw LR/HR scan validation will read exists (checked before training starts)."""
    for c in cases:
        _source(dataset, c, "lr")
        _source(dataset, c, "hr")


#: the HR-to-bicubic alignments made in this process: every configuration validated on a
#: pair (the demo, the selection's screen, a user's several trainings) shares its one
#: registration (1-2 s each on 2 cores), keyed on the bicubic image and the HR file
_ALIGNMENTS: dict[tuple, sitk.Euler3DTransform] = {}
_MAX_ALIGNMENTS = 256


def _alignment(bic: sitk.Image, hr: sitk.Image, hr_path: Path) -> sitk.Euler3DTransform:
    """``rigid_register(bic, hr)``, made once per bicubic image and HR file version (the
    version preprocessing's staleness check reads: :func:`safety.content_hash`)."""
    digest = hashlib.blake2b(sitk.GetArrayViewFromImage(bic).tobytes(), digest_size=16)
    key = (
        digest.hexdigest(),
        bic.GetSize(),
        bic.GetSpacing(),
        bic.GetOrigin(),
        bic.GetDirection(),
        str(hr_path.resolve()),
        safety.content_hash(hr_path),
    )
    if key not in _ALIGNMENTS:
        if len(_ALIGNMENTS) >= _MAX_ALIGNMENTS:
            _ALIGNMENTS.clear()
        _ALIGNMENTS[key] = rigid_register(bic, hr)
    return sitk.Euler3DTransform(_ALIGNMENTS[key])


def _validate_case(
    c: str,
    dataset: PreprocessedDataset,
    plans: Plans,
    predictor: SRPredictor | None,
    configuration: str,
    out_dir: Path,
    file_ending: str,
) -> dict:
    """One pair: SR (or bicubic) written, scored against its HR beside bicubic."""
    hr_path = _source(dataset, c, "hr")
    lr = read_scan(_source(dataset, c, "lr"), check=False)
    hr = read_scan(hr_path, check=False)
    bic = bicubic_scan(lr, plans)
    sr, sd = predictor.predict_scan(lr, return_std=True) if predictor else (bic, None)
    write_scan(sr, out_dir / f"{c}{file_ending}")
    if sd is not None:  # sd over TTA x networks: free, the members are computed anyway
        write_scan(sd, out_dir / f"{c}_uncertainty{file_ending}")
    # one rigid alignment of the HR scan per case (to the real LR's bicubic
    # interpolation), shared by every method compared on this case
    tf = _alignment(bic, hr, hr_path)
    m_bic = compare_in_physical_space(hr, bic, tf)
    m_sr = compare_in_physical_space(hr, sr, tf) if predictor is not None else m_bic
    result = {configuration: m_sr, BASELINE_CONFIGURATION: m_bic}
    logger.info(
        "validation %s: %s PSNR %.2f dB SSIM %.4f | bicubic PSNR %.2f dB SSIM %.4f",
        c,
        configuration,
        m_sr["psnr"],
        m_sr["ssim"],
        m_bic["psnr"],
        m_bic["ssim"],
    )
    return result


def validate_fold(
    plans: Plans,
    configuration: str,
    networks: list[torch.nn.Module] | None,
    dataset: PreprocessedDataset,
    cases: list[str],
    out_dir: Path,
    file_ending: str,
    device: str | torch.device = "cpu",
    tta: bool = True,
    held_out: bool = True,
    info: dict | None = None,
    progress: bool = True,
) -> dict:
    """Super-resolve the real LR scans of ``cases``, score them and bicubic; write the SR
    volumes and ``summary.json`` into ``out_dir``. ``networks=None``: the bicubic
    configuration (no network). Returns the summary."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor = SRPredictor.for_configuration(
        plans, configuration, networks, device=device, tta=tta
    )
    per_case: dict[str, dict] = {}
    for c in tqdm(cases, desc="validation", disable=not progress or not cases, leave=False):
        per_case[c] = _validate_case(
            c, dataset, plans, predictor, configuration, out_dir, file_ending
        )
    reference = metrics(reference=True)
    methods = [configuration, BASELINE_CONFIGURATION]
    if configuration == BASELINE_CONFIGURATION:
        methods = [configuration]
    header = {
        "held_out": held_out,
        "note": ""
        if held_out
        else "fold 'all' trains on every case: these pairs were seen in training",
        "tta": bool(tta and predictor is not None),
        **(info or {}),
    }
    convention = (
        "mrisr.metrics.fidelity.compare_in_physical_space (HR resampled onto the SR grid, "
        "per-scan 99.5th percentile normalisation, foreground mask, data range 1)"
    )
    keys = [k.name for k in reference]
    summary = validation_summary(configuration, per_case, methods, keys, convention, header)
    save_json(summary, out_dir / "summary.json")
    return summary
