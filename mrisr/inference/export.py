"""Shareable trained models: ``mrisr_export_model`` and ``mrisr_install_model``.

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

Installing checks before anything lands in ``$mrisr_results``: every member stays inside
the target folder (no absolute paths, ``..`` or links) and matches the manifest and its hash;
every checkpoint loads with ``weights_only=True``, belongs to the manifest's trainer, plans
and configuration and rebuilds its network; the plans validate and match the checkpoints';
``.npy`` files load without pickle. Extraction goes to a temporary folder, then into place.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import stat
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from mrisr import paths
from mrisr.networks.checkpoint_io import network_from_state, read_checkpoint
from mrisr.paths import DATASET_RE
from mrisr.planning.fingerprint import FINGERPRINT_FILE
from mrisr.plans import Plans, plans_identity
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import atomic_path

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
MAX_UNPACKED = 8 << 30  # refuse archives that would unpack to more than 8 GiB


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mrisr")
    except PackageNotFoundError:
        return "unknown"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _inference_checkpoint(path: Path) -> bytes:
    """The checkpoint without optimiser and RNG states (a third of the size), re-saved."""
    state = read_checkpoint(path)
    slim = {k: state[k] for k in INFERENCE_KEYS if k in state}
    buf = io.BytesIO()
    torch.save(slim, buf)
    return buf.getvalue()


def _validation_table(configuration: str, summaries: dict[str, dict]) -> str:
    rows = [
        f"| fold | cases | PSNR {configuration} | SSIM {configuration} | PSNR bicubic | "
        "SSIM bicubic |",
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
            f"{cell(s, configuration, 'ssim')} | {cell(s, 'bicubic', 'psnr')} | "
            f"{cell(s, 'bicubic', 'ssim')} |"
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
(`checkpoint_{manifest["checkpoint"]}.pth`), exported {manifest["created"]} with mrisr
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


def export_model(
    dataset: str,
    configuration: str,
    output: Path,
    trainer: str = "EDSRTrainer",
    plans_name: str = "mrisrPlans",
    folds: list[str] | None = None,
    checkpoint: str = "final",
) -> Path:
    """Write the model zip of a trained configuration; returns its path."""
    dataset = paths.resolve_results_dataset(dataset)
    folder = paths.results_folder(
        dataset, trainer, plans_name, configuration, labels=("-tr", "-p", "-c")
    )
    if not (folder / "plans.json").is_file():
        raise MrisrError(
            f"no trained model for configuration '{configuration}' in {folder}: train it with "
            f"mrisr_train FOLD -d {dataset} -c {configuration} -tr {trainer}"
        )
    chk_name = f"checkpoint_{checkpoint}.pth"
    folds = folds or [f for f in paths.FOLD_NAMES if (folder / f"fold_{f}" / chk_name).is_file()]
    if not folds:
        raise MrisrError(f"no fold with {chk_name} in {folder}: train one first")
    for f in folds:
        if f not in paths.FOLD_NAMES:
            raise MrisrError(f"unknown fold '{f}'; valid: {', '.join(paths.FOLD_NAMES)}")
        if not (folder / f"fold_{f}" / chk_name).is_file():
            raise MrisrError(f"{folder / f'fold_{f}' / chk_name} not found: train fold {f} first")
    validate_plans(Plans.load(folder / "plans.json"), configuration)
    base = PurePosixPath(dataset) / folder.name
    members: dict[str, bytes] = {}
    for name in ("plans.json", "dataset.json", FINGERPRINT_FILE):
        if (folder / name).is_file():
            members[str(base / name)] = (folder / name).read_bytes()
    summaries: dict[str, dict] = {}
    for f in folds:
        fd = folder / f"fold_{f}"
        members[str(base / f"fold_{f}" / f"checkpoint_{checkpoint}.pth")] = _inference_checkpoint(
            fd / chk_name
        )
        for rel in FOLD_FILES:
            if (fd / rel).is_file():
                members[str(base / f"fold_{f}" / rel)] = (fd / rel).read_bytes()
        if (fd / "validation" / "summary.json").is_file():
            summaries[f] = json.loads(
                (fd / "validation" / "summary.json").read_text(encoding="utf-8")
            )
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
        "mrisr_version": _version(),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "file_name": output.name,
        "model_folder": str(base),
    }
    members[README] = _readme(manifest, summaries).encode()
    manifest["files"] = {name: _sha256(data) for name, data in sorted(members.items())}
    with atomic_path(output, suffix=".zip") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr(MANIFEST, json.dumps(manifest, indent=2) + "\n")
            for name, data in sorted(members.items()):
                z.writestr(name, data)
    logger.info("%s: %d files, folds %s", output, len(members) + 1, ", ".join(folds))
    return output


# ------------------------------------------------------------------------------ install
def validate_plans(plans: Plans, configuration: str) -> None:
    """One-line MrisrError if the plans cannot drive inference of ``configuration``."""
    # the schema (scale, spacings, sections) is checked by Plans.load, one message for all
    where = plans.path or "plans"
    cfg = plans.configuration(configuration)  # unknown or looping inheritance: MrisrError
    if cfg.sr is None:
        raise MrisrError(f"{where}: configuration '{configuration}' has no trained network")


def _safe_name(name: str, info: zipfile.ZipInfo, zip_path: Path) -> PurePosixPath:
    p = PurePosixPath(name)
    mode = info.external_attr >> 16
    if (
        not name
        or "\\" in name
        or p.is_absolute()
        or ":" in p.parts[0]
        or any(part in ("..", "") for part in p.parts)
        or stat.S_ISLNK(mode)
    ):
        raise MrisrError(
            f"{zip_path}: member '{name}' escapes the target folder (absolute path, '..' or a "
            "link); refusing to install"
        )
    return p


def _read_manifest(z: zipfile.ZipFile, zip_path: Path) -> dict:
    try:
        manifest = json.loads(z.read(MANIFEST))
    except KeyError:
        raise MrisrError(f"{zip_path}: no {MANIFEST}; not an mrisr model zip") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise MrisrError(f"{zip_path}: {MANIFEST} is not valid JSON") from None
    keys = ("format", "dataset", "trainer", "plans", "configuration", "folds", "files")
    if not isinstance(manifest, dict) or any(k not in manifest for k in keys):
        raise MrisrError(f"{zip_path}: {MANIFEST} lacks {', '.join(keys)}")
    if manifest["format"] != FORMAT:
        raise MrisrError(
            f"{zip_path}: model format {manifest['format']}; this mrisr reads {FORMAT}"
        )
    if not DATASET_RE.match(str(manifest["dataset"])):
        raise MrisrError(f"{zip_path}: dataset '{manifest['dataset']}' is not DatasetNNN_Name")
    return manifest


def _check_checkpoint(path: Path, manifest: dict, plans: Plans) -> None:
    name = "/".join(path.parts[-4:])  # dataset/model/fold_K/checkpoint_*.pth
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for unsafe or damaged files
        raise MrisrError(
            f"{name}: checkpoint is not weights-only loadable ({type(e).__name__}); "
            "refusing to install"
        ) from None
    if not isinstance(state, dict) or "network" not in state:
        raise MrisrError(f"{name}: not an mrisr checkpoint; refusing to install")
    for key, want in (
        ("trainer", manifest["trainer"]),
        ("plans_name", manifest["plans"]),
        ("configuration", manifest["configuration"]),
    ):
        if state.get(key) != want:
            raise MrisrError(f"{name}: checkpoint {key} '{state.get(key)}', manifest '{want}'")
    if state.get("plans_identity") != plans_identity(plans, manifest["configuration"]):
        raise MrisrError(f"{name}: checkpoint was trained with other plans than plans.json")
    try:
        network_from_state(state)
    except MrisrError:
        raise
    except Exception as e:
        raise MrisrError(f"{name}: network does not load ({type(e).__name__})") from None


def install_model(zip_path: Path, overwrite: bool = False) -> Path:
    """Install a model zip into ``$mrisr_results``; returns the model folder."""
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise MrisrError(f"{zip_path}: model zip not found")
    root = paths.results_root()
    try:
        z = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile:
        raise MrisrError(f"{zip_path}: not a zip file") from None
    with z:
        infos = z.infolist()
        for info in infos:
            _safe_name(info.filename, info, zip_path)
        if sum(i.file_size for i in infos) > MAX_UNPACKED:
            raise MrisrError(f"{zip_path}: unpacks to more than {MAX_UNPACKED >> 30} GiB")
        manifest = _read_manifest(z, zip_path)
        dataset = manifest["dataset"]
        names = {i.filename for i in infos if not i.is_dir()} - {MANIFEST}
        listed = set(manifest["files"])
        if names != listed:
            extra = sorted(names ^ listed)
            raise MrisrError(
                f"{zip_path}: members differ from the manifest ({', '.join(extra[:3])})"
            )
        for name in names:
            if name != README and PurePosixPath(name).parts[0] != dataset:
                raise MrisrError(f"{zip_path}: member '{name}' lies outside {dataset}/")
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".install_", dir=root))
        try:
            for name in sorted(names):
                data = z.read(name)
                if _sha256(data) != manifest["files"][name]:
                    raise MrisrError(f"{zip_path}: '{name}' does not match its manifest hash")
                dest = (tmp / name).resolve()
                if tmp.resolve() not in dest.parents:
                    raise MrisrError(f"{zip_path}: member '{name}' escapes the target folder")
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
            return _validate_and_move(tmp, root, manifest, zip_path, overwrite)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _validate_and_move(
    tmp: Path, root: Path, manifest: dict, zip_path: Path, overwrite: bool
) -> Path:
    dataset, config = manifest["dataset"], manifest["configuration"]
    model = paths.model_folder_name(manifest["trainer"], manifest["plans"], config)
    src = tmp / dataset / model
    if not (src / "plans.json").is_file():
        raise MrisrError(f"{zip_path}: {dataset}/{model}/plans.json missing")
    try:
        plans = Plans.load(src / "plans.json")
    except ValueError:
        raise MrisrError(f"{zip_path}: plans.json is not valid JSON") from None
    validate_plans(plans, config)
    chk = f"checkpoint_{manifest.get('checkpoint', 'final')}.pth"
    if not manifest["folds"]:
        raise MrisrError(f"{zip_path}: the manifest lists no fold")
    for f in manifest["folds"]:
        if str(f) not in paths.FOLD_NAMES or not (src / f"fold_{f}" / chk).is_file():
            raise MrisrError(f"{zip_path}: fold '{f}' has no {chk}")
        _check_checkpoint(src / f"fold_{f}" / chk, manifest, plans)
    for p in (tmp / dataset).rglob("*"):
        if p.suffix == ".npy":
            try:
                np.load(p, allow_pickle=False)
            except ValueError:
                raise MrisrError(f"{p.relative_to(tmp)}: .npy needs pickle; refusing") from None
        elif p.suffix == ".json":
            try:
                json.loads(p.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise MrisrError(f"{p.relative_to(tmp)}: not valid JSON") from None
    targets = [d for d in sorted((tmp / dataset).iterdir()) if d.is_dir()]
    existing = [root / dataset / d.name for d in targets if (root / dataset / d.name).exists()]
    if existing and not overwrite:
        raise MrisrError(
            f"{existing[0]} exists: remove it or install with --overwrite to replace it"
        )
    (root / dataset).mkdir(parents=True, exist_ok=True)
    for d in targets:
        dest = root / dataset / d.name
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(d, dest)
    readme = tmp / README
    if readme.is_file():
        os.replace(readme, root / dataset / model / README)
    logger.info("installed %s into %s", model, root / dataset)
    return root / dataset / model
