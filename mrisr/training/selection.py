"""The selection rule: which configuration the plans default to, decided by measurement.

``mrisr_plan_and_preprocess`` (unless ``--no-select``) screens every configuration that
trains: a short training (:data:`SCREENING_TRAINER`, a small EDSR for a few hundred
iterations, the same for every candidate) on fold 0, validated on the fold's held-out real
LR pairs against their HR, exactly as ``mrisr_train`` validates. That is nnU-Net's
cross-validation at a fraction of its cost, and it measures the outcome itself (SR of the
real LR), where fidelity of the synthetic LR to the real LR measures a proxy (on dataset B
of the quality study the in-sample fidelity pointed the wrong way).

The rule: the planner's default (:data:`mrisr.plans.DEFAULT_CONFIGURATION`) stays the
default unless another candidate's mean validation PSNR is more than :data:`MARGIN_DB`
above it (a short screen on a few pairs cannot separate closer candidates); then the best
one is. The configurations *worth training* are the default and every candidate within
:data:`MARGIN_DB` of the best; the paper's baselines stay in the plans, trainable on
request. The plans record ``"default_configuration"``, ``"worth_training"`` and the
evidence (``"selection"``: per candidate the screen's PSNR / SSIM, its gain over bicubic,
and the in-sample fidelity of its synthetic LR, for the rule-vs-outcome study of
``benchmarks/bench_quality.py``). The degradation stage's output for fold 0 is the one
the full training of fold 0 reuses: screening costs the short trainings only.
"""

from __future__ import annotations

import logging

import numpy as np

from mrisr.degradation.stage import model_id, summary_path
from mrisr.paths import fold_folder, results_folder
from mrisr.plans import BASELINE_CONFIGURATION, DEFAULT_CONFIGURATION, Plans
from mrisr.preprocessing.dataset import PreprocessedDataset
from mrisr.training.splits import fold_cases, load_or_create_splits
from mrisr.training.train_api import run_training
from mrisr.utilities.file_io import load_json

logger = logging.getLogger(__name__)

SCREENING_TRAINER = "EDSRTrainer_screening"
SCREENING_FOLD = 0
#: PSNR (dB) by which a candidate must beat the planner's default to replace it; also the
#: margin within which a candidate is worth training
MARGIN_DB = 0.3
RULE = (
    f"short screening training ({SCREENING_TRAINER}) of every candidate on fold "
    f"{SCREENING_FOLD}, validated on its held-out real LR pairs; the planner's default unless "
    f"another candidate's mean PSNR is more than {MARGIN_DB} dB higher"
)


def candidates_of(plans: Plans) -> list[str]:
    """The configurations that train, in the plans' order."""
    return [n for n in plans.configuration_names if plans.configuration(n).requires_training]


def planner_default(plans: Plans) -> str:
    """The planner's choice before any measurement."""
    names = candidates_of(plans)
    if DEFAULT_CONFIGURATION in names:
        return DEFAULT_CONFIGURATION
    return names[0] if names else plans.configuration_names[0]


def screen(
    plans: Plans,
    configuration: str,
    trainer: str = SCREENING_TRAINER,
    device: str = "cpu",
    progress: bool = False,
) -> dict:
    """One candidate's screen: its short training on fold 0 (reused when done), validated."""
    fold_dir = fold_folder(
        results_folder(plans.dataset_name, trainer, plans.plans_name, configuration),
        SCREENING_FOLD,
    )
    done = (fold_dir / "checkpoint_final.pth").is_file()
    resume = not done and (fold_dir / "checkpoint_latest.pth").is_file()
    return run_training(
        SCREENING_FOLD,
        plans.dataset_name,
        configuration,
        trainer,
        plans.plans_name,
        continue_training=resume,
        val_only=done,
        device=device,
        progress=progress,
        early_stopping=False,
    )


def select_configuration(
    plans: Plans,
    candidates: list[str] | None = None,
    trainer: str = SCREENING_TRAINER,
    device: str = "cpu",
    progress: bool = False,
) -> dict:
    """Screen the candidates, decide the default and the configurations worth training, and
    save them in the plans (``plans.path``). Returns the ``selection`` record."""
    names = candidates if candidates is not None else candidates_of(plans)
    default = planner_default(plans)
    ds = PreprocessedDataset.for_plans(plans)
    splits = load_or_create_splits(plans.dataset_name, ds.cases, ds.pairs(), write=True)
    _, val = fold_cases(splits, SCREENING_FOLD, ds.cases, ds.pairs())[:2]
    val = [c for c in val if c not in ds.flagged_pairs()]
    record: dict = {"rule": RULE, "trainer": trainer, "fold": SCREENING_FOLD, "candidates": names}
    if not names or not val:
        why = "no configuration trains" if not names else "fold 0 has no usable validation pair"
        record.update(default=default, worth_training=[default] if names else [], scores={})
        return _save(plans, record, f"{default}: the planner's default, not measured ({why})")
    scores = {}
    for name in names:
        logger.info("selection: screening %s (%s, fold %d)", name, trainer, SCREENING_FOLD)
        summary = screen(plans, name, trainer, device, progress)
        scores[name] = _score(summary, name)
        scores[name]["fidelity_ssim"] = _fidelity(plans, name, summary)
    record["validation_pairs"] = sorted(next(iter(scores.values()))["cases"])
    record["scores"] = scores
    best = max(scores, key=lambda n: scores[n]["psnr"])
    ref = default if default in scores else best
    chosen = best if scores[best]["psnr"] > scores[ref]["psnr"] + MARGIN_DB else ref
    worth = [n for n in names if scores[n]["psnr"] >= scores[best]["psnr"] - MARGIN_DB]
    others = [n for n in scores if n != chosen]
    runner_up = max(others, key=lambda n: scores[n]["psnr"]) if others else None
    record.update(
        default=chosen,
        best_screened=best,
        runner_up=runner_up,
        worth_training=sorted({chosen, *worth}),
    )
    gain = scores[chosen]["gain_psnr"]
    if chosen == ref:
        why = (
            f"{chosen}: {gain:+.2f} dB over bicubic on {len(val)} validation pair(s) after "
            f"the screen; no candidate more than {MARGIN_DB} dB better"
        )
        if best != ref:
            why += f" (best: {best}, {scores[best]['psnr'] - scores[ref]['psnr']:+.2f} dB)"
    else:
        why = (
            f"{chosen}: {gain:+.2f} dB over bicubic on {len(val)} validation pair(s) after the "
            f"screen, {scores[chosen]['psnr'] - scores[ref]['psnr']:+.2f} dB above the "
            f"planner's default {ref}"
        )
    if scores[best]["gain_psnr"] <= 0:
        why += "; no candidate beat bicubic in the screen (bicubic: -c bicubic)"
        logger.warning("selection: no candidate beat bicubic on fold 0's validation pairs")
    return _save(plans, record, why)


def _score(summary: dict, name: str) -> dict:
    """Mean PSNR / SSIM of the screen on the validation pairs, and the paired gain over
    bicubic (same pairs, same metric convention)."""
    cases = summary["cases"]
    psnr = [cases[c][name]["psnr"] for c in cases]
    gain = [cases[c][name]["psnr"] - cases[c][BASELINE_CONFIGURATION]["psnr"] for c in cases]
    gain_ssim = [cases[c][name]["ssim"] - cases[c][BASELINE_CONFIGURATION]["ssim"] for c in cases]
    return {
        "psnr": float(np.mean(psnr)),
        "ssim": float(np.mean([cases[c][name]["ssim"] for c in cases])),
        "gain_psnr": float(np.mean(gain)),
        "gain_ssim": float(np.mean(gain_ssim)),
        "cases": {c: cases[c][name]["psnr"] for c in cases},
    }


def _fidelity(plans: Plans, name: str, summary: dict) -> float | None:
    """The in-sample fidelity (SSIM) of the candidate's synthetic LR on fold 0's training
    pairs (the degradation stage's check; the alternative rule the study compares)."""
    ds = PreprocessedDataset.for_plans(plans)
    splits = load_or_create_splits(plans.dataset_name, ds.cases, ds.pairs(), write=False)
    train = fold_cases(splits, SCREENING_FOLD, ds.cases, ds.pairs())[0]
    path = summary_path(plans, name, model_id(plans, name, train))
    if not path.is_file():
        return None
    fid = load_json(path).get("fidelity")
    return float(fid["mean"]["ssim"]) if fid else None


def _save(plans: Plans, record: dict, why: str) -> dict:
    record["reason"] = why
    plans.data["default_configuration"] = record["default"]
    plans.data["worth_training"] = record["worth_training"]
    plans.data["selection"] = record
    plans.data.setdefault("decisions", {})["default_configuration"] = why
    plans.save(plans.path)
    logger.info("selection: %s", why)
    return record
