"""The paper's Table 2 from cross-validation results (the figures: :mod:`.comparison_figures`).

Rows: the registered metrics (:mod:`mrisr.metrics.registry`: BRISQUE / SSIM / PSNR);
columns: the plans' configurations (:func:`columns_of`: those without training first, the
plans' default last, each under its ``label``); each cell mean +- sd over
every held-out validation case of the trained folds, and the p-value of a paired t-test
(same cases) against the best column of the row. Full-reference
metrics come from the folds' validation summaries (bicubic: the baseline every fold's
validation computes for its cases); no-reference ones are computed here on the validation
SR volumes (cached per metric in ``validation/<metric>.json``) and on bicubic-interpolated
real LR.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import stats

from mrisr import paths
from mrisr.evaluation.comparison_figures import comparison_figure, mscn_figure
from mrisr.imageio.sitk_io import read_scan
from mrisr.inference.predictor import bicubic_scan
from mrisr.metrics.registry import Metric, metric
from mrisr.metrics.registry import metrics as registered_metrics
from mrisr.plans import BASELINE_CONFIGURATION, DEFAULT_PLANS, DEFAULT_TRAINER, Plans
from mrisr.preprocessing.dataset import PreprocessedDataset
from mrisr.preprocessing.foreground import foreground_mask
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import (
    IncompleteWrite,
    atomic_path,
    load_json,
    load_json_or_error,
    save_json,
    verify_file,
)
from mrisr.utilities.safety import safe_name

logger = logging.getLogger(__name__)


def columns_of(plans: Plans) -> list[tuple[str, str]]:
    """(configuration, label) in table order: every configuration of the plans, those that
    train nothing (interpolation) first, the plans' default last (the method's column, as
    in the paper's table)."""
    names = plans.configuration_names
    default = plans.default_configuration
    order = sorted(
        names, key=lambda n: (plans.configuration(n).requires_training, n == default)
    )  # stable: the plans' order within each group
    return [(n, plans.configuration(n).label) for n in order]


def plans_of(dataset: str, plans_name: str = DEFAULT_PLANS) -> Plans:
    """The dataset's plans: the preprocessed ones, else a trained model's copy."""
    pre = paths.preprocessed_root() / dataset / f"{plans_name}.json"
    if pre.is_file():
        return Plans.load(pre)
    copies = sorted((paths.results_root() / dataset).glob(f"*__{plans_name}__*/plans.json"))
    if not copies:
        raise MrisrError(f"{pre}: plans not found; run mrisr_plan_and_preprocess first")
    return Plans.load(copies[0])


def metric_rows() -> list[tuple[str, str, bool]]:
    """(key, label, higher is better) of the table's rows: the registered metrics in
    reverse table order, as in the paper (BRISQUE, SSIM, PSNR)."""
    return [(m.name, m.label, m.higher_is_better) for m in reversed(registered_metrics())]


FOLDS = paths.CV_FOLDS


def _no_reference_of(m: Metric, path: Path, cache: dict) -> float:
    """The no-reference metric ``m`` of a validation SR volume (on its foreground)."""
    key = str(path)
    try:
        verify_file(path)  # ITK reads a truncated .nii.gz without a word, zeros at its end
    except IncompleteWrite as e:
        raise MrisrError(
            f"{path}: damaged validation SR volume ({e}); delete it and re-create it with "
            "mrisr_train FOLD -c CONFIG --val-only"
        ) from None
    if key not in cache:
        try:
            arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path), sitk.sitkFloat32))
        except RuntimeError:
            raise MrisrError(
                f"{path}: unreadable validation SR volume; delete it and re-create it with "
                "mrisr_train FOLD -c CONFIG --val-only"
            ) from None
        cache[key] = m.compute(arr, foreground_mask(arr))
    return _num(cache[key])


def _num(v: object) -> float:
    """A metric read back from JSON (``null`` for a non-finite value) as a float."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")


def _load_summary(path: Path, fold: str, config: str, trainer: str) -> dict:
    fix = f"re-create it with mrisr_train {fold} -c {config} -tr {trainer} --val-only"
    summary = load_json_or_error(path, fix)
    if not isinstance(summary, dict) or not isinstance(summary.get("cases"), dict):
        raise MrisrError(f"{path}: not a validation summary (no 'cases'); {fix}")
    for case, metrics in summary["cases"].items():
        if not isinstance(metrics, dict) or not all(isinstance(m, dict) for m in metrics.values()):
            raise MrisrError(f"{path}: case {case} has no per-method metrics; {fix}")
    return summary


def _load_cache(path: Path, m: Metric) -> dict:
    """The cache of metric ``m`` of a validation folder; a damaged one is recomputed."""
    if not path.is_file():
        return {}
    try:
        cache = load_json(path)
    except (ValueError, OSError, UnicodeDecodeError):
        cache = None
    if isinstance(cache, dict) and all(
        v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
        for v in cache.values()
    ):
        return cache
    logger.warning("%s is damaged: recomputing the %s values", path, m.label)
    return {}


def collect_results(
    dataset: str,
    trainer: str = DEFAULT_TRAINER,
    plans_name: str = DEFAULT_PLANS,
    columns: list[tuple[str, str]] | None = None,
) -> dict:
    """config -> case -> {metric name: value, "fold", "sr_file"} over held-out folds, for
    the configurations of ``columns`` (default: :func:`columns_of` the dataset's plans)."""
    safe_name(trainer, "-tr")
    safe_name(plans_name, "-p")
    root = paths.results_root() / dataset
    results: dict[str, dict[str, dict]] = {}
    no_reference = registered_metrics(reference=False)
    plans = plans_of(dataset, plans_name)
    # the baselines (interpolation, nothing trained) every fold of a configuration computes
    baselines = {
        n for n in plans.configuration_names if not plans.configuration(n).requires_training
    }
    for config, _ in columns or columns_of(plans):
        folder = root / paths.model_folder_name(trainer, plans_name, config)
        for fold in FOLDS:
            vdir = paths.fold_folder(folder, fold) / "validation"
            if not (vdir / "summary.json").is_file():
                continue
            summary = _load_summary(vdir / "summary.json", fold, config, trainer)
            if not summary.get("held_out", True):
                continue
            caches = {m: _load_cache(vdir / f"{m.name}.json", m) for m in no_reference}
            n_cached = {m: len(c) for m, c in caches.items()}
            for case, metrics in summary["cases"].items():
                sr_file = next(iter(sorted(vdir.glob(f"{case}.*"))), None)
                if sr_file is None and config not in baselines:
                    raise MrisrError(
                        f"{vdir}: the validation SR volume of case {case} is missing; "
                        f"re-create it with mrisr_train {fold} -c {config} -tr {trainer} "
                        "--val-only"
                    )
                for method, m in metrics.items():
                    entry = {k.name: _num(m.get(k.name)) for k in registered_metrics(True)}
                    entry["fold"] = fold
                    if method == config:
                        if sr_file is not None:
                            entry.update(
                                {m.name: _no_reference_of(m, sr_file, c) for m, c in caches.items()}
                            )
                            entry["sr_file"] = str(sr_file)
                        results.setdefault(config, {})[case] = entry
                    elif method in baselines:  # the baseline every fold computes
                        results.setdefault(method, {}).setdefault(case, entry)
            for m, cache in caches.items():
                if len(cache) != n_cached[m]:
                    save_json(cache, vdir / f"{m.name}.json")
    return results


def _baseline_no_reference(dataset: str, results: dict, plans_name: str) -> None:
    """The no-reference metrics of the interpolation baseline (bicubic-interpolated real LR)
    for the cases that only have its full-reference ones."""
    no_reference = registered_metrics(reference=False)
    have = results.get(BASELINE_CONFIGURATION, {})
    todo = [c for c, v in have.items() if any(m.name not in v for m in no_reference)]
    if not todo:
        return
    plans = Plans.load(paths.preprocessed_root() / dataset / f"{plans_name}.json")
    props = PreprocessedDataset.for_plans(plans).properties
    for c in todo:
        img = bicubic_scan(read_scan(props[c]["source_files"]["lr"], check=False), plans)
        arr = sitk.GetArrayFromImage(img)
        for m in no_reference:
            if m.name not in have[c]:
                have[c][m.name] = m.compute(arr, foreground_mask(arr))


def comparison_table(results: dict, columns: list[tuple[str, str]] | None = None) -> dict:
    """Mean, sd and paired t-test p-value against the best column, per metric row;
    ``columns``: (configuration, label) in table order (default: ``results``' order)."""
    columns = columns or [(c, c) for c in results]
    configs = [c for c, _ in columns if results.get(c)]
    if not configs:
        raise MrisrError("no cross-validation results found: train folds with mrisr_train first")
    common = sorted(set.intersection(*(set(results[c]) for c in configs)))
    labels = {c: label for c, label in columns if c in configs}
    table = {"cases": common, "columns": configs, "labels": labels, "rows": {}}
    for key, _, _ in metric_rows():
        vals = {
            c: np.array([results[c][k].get(key, np.nan) for k in common], float) for c in configs
        }
        means = {
            c: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            for c, v in vals.items()
        }
        finite = {c: m for c, m in means.items() if np.isfinite(m)}
        best = metric(key).best(finite)
        row = {}
        for c in configs:
            v = vals[c]
            p = None
            if best is not None and c != best:
                ok = np.isfinite(v) & np.isfinite(vals[best])
                if ok.sum() >= 2 and not np.allclose(v[ok], vals[best][ok]):
                    p = float(stats.ttest_rel(v[ok], vals[best][ok]).pvalue)
            row[c] = {
                "mean": means[c],
                "sd": float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else 0.0,
                "n": int(np.isfinite(v).sum()),
                "p_vs_best": p,
                "best": c == best,
            }
        table["rows"][key] = row
    return table


def table_markdown(table: dict, cases_are: str = "held-out cases (cross-validation)") -> str:
    cols = table["columns"]
    names = {c: table.get("labels", {}).get(c, c) for c in cols}
    lines = [
        "| metric | " + " | ".join(names[c] for c in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for key, label, _ in metric_rows():
        cells = []
        for c in cols:
            r = table["rows"][key][c]
            cell = metric(key).table_fmt.format(r["mean"], r["sd"])
            if r["best"]:
                cell = f"**{cell}**"
            elif r["p_vs_best"] is not None:
                cell += f" (p={r['p_vs_best']:.2g})"
            cells.append(cell)
        lines.append(f"| {label} {metric(key).arrow} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"{len(table['cases'])} {cases_are}; mean ± sd; p: paired t-test "
        "against the best column (bold)."
        + "".join(f" {label}: lower is better." for _, label, up in metric_rows() if not up)
    )
    lines.append(separation_text(table, names))
    return "\n".join(lines)


#: a difference to the best column with a paired p-value at or above this is not resolved
SEPARATION_P = 0.05


def separation_text(table: dict, names: dict | None = None, key: str = "psnr") -> str:
    """Which configurations the cases cannot tell apart from the best one on ``key``
    (paired t-test p >= :data:`SEPARATION_P`, or too few cases for a test)."""
    names = names or {}
    rows = table["rows"].get(key)
    if not rows:
        return ""
    best = next((c for c, r in rows.items() if r["best"]), None)
    if best is None:
        return ""
    tied = [
        names.get(c, c)
        for c, r in rows.items()
        if not r["best"] and (r["p_vs_best"] is None or r["p_vs_best"] >= SEPARATION_P)
    ]
    label = metric(key).label
    if not tied:
        return (
            f"{label}: {names.get(best, best)} is best, separated from every other column "
            f"(p < {SEPARATION_P})."
        )
    return (
        f"{label}: {names.get(best, best)} is best, but these {len(table['cases'])} cases cannot "
        f"separate it from {', '.join(tied)} (p >= {SEPARATION_P} or too few cases): "
        "more folds or cases would."
    )


def fidelity_table(dataset: str, plans_name: str = DEFAULT_PLANS) -> dict:
    """Each configuration's synthetic LR against the registered real LR of the training
    pairs (the degradation stage's check; mean over the model's case sets): SSIM, PSNR."""
    plans = Plans.load(paths.preprocessed_root() / dataset / f"{plans_name}.json")
    base = paths.preprocessed_root() / dataset / plans.data_identifier / "synthetic"
    out = {}
    for config, label in columns_of(plans):
        vals = []
        for f in sorted((base / config).glob("*/summary.json")):
            try:
                fid = load_json(f).get("fidelity")
            except ValueError:
                continue
            if fid:
                vals.append(fid["mean"])
        if vals:
            out[label] = {k: float(np.mean([v[k] for v in vals])) for k in ("ssim", "psnr")}
    return out


def fidelity_markdown(fidelity: dict) -> str:
    lines = ["| synthetic LR of | SSIM to real LR | PSNR to real LR |", "|---|---|---|"]
    for name, v in sorted(fidelity.items(), key=lambda kv: -kv[1]["ssim"]):
        lines.append(f"| {name} | {v['ssim']:.4f} | {v['psnr']:.2f} |")
    return "\n".join(lines)


def find_best_configuration(
    dataset: str, trainer: str = DEFAULT_TRAINER, plans_name: str = DEFAULT_PLANS
) -> dict:
    """Write comparison.md / comparison.json and the figures into $mrisr_results/<dataset>/."""
    plans = plans_of(dataset, plans_name)
    columns = columns_of(plans)
    results = collect_results(dataset, trainer, plans_name, columns)
    if BASELINE_CONFIGURATION in results:
        _baseline_no_reference(dataset, results, plans_name)
    table = comparison_table(results, columns)
    out = paths.results_root() / dataset
    md = table_markdown(table)
    fidelity = fidelity_table(dataset, plans_name)
    if fidelity:
        md += (
            "\n\nSynthetic LR vs the registered real LR of the training pairs (the degradation "
            "stage's check; raw real LR, so noise lowers every row alike):\n\n"
            + fidelity_markdown(fidelity)
        )
    with atomic_path(out / "comparison.md") as tmp:
        tmp.write_text(f"# {dataset}: cross-validation comparison\n\n{md}\n", encoding="utf-8")
    # the figure's uncertainty map: of the configuration the plans recommend
    default = plans.default_configuration
    # the figures show in-plane SR (slices of the real LR beside each configuration's)
    in_plane = [c for c in columns if plans.configuration(c[0]).axis == "in-plane"]
    fig_columns = sorted(in_plane, key=lambda c: c[0] != default)
    fig4 = mscn = None
    if in_plane:
        fig4 = comparison_figure(
            dataset, results, out / "comparison_fig4.png", fig_columns, plans_name
        )
        mscn = mscn_figure(dataset, out / "mscn_fig5.png", in_plane, plans_name)
    psnr_row = table["rows"]["psnr"]
    finite = [c for c in psnr_row if np.isfinite(psnr_row[c]["mean"])]
    best = max(finite, key=lambda c: psnr_row[c]["mean"]) if finite else None
    report = {
        "dataset": dataset,
        "table": table,
        "best_configuration_by_psnr": best,
        "figures": {
            "comparison": str(fig4) if fig4 else None,
            "mscn": str(out / "mscn_fig5.png") if mscn else None,
        },
        "mscn_distance_to_real_lr": mscn,
        "degradation_fidelity": fidelity,
    }
    save_json(report, out / "comparison.json")
    report["markdown"] = md
    return report
