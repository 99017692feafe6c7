"""``mrisr_install_model``: a model zip (:mod:`mrisr.inference.export`) into ``$mrisr_results``.

Installing checks before anything lands in ``$mrisr_results``. The manifest is validated
(types, names, 64-hex hashes). The zip must hold exactly the members an export writes for the
manifest's model -- its plans, dataset files, the listed folds' checkpoints and logs, its
configuration's degradation summaries -- and nothing else: a member outside that layout (a
second model's folder, an extra checkpoint) is refused, as is one that escapes the target
folder. Members are streamed to a temporary folder under a per-kind size cap and a
compression-ratio cap (a decompression bomb is refused after at most one cap's worth of
bytes), hashed on the way, after checking the free space. Every checkpoint loads with
``weights_only=True``, belongs to the manifest's trainer, plans and configuration and rebuilds
its network; the plans validate; ``.npy`` files load without pickle. Only then is the model
folder moved into place. No other folder is touched: ``--overwrite`` replaces this model's
folder only, and an existing degradation folder (a local training's cache) is kept.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from mrisr import paths
from mrisr.inference.export import (
    FOLD_FILES,
    FORMAT,
    MANIFEST,
    README,
    checkpoint_file,
    validate_plans,
)
from mrisr.networks.checkpoint_io import network_from_state
from mrisr.paths import DATASET_RE
from mrisr.plans import Plans, plans_identity
from mrisr.throughplane.api import MODEL_FILE as TP_MODEL_FILE
from mrisr.throughplane.api import load_model
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import make_dirs, parse_json, write_error
from mrisr.utilities.safety import SAFE_NAME

logger = logging.getLogger(__name__)

MAX_UNPACKED = 4 << 30  # refuse archives that would unpack to more than 4 GiB
MAX_CHECKPOINT = 2 << 30  # one fold's weights
MAX_OTHER = 64 << 20  # a plans file, a log, a figure, a kernel
MAX_RATIO = 100  # deflate ratio of a member larger than RATIO_FROM (weights: ~1.1, text: ~10)
RATIO_FROM = 1 << 20
MAX_MANIFEST = 4 << 20
CHUNK = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FOLD_FILES = {f"fold_{f}/{rel}" for f in paths.FOLD_NAMES for rel in FOLD_FILES}


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
        info = z.getinfo(MANIFEST)
    except KeyError:
        raise MrisrError(f"{zip_path}: no {MANIFEST}; not an mrisr model zip") from None
    if info.file_size > MAX_MANIFEST:
        raise MrisrError(f"{zip_path}: {MANIFEST} is {info.file_size} bytes; refusing")
    try:
        manifest = parse_json(_read_member(z, info, zip_path))
    except ValueError:
        raise MrisrError(f"{zip_path}: {MANIFEST} is not valid JSON") from None
    keys = ("format", "dataset", "trainer", "plans", "configuration", "folds", "files")
    if not isinstance(manifest, dict) or any(k not in manifest for k in keys):
        raise MrisrError(f"{zip_path}: {MANIFEST} lacks {', '.join(keys)}")
    if manifest["format"] != FORMAT:
        raise MrisrError(
            f"{zip_path}: model format {manifest['format']}; this mrisr reads {FORMAT}"
        )
    if not isinstance(manifest["dataset"], str) or not DATASET_RE.match(manifest["dataset"]):
        raise MrisrError(f"{zip_path}: dataset '{manifest['dataset']}' is not DatasetNNN_Name")
    for key in ("trainer", "plans", "configuration"):
        v = manifest[key]
        if not isinstance(v, str) or not SAFE_NAME.fullmatch(v) or ".." in v or "__" in v:
            raise MrisrError(f"{zip_path}: {MANIFEST} {key} {v!r} is not a valid name")
    folds, files = manifest["folds"], manifest["files"]
    if (
        not isinstance(folds, list)
        or not folds
        or any(str(f) not in paths.FOLD_NAMES for f in folds)
    ):
        raise MrisrError(
            f"{zip_path}: {MANIFEST} folds must be a non-empty list of "
            f"{', '.join(paths.FOLD_NAMES)}"
        )
    manifest["folds"] = [str(f) for f in folds]
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and _HEX64.fullmatch(v) for k, v in files.items()
    ):
        raise MrisrError(
            f"{zip_path}: {MANIFEST} files must map each member to its SHA-256 (64 hex digits)"
        )
    if manifest.get("checkpoint", "final") not in ("final", "best"):
        raise MrisrError(f"{zip_path}: {MANIFEST} checkpoint must be 'final' or 'best'")
    if manifest.get("checkpoint_file") not in (
        None,
        TP_MODEL_FILE,
        "checkpoint_final.pth",
        "checkpoint_best.pth",
    ):
        raise MrisrError(
            f"{zip_path}: {MANIFEST} checkpoint_file {manifest['checkpoint_file']!r} is not a model file"
        )
    return manifest


def _checkpoint_file(manifest: dict) -> str:
    """Each fold's model file in this export (older exports: ``checkpoint_<checkpoint>.pth``)."""
    return (
        manifest.get("checkpoint_file") or f"checkpoint_{manifest.get('checkpoint', 'final')}.pth"
    )


def _expected_kind(name: str, manifest: dict) -> str | None:
    """What ``name`` is in this model's export layout ('checkpoint', 'model', 'degradation',
    'readme'), or None if an export of this model never writes it."""
    if name == README:
        return "readme"
    dataset, config = manifest["dataset"], manifest["configuration"]
    model = paths.model_folder_name(manifest["trainer"], manifest["plans"], config)
    deg = paths.degradation_folder_name(manifest["plans"], config)
    p = PurePosixPath(name)
    if len(p.parts) < 3 or p.parts[0] != dataset:
        return None
    rel = PurePosixPath(*p.parts[2:])
    if p.parts[1] == model:
        chk = _checkpoint_file(manifest)
        if str(rel) in {f"fold_{f}/{chk}" for f in manifest["folds"]}:
            return "checkpoint"
        if str(rel) in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
            return "model"
        if str(rel) in _FOLD_FILES and rel.parts[0][5:] in manifest["folds"]:
            return "model"
        return None
    if p.parts[1] == deg:
        flat = len(rel.parts) == 1 and rel.suffix in (".json", ".npy", ".png")
        unit = len(rel.parts) == 2 and rel.parts[0] == "units" and rel.suffix in (".json", ".npy")
        return "degradation" if flat or unit else None
    return None


def _read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, zip_path: Path, sink=None) -> bytes:
    """Stream one member (into ``sink`` if given, else returned); one line if it is damaged."""
    chunks = []
    try:
        with z.open(info) as f:
            while chunk := f.read(CHUNK):
                if sink is None:
                    chunks.append(chunk)
                else:
                    sink(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
        raise MrisrError(
            f"{zip_path}: member '{info.filename}' is damaged ({type(e).__name__}); "
            "export the model again"
        ) from None
    return b"".join(chunks)


def _check_sizes(infos: list[zipfile.ZipInfo], kinds: dict[str, str], zip_path: Path, root: Path):
    total = 0
    for info in infos:
        cap = MAX_CHECKPOINT if kinds[info.filename] == "checkpoint" else MAX_OTHER
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > cap or (info.file_size > RATIO_FROM and ratio > MAX_RATIO):
            raise MrisrError(
                f"{zip_path}: member '{info.filename}' unpacks to {info.file_size} bytes "
                f"(compression ratio {ratio:.0f}); refusing a decompression bomb"
            )
        total += info.file_size
    if total > MAX_UNPACKED:
        raise MrisrError(f"{zip_path}: unpacks to more than {MAX_UNPACKED >> 30} GiB")
    free = shutil.disk_usage(root).free
    if total > free:
        raise write_error(
            root, OSError(errno.ENOSPC, f"needs {total >> 20} MiB, {free >> 20} MiB free")
        )


def _extract(
    z: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, cap: int, zip_path: Path
) -> str:
    """Stream a member to ``dest`` under ``cap`` bytes; returns its SHA-256."""
    digest, written = hashlib.sha256(), 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:

        def sink(chunk: bytes) -> None:
            nonlocal written
            written += len(chunk)
            if written > cap:
                raise MrisrError(
                    f"{zip_path}: member '{info.filename}' unpacks beyond {cap} bytes; "
                    "refusing a decompression bomb"
                )
            digest.update(chunk)
            out.write(chunk)

        _read_member(z, info, zip_path, sink)
    return digest.hexdigest()


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
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise MrisrError(f"{zip_path}: not a zip file ({type(e).__name__})") from None
    with z:
        infos = [i for i in z.infolist() if not i.is_dir()]
        for info in z.infolist():
            _safe_name(info.filename, info, zip_path)
        manifest = _read_manifest(z, zip_path)
        members = [i for i in infos if i.filename != MANIFEST]
        names = [i.filename for i in members]
        if len(set(names)) != len(names):
            raise MrisrError(f"{zip_path}: a member appears twice; refusing to install")
        kinds = {n: _expected_kind(n, manifest) for n in names}
        foreign = sorted(n for n, k in kinds.items() if k is None)
        if foreign:
            raise MrisrError(
                f"{zip_path}: member '{foreign[0]}' is not part of the model "
                f"{manifest['trainer']}__{manifest['plans']}__{manifest['configuration']}"
                f"{f' (and {len(foreign) - 1} more)' if len(foreign) > 1 else ''}; "
                "refusing to install"
            )
        if set(names) != set(manifest["files"]):
            extra = sorted(set(names) ^ set(manifest["files"]))
            raise MrisrError(
                f"{zip_path}: members differ from the manifest ({', '.join(extra[:3])})"
            )
        make_dirs(root)
        _check_sizes(members, kinds, zip_path, root)
        try:
            tmp = Path(tempfile.mkdtemp(prefix=".install_", dir=root))
        except OSError as e:
            raise write_error(root, e) from None
        try:
            for info in sorted(members, key=lambda i: i.filename):
                name = info.filename
                dest = (tmp / name).resolve()
                if tmp.resolve() not in dest.parents:
                    raise MrisrError(f"{zip_path}: member '{name}' escapes the target folder")
                cap = MAX_CHECKPOINT if kinds[name] == "checkpoint" else MAX_OTHER
                try:
                    digest = _extract(z, info, dest, cap, zip_path)
                except OSError as e:
                    raise write_error(root, e) from None
                if digest != manifest["files"][name]:
                    raise MrisrError(f"{zip_path}: '{name}' does not match its manifest hash")
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
    chk = _checkpoint_file(manifest)
    if chk != checkpoint_file(plans, config, manifest.get("checkpoint", "final")):
        raise MrisrError(f"{zip_path}: {chk} is not the model file of configuration '{config}'")
    for f in manifest["folds"]:
        if not (src / f"fold_{f}" / chk).is_file():
            raise MrisrError(f"{zip_path}: fold '{f}' has no {chk}")
        if chk == TP_MODEL_FILE:  # weights-only, its format checked
            load_model(src / f"fold_{f}" / chk)
        else:
            _check_checkpoint(src / f"fold_{f}" / chk, manifest, plans)
    for p in (tmp / dataset).rglob("*"):
        if p.suffix == ".npy":
            try:
                np.load(p, allow_pickle=False)
            except (ValueError, OSError, EOFError):
                raise MrisrError(
                    f"{p.relative_to(tmp)}: not a plain .npy array; refusing"
                ) from None
        elif p.suffix == ".json":
            try:
                parse_json(p.read_bytes())
            except ValueError:
                raise MrisrError(f"{p.relative_to(tmp)}: not valid JSON") from None
    dest = root / dataset / model
    if dest.exists() and not overwrite:
        raise MrisrError(f"{dest} exists: remove it or install with --overwrite to replace it")
    readme = tmp / README
    if readme.is_file():
        os.replace(readme, src / README)
    try:
        (root / dataset).mkdir(parents=True, exist_ok=True)
        old = None
        if dest.exists():  # --overwrite: this model's folder, swapped in as a whole
            old = Path(tempfile.mkdtemp(prefix=".replaced_", dir=tmp)) / model
            os.replace(dest, old)
        try:
            os.replace(src, dest)
        except OSError:
            if old is not None:
                os.replace(old, dest)  # the installed model stays as it was
            raise
        deg_name = paths.degradation_folder_name(manifest["plans"], config)
        deg = tmp / dataset / deg_name
        if deg.is_dir():
            if (root / dataset / deg_name).exists():
                logger.info("kept the existing %s (a local training's cache)", deg_name)
            else:
                os.replace(deg, root / dataset / deg_name)
    except OSError as e:
        raise write_error(root / dataset, e) from None
    logger.info("installed %s into %s", model, root / dataset)
    return dest
