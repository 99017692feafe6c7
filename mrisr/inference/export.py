"""Shareable trained models: ``mrisr_export_model`` writes a model zip.

A model zip holds what ``mrisr_predict`` needs and nothing it would have to trust blindly:

```
mrisr_model.json                      manifest: dataset, trainer, plans, configuration,
                                      folds, checkpoint, mrisr version, SHA-256 of every member
README.md                             what it is, how to install and use it, validation table
DatasetNNN_Name/<Trainer>__<plans>__<config>/
    plans.json  dataset.json  dataset_fingerprint.json
    fold_K/checkpoint_final.pth       network weights and identity (optimiser/RNG state
                                      stripped), loadable with torch.load(weights_only=True)
    fold_K/validation/summary.json    the fold's cross-validation result
    fold_K/training_log.txt, progress.png
DatasetNNN_Name/degradation__<plans>__<config>/
    *.json, units/*.json, *.npy, *.png  the degradation summaries and kernels (no weights)
```

Installing it (what it checks first) is :mod:`mrisr.inference.install`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import torch

from mrisr import paths
from mrisr.inference.predict_api import default_configuration
from mrisr.networks.checkpoint_io import read_checkpoint
from mrisr.paths import DATASET_RE
from mrisr.planning.fingerprint import FINGERPRINT_FILE
from mrisr.plans import BASELINE_CONFIGURATION, DEFAULT_PLANS, DEFAULT_TRAINER, Plans
from mrisr.throughplane.api import MODEL_FILE as TP_MODEL_FILE
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import atomic_path, load_json_or_error

logger = logging.getLogger(__name__)

MANIFEST = "mrisr_model.json"
README = "README.md"
FORMAT = 1
FOLD_FILES = ("validation/summary.json", "training_log.txt", "progress.png")
DEGRADATION_PATTERNS = ("*.json", "units/*.json", "*.npy", "units/*.npy", "*.png")
INFERENCE_KEYS = (
    "format",
    "trainer",
    "dataset",
    "plans_name",
    "plans_identity",
    "configuration",
    "fold",
    "iteration",
    "total_iterations",
    "seed",
    "world_size",
    "network_class",
    "network_args",
    "network",
    "history",
    "best_psnr",
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mrisr")
    except PackageNotFoundError:
        return "unknown"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _inference_checkpoint(path: Path) -> bytes:
    """The checkpoint without optimiser and RNG states (a third of the size), re-saved."""
    state = read_checkpoint(path)
    slim = {k: state[k] for k in INFERENCE_KEYS if k in state}
    buf = io.BytesIO()
    torch.save(slim, buf)
    return buf.getvalue()


def _validation_table(configuration: str, summaries: dict[str, dict]) -> str:
    # the baseline each fold computed beside the configuration (bicubic; B-spline through-plane)
    others = [m for s in summaries.values() for m in s.get("mean", {}) if m != configuration]
    base = others[0] if others else BASELINE_CONFIGURATION
    rows = [
        f"| fold | cases | PSNR {configuration} | SSIM {configuration} | PSNR {base} | "
        f"SSIM {base} |",
        "|---|---|---|---|---|---|",
    ]

    def cell(s: dict, name: str, metric: str) -> str:
        m = s.get("mean", {}).get(name, {}).get(metric)
        if not m or m.get("mean") is None:
            return "-"
        return f"{m['mean']:.4g} +- {m.get('sd', 0.0):.2g}"

    for fold, s in summaries.items():
        rows.append(
            f"| {fold} | {s.get('num_cases', '-')} | {cell(s, configuration, 'psnr')} | "
            f"{cell(s, configuration, 'ssim')} | {cell(s, base, 'psnr')} | "
            f"{cell(s, base, 'ssim')} |"
        )
    if not summaries:
        rows.append("| - | no validation summary in the exported folds | | | | |")
    return "\n".join(rows)


def _readme(manifest: dict, summaries: dict[str, dict]) -> str:
    d, c = manifest["dataset"], manifest["configuration"]
    folds = " ".join(manifest["folds"])
    num = DATASET_RE.match(d).group(1)
    return f"""# mrisr model: {d}, configuration {c}

Trainer `{manifest["trainer"]}`, plans `{manifest["plans"]}`, folds {folds}
(`{manifest.get("checkpoint_file", f"checkpoint_{manifest['checkpoint']}.pth")}`), exported {manifest["created"]} with mrisr
{manifest["mrisr_version"]}.

## Install and use

```bash
export mrisr_results=/path/to/results     # the only root prediction needs
mrisr_install_model {manifest.get("file_name", "model.zip")}
mrisr_predict -i lr_scans/ -o sr_scans/ -d {int(num)} -c {c} -tr {manifest["trainer"]} \\
    -p {manifest["plans"]}
```

## Cross-validation (held-out pairs of each fold, PSNR in dB / SSIM, mean +- sd)

{_validation_table(c, summaries)}

Metric convention: HR resampled onto the SR grid in physical space, per-scan 99.5th
percentile normalisation, foreground mask, data range 1 (`fold_K/validation/summary.json`).
"""


def _checked_folds(folder: Path, folds: list[str] | None, chk_name: str) -> list[str]:
    """The folds to export (default: every fold with the checkpoint), each checked."""
    folds = folds or [f for f in paths.FOLD_NAMES if (folder / f"fold_{f}" / chk_name).is_file()]
    if not folds:
        raise MrisrError(f"no fold with {chk_name} in {folder}: train one first")
    for f in folds:
        if f not in paths.FOLD_NAMES:
            raise MrisrError(f"unknown fold '{f}'; valid: {', '.join(paths.FOLD_NAMES)}")
        if not (folder / f"fold_{f}" / chk_name).is_file():
            raise MrisrError(f"{folder / f'fold_{f}' / chk_name} not found: train fold {f} first")
    return folds


def checkpoint_file(plans: Plans, configuration: str, checkpoint: str = "final") -> str:
    """A fold's trained-model file for ``configuration``: ``checkpoint_final.pth`` (or
    ``_best``), or a through-plane configuration's model (final only)."""
    if plans.configuration(configuration).axis == "through-plane":
        if checkpoint != "final":
            raise MrisrError(f"-c {configuration}: a through-plane fold keeps its final model only")
        return TP_MODEL_FILE
    return f"checkpoint_{checkpoint}.pth"


def _add_fold_members(
    members: dict[str, bytes], folder: Path, base: PurePosixPath, folds: list[str], chk_name: str
) -> dict[str, dict]:
    """Add each fold's slimmed checkpoint and files to ``members``; returns the folds'
    validation summaries (for the README)."""
    summaries: dict[str, dict] = {}
    for f in folds:
        fd = folder / f"fold_{f}"
        chk = fd / chk_name  # a through-plane model is weights and metadata already
        data = chk.read_bytes() if chk_name == TP_MODEL_FILE else _inference_checkpoint(chk)
        members[str(base / f"fold_{f}" / chk_name)] = data
        for rel in FOLD_FILES:
            if (fd / rel).is_file():
                members[str(base / f"fold_{f}" / rel)] = (fd / rel).read_bytes()
        if (fd / "validation" / "summary.json").is_file():
            summaries[f] = load_json_or_error(
                fd / "validation" / "summary.json",
                f"re-run the fold's validation (mrisr_train {f} --val-only) or delete it",
            )
    return summaries


def export_model(
    dataset: str | None,
    configuration: str | None,
    output: Path,
    trainer: str = DEFAULT_TRAINER,
    plans_name: str = DEFAULT_PLANS,
    folds: list[str] | None = None,
    checkpoint: str = "final",
) -> Path:
    """Write the model zip of a trained configuration (None: the plans' default); returns
    its path."""
    dataset = paths.resolve_results_dataset(dataset)
    if configuration is None:
        configuration = default_configuration(dataset, trainer, plans_name)
    folder = paths.results_folder(
        dataset, trainer, plans_name, configuration, labels=("-tr", "-p", "-c")
    )
    if not (folder / "plans.json").is_file():
        raise MrisrError(
            f"no trained model for configuration '{configuration}' in {folder}: train it with "
            f"mrisr_train FOLD -d {dataset} -c {configuration} -tr {trainer}"
        )
    plans = Plans.load(folder / "plans.json")
    validate_plans(plans, configuration)
    chk_name = checkpoint_file(plans, configuration, checkpoint)
    folds = _checked_folds(folder, folds, chk_name)
    base = PurePosixPath(dataset) / folder.name
    members: dict[str, bytes] = {}
    for name in ("plans.json", "dataset.json", FINGERPRINT_FILE):
        if (folder / name).is_file():
            members[str(base / name)] = (folder / name).read_bytes()
    summaries = _add_fold_members(members, folder, base, folds, chk_name)
    deg = folder.parent / paths.degradation_folder_name(plans_name, configuration)
    if deg.is_dir():
        for pattern in DEGRADATION_PATTERNS:
            for p in sorted(deg.glob(pattern)):
                if p.is_file():
                    members[str(PurePosixPath(dataset) / deg.name / p.relative_to(deg))] = (
                        p.read_bytes()
                    )
    output = Path(output)
    manifest = {
        "format": FORMAT,
        "dataset": dataset,
        "trainer": trainer,
        "plans": plans_name,
        "configuration": configuration,
        "folds": list(folds),
        "checkpoint": checkpoint,
        "checkpoint_file": chk_name,
        "mrisr_version": _version(),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "file_name": output.name,
        "model_folder": str(base),
    }
    members[README] = _readme(manifest, summaries).encode()
    manifest["files"] = {name: sha256(data) for name, data in sorted(members.items())}
    with atomic_path(output, suffix=".zip") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr(MANIFEST, json.dumps(manifest, indent=2) + "\n")
            for name, data in sorted(members.items()):
                z.writestr(name, data)
    logger.info("%s: %d files, folds %s", output, len(members) + 1, ", ".join(folds))
    return output


def validate_plans(plans: Plans, configuration: str) -> None:
    """One-line MrisrError if the plans cannot drive inference of ``configuration``."""
    # the schema (scale, spacings, sections) is checked by Plans.load, one message for all
    where = plans.path or "plans"
    cfg = plans.configuration(configuration)  # unknown or looping inheritance: MrisrError
    if not cfg.requires_training:
        raise MrisrError(f"{where}: configuration '{configuration}' has no trained network")
