"""``mrisr_install_model``: a model zip (:mod:`mrisr.inference.export`) into ``$mrisr_results``.

Installing checks before anything lands in ``$mrisr_results``: every member stays inside
the target folder (no absolute paths, ``..`` or links) and matches the manifest and its hash;
every checkpoint loads with ``weights_only=True``, belongs to the manifest's trainer, plans
and configuration and rebuilds its network; the plans validate and match the checkpoints';
``.npy`` files load without pickle. Extraction goes to a temporary folder, then into place.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from mrisr import paths
from mrisr.inference.export import FORMAT, MANIFEST, README, sha256, validate_plans
from mrisr.networks.checkpoint_io import network_from_state
from mrisr.paths import DATASET_RE
from mrisr.plans import Plans, plans_identity
from mrisr.utilities.errors import MrisrError

logger = logging.getLogger(__name__)

MAX_UNPACKED = 8 << 30  # refuse archives that would unpack to more than 8 GiB


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
                if sha256(data) != manifest["files"][name]:
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
