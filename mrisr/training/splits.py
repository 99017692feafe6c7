"""Cross-validation folds: ``splits_final.json`` in ``$mrisr_preprocessed/<dataset>/``.

The file is a list with one ``{"train": [...], "val": [...]}`` per fold (nnU-Net's format).

Rules
-----
* Folds are by case (a case is one patient/session), seeded, at most five.
* Validation needs a real LR scan *and* its HR: only pairs are ever validation cases.
  HR-only and LR-only cases always go to ``train`` (they feed the degradation model and,
  HR-only ones, the SR training).
* With fewer than five pairs there are as many folds as pairs (leave one pair out); with
  no pair at all there is no fold and only ``all`` can be trained.
* A user-supplied ``splits_final.json`` is respected, after validation: unknown cases, a
  case in both ``train`` and ``val`` of one fold, or a non-pair validation case is a
  one-line error naming the file.
* Fold ``all`` trains on every case. Its validation runs on every pair, with the summary
  flagged ``"held_out": false`` (the numbers are training-set numbers, a sanity check, not
  a cross-validation result).

Validation cases of a fold never contribute training pairs: :func:`fold_cases` is the one
place that says which cases a fold trains on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mrisr import paths
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import load_json, save_json

logger = logging.getLogger(__name__)

SPLITS_FILE = "splits_final.json"
NUM_FOLDS = paths.NUM_FOLDS
SEED = 12345
ALL = paths.ALL_FOLD


def splits_path(dataset: str) -> Path:
    return paths.preprocessed_root() / dataset / SPLITS_FILE


def generate_splits(
    cases: list[str], pairs: list[str], num_folds: int = NUM_FOLDS, seed: int = SEED
) -> list[dict[str, list[str]]]:
    """Seeded folds: the pairs are shuffled and cut into ``min(num_folds, len(pairs))``
    validation groups; every other case trains in every fold."""
    pairs = sorted(set(pairs))
    others = sorted(set(cases) - set(pairs))
    n = min(num_folds, len(pairs))
    if n == 0:
        return []
    order = np.random.default_rng(seed).permutation(len(pairs))
    groups = np.array_split(order, n)
    splits = []
    for g in groups:
        val = sorted(pairs[i] for i in g)
        train = sorted(set(pairs) - set(val)) + others
        splits.append({"train": sorted(train), "val": val})
    return splits


def validate_splits(
    splits: object, cases: list[str], pairs: list[str], source: str | Path
) -> list[dict[str, list[str]]]:
    """Check a splits list against the dataset; one-line MrisrError naming ``source``."""
    if not isinstance(splits, list) or not all(
        isinstance(f, dict)
        and isinstance(f.get("train"), list)
        and isinstance(f.get("val"), list)
        and all(isinstance(c, str) for c in f["train"] + f["val"])
        for f in splits
    ):
        raise MrisrError(
            f'{source}: expected a list of {{"train": [case, ...], "val": [case, ...]}} objects'
        )
    known, paired = set(cases), set(pairs)
    for k, f in enumerate(splits):
        unknown = sorted((set(f["train"]) | set(f["val"])) - known)
        if unknown:
            raise MrisrError(
                f"{source}: fold {k} names unknown case(s) {', '.join(unknown[:5])}; "
                "known cases are those of the preprocessed dataset"
            )
        both = sorted(set(f["train"]) & set(f["val"]))
        if both:
            raise MrisrError(
                f"{source}: fold {k} has case(s) in both train and val: {', '.join(both[:5])}"
            )
        unpaired = sorted(set(f["val"]) - paired)
        if unpaired:
            raise MrisrError(
                f"{source}: fold {k} validates on case(s) without both an LR and an HR scan: "
                f"{', '.join(unpaired[:5])}; validation needs pairs"
            )
        if not f["train"]:
            raise MrisrError(f"{source}: fold {k} has no training case")
    return [{"train": list(f["train"]), "val": list(f["val"])} for f in splits]


def load_or_create_splits(
    dataset: str, cases: list[str], pairs: list[str], write: bool = True
) -> list[dict[str, list[str]]]:
    """The dataset's folds: the existing ``splits_final.json`` (validated) or new seeded
    folds written there (only when ``write``: one process creates the file)."""
    path = splits_path(dataset)
    if path.is_file():
        try:
            data = load_json(path)
        except (ValueError, UnicodeDecodeError) as e:
            raise MrisrError(f"{path}: not valid JSON ({e}); fix or delete it") from None
        return validate_splits(data, cases, pairs, path)
    splits = generate_splits(cases, pairs)
    if write:
        save_json(splits, path)
        logger.info(
            "%s: %d folds over %d pairs (seed %d) written to %s",
            dataset,
            len(splits),
            len(set(pairs)),
            SEED,
            path,
        )
    return splits


def parse_fold(fold: str | int, num_folds: int) -> int | str:
    """``"0".."N-1"`` -> int, ``"all"`` -> ``"all"``; anything else: one-line error."""
    valid = [str(i) for i in range(num_folds)] + [ALL]
    f = str(fold).strip()
    if f not in valid:
        raise MrisrError(f"unknown fold '{fold}'; valid folds: {', '.join(valid)}")
    return ALL if f == ALL else int(f)


def fold_cases(
    splits: list[dict[str, list[str]]], fold: int | str, cases: list[str], pairs: list[str]
) -> tuple[list[str], list[str], bool]:
    """``(train cases, validation cases, held_out)`` of a fold.

    Fold ``all`` trains on every case and validates on every pair (not held out).
    """
    if fold == ALL:
        return sorted(cases), sorted(pairs), False
    f = splits[int(fold)]
    return sorted(f["train"]), sorted(f["val"]), True
