"""The one path schema: roots from environment variables (resolved lazily, only when
used), dataset resolution, and every folder and file name the stages share.

``mrisr_raw``          raw datasets (``DatasetNNN_Name/`` with dataset.json, imagesHR/, imagesLR/)
``mrisr_preprocessed`` fingerprints, plans and preprocessed cases
``mrisr_results``      trained models, kernels, validation results

Under the roots::

    $mrisr_preprocessed/<dataset>/<plans>.json, <plans>_preprocessed/<case>_*.b2nd
    $mrisr_preprocessed/<dataset>/<plans>_preprocessed/synthetic/<config>/<model id>/<case>_lr*
    $mrisr_results/<dataset>/<trainer>__<plans>__<config>/fold_<K>/
    $mrisr_results/<dataset>/degradation__<plans>__<config>/
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mrisr.utilities.errors import MrisrError
from mrisr.utilities.safety import safe_name

DATASET_RE = re.compile(r"^Dataset(\d{3})_([A-Za-z0-9_-]+)$")

#: cross-validation folds: ``fold_0`` .. ``fold_4`` and ``fold_all`` (trained on every case)
NUM_FOLDS = 5
ALL_FOLD = "all"
CV_FOLDS = tuple(str(i) for i in range(NUM_FOLDS))
FOLD_NAMES = (*CV_FOLDS, ALL_FOLD)

_HELP = {
    "mrisr_raw": "the folder holding your raw datasets (DatasetNNN_Name/)",
    "mrisr_preprocessed": "a folder for fingerprints, plans and preprocessed data",
    "mrisr_results": "a folder for trained models and results",
}


def _resolved(var: str) -> Path | None:
    value = os.environ.get(var)
    return Path(value).expanduser().resolve() if value else None


def check_roots() -> None:
    """One-line MrisrError if two set roots are the same folder or one lies inside another
    (``--clean`` of the preprocessed data would otherwise delete raw scans), or if a root
    is a file."""
    roots = {v: _resolved(v) for v in _HELP}
    for var, p in roots.items():
        if p is not None and p.exists() and not p.is_dir():
            raise MrisrError(f"{var}={p} is a file, not a folder: point {var} to a folder")
    names = [v for v in _HELP if roots[v] is not None]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pa, pb = roots[a], roots[b]
            if pa == pb or pa in pb.parents or pb in pa.parents:
                how = "is the same folder as" if pa == pb else "is nested with"
                raise MrisrError(
                    f"{a}={pa} {how} {b}={pb}: the three roots must be separate folders "
                    "(none inside another), so that no command writes into or deletes raw data"
                )


def _root(var: str) -> Path:
    value = os.environ.get(var)
    if not value:
        raise MrisrError(
            f"environment variable {var} is not set: export {var}=/path/to/{var} ({_HELP[var]})"
        )
    check_roots()
    return Path(value).expanduser()  # '~/res' is the user's home, as the shell would expand it


def inside(root: Path, path: Path, what: str = "path") -> Path:
    """``path`` resolved; one-line MrisrError unless it lies inside ``root``."""
    r, p = Path(root).resolve(), Path(path).resolve()
    if p != r and r not in p.parents:
        raise MrisrError(f"{what} {path} resolves to {p}, outside {r}; refusing to touch it")
    return p


def raw_root() -> Path:
    return _root("mrisr_raw")


def preprocessed_root() -> Path:
    return _root("mrisr_preprocessed")


def results_root() -> Path:
    return _root("mrisr_results")


def machine_cache(file: str | Path) -> Path | None:
    """``file`` under ``$mrisr_results`` (this machine's timings, see
    :mod:`mrisr.utilities.timings`); None where mrisr_results is not set."""
    try:
        return results_root() / file
    except MrisrError:
        return None


# ------------------------------------------------------------------ dataset resolution
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


def resolve_preprocessed_dataset(identifier: str | int | None) -> str:
    """``-d`` -> dataset name; without ``-d``, the only dataset in ``$mrisr_preprocessed``."""
    root = preprocessed_root()
    if identifier is not None:
        return resolve_dataset_name(identifier, root)
    names = list_datasets(root)
    if not names:
        raise MrisrError(
            f"no preprocessed dataset in {root} (mrisr_preprocessed); "
            "run mrisr_plan_and_preprocess first"
        )
    if len(names) > 1:
        raise MrisrError(f"several datasets in {root}: choose one with -d ({', '.join(names)})")
    return names[0]


def pick_root_for_bicubic(identifier: str | None, results: Path, preprocessed: Path) -> Path:
    """``bicubic`` needs no trained model: use the preprocessed root when the dataset has
    no results folder."""
    if identifier is None:
        return results if list_datasets(results) else preprocessed
    try:
        resolve_dataset_name(identifier, results)
        return results
    except MrisrError:
        return preprocessed


def resolve_results_dataset(identifier: str | None, bicubic: bool = False) -> str:
    """The dataset of ``-d`` among the trained ones; ``bicubic`` (nothing to train) also
    looks among the preprocessed ones."""
    root = results_root()
    if bicubic:
        root = pick_root_for_bicubic(identifier, root, preprocessed_root())
    if identifier is not None:
        return resolve_dataset_name(identifier, root)
    names = list_datasets(root)
    if len(names) != 1:
        raise MrisrError(
            f"{'no trained dataset' if not names else 'several datasets'} in {root} "
            f"(mrisr_results){': choose one with -d (' + ', '.join(names) + ')' if names else ''}"
        )
    return names[0]


# ------------------------------------------------------------------ folders and files
def model_folder_name(trainer: str, plans_name: str, configuration: str) -> str:
    """``<trainer>__<plans>__<config>``: the results folder of one trained configuration."""
    return f"{trainer}__{plans_name}__{configuration}"


def results_folder(
    dataset: str,
    trainer: str,
    plans_name: str,
    configuration: str,
    labels: tuple[str, str, str] = ("trainer", "plans name", "-c"),
    root: Path | None = None,
) -> Path:
    """The results folder of a configuration (names checked to be single folder names;
    ``labels`` name the options they came from in the error)."""
    for value, what in zip((trainer, plans_name, configuration), labels):
        safe_name(value, what)
    base = results_root() if root is None else Path(root)
    return base / dataset / model_folder_name(trainer, plans_name, configuration)


def fold_folder(output: Path, fold: int | str) -> Path:
    return Path(output) / f"fold_{fold}"


def degradation_folder_name(plans_name: str, configuration: str) -> str:
    return f"degradation__{plans_name}__{configuration}"


def degradation_folder(dataset: str, plans_name: str, configuration: str) -> Path:
    """The trained degradation models, kernels and their figures of a configuration."""
    return results_root() / dataset / degradation_folder_name(plans_name, configuration)


def preprocessed_folder(dataset: str, data_identifier: str) -> Path:
    return preprocessed_root() / dataset / data_identifier


def synthetic_lr_path(
    preprocessed: Path, configuration: str, model_id: str, case: str, suffix: str
) -> Path:
    """The synthetic LR of a case made by the degradation model ``model_id``."""
    return Path(preprocessed) / "synthetic" / configuration / model_id / f"{case}_lr{suffix}"
