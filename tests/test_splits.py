"""Cross-validation folds: seeded, pairs in validation, user files validated."""

import json

import pytest

from mrisr.training.splits import (
    fold_cases,
    generate_splits,
    load_or_create_splits,
    parse_fold,
    splits_path,
    validate_splits,
)
from mrisr.utilities.errors import MrisrError

PAIRS = [f"p{i}" for i in range(8)]
HR_ONLY = ["h0", "h1"]
LR_ONLY = ["l0"]
CASES = PAIRS + HR_ONLY + LR_ONLY


def test_folds_are_seeded_and_validate_on_pairs_only():
    a = generate_splits(CASES, PAIRS)
    assert a == generate_splits(list(reversed(CASES)), PAIRS)  # seeded, order-independent
    assert len(a) == 5
    seen = []
    for f in a:
        assert set(f["val"]) <= set(PAIRS)
        assert not set(f["train"]) & set(f["val"])
        assert set(f["train"]) | set(f["val"]) == set(CASES)
        assert set(HR_ONLY + LR_ONLY) <= set(f["train"])
        seen += f["val"]
    assert sorted(seen) == sorted(PAIRS)  # every pair validated exactly once


def test_fewer_pairs_than_folds():
    s = generate_splits(["a", "b", "x"], ["a", "b"])
    assert len(s) == 2 and [f["val"] for f in s] in (
        [["a"], ["b"]],
        [["b"], ["a"]],
    )
    assert generate_splits(["x", "y"], []) == []
    with pytest.raises(MrisrError, match="valid folds: 0, 1, all"):
        parse_fold(2, 2)
    assert parse_fold("all", 0) == "all" and parse_fold("1", 2) == 1


def test_fold_all_trains_on_everything():
    train, val, held_out = fold_cases(generate_splits(CASES, PAIRS), "all", CASES, PAIRS)
    assert train == sorted(CASES) and val == sorted(PAIRS) and not held_out
    train, val, held_out = fold_cases(generate_splits(CASES, PAIRS), 2, CASES, PAIRS)
    assert held_out and not set(train) & set(val)


def test_file_written_then_respected(mrisr_env):
    (mrisr_env["mrisr_preprocessed"] / "D").mkdir()
    s = load_or_create_splits("D", CASES, PAIRS)
    assert json.loads(splits_path("D").read_text()) == s
    mine = [{"train": ["p1", "p2", "h0", "l0"], "val": ["p0"]}]
    splits_path("D").write_text(json.dumps(mine))
    assert load_or_create_splits("D", CASES, PAIRS) == mine


@pytest.mark.parametrize(
    "bad, message",
    [
        ([{"train": ["p1", "zz"], "val": ["p0"]}], "unknown case"),
        ([{"train": ["p1", "p0"], "val": ["p0"]}], "both train and val"),
        ([{"train": ["p1"], "val": ["h0"]}], "without both an LR and an HR"),
        ({"train": ["p1"]}, "expected a list"),
    ],
)
def test_bad_user_file_is_a_one_line_error(bad, message, tmp_path):
    f = tmp_path / "splits_final.json"
    with pytest.raises(MrisrError, match=message) as e:
        validate_splits(bad, CASES, PAIRS, f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)
