"""The importable API behind ``mrisr_train``: one fold of one configuration.

``run_training(fold, dataset, configuration, trainer, ...)``:

1. resolves the dataset (the only one in ``$mrisr_preprocessed`` when not given), its
   plans, the configuration and the trainer (one-line errors listing the valid names);
2. reads or creates ``splits_final.json`` and takes the fold's training and validation
   cases (validation cases never reach the degradation stage or the SR training);
3. for a configuration that trains (``sr`` section): makes sure the degradation stage's
   synthetic LR exists for the fold's training cases (runs it first if missing), trains
   (``--continue`` resumes from ``checkpoint_latest.pth``), in one process or in DDP
   processes (``num_gpus > 1`` or torchrun);
4. validates the fold on the real LR scans of its validation pairs with the final network
   (for ``bicubic``: bicubic interpolation, nothing trained) and writes
   ``fold_K/validation/summary.json``.

Results: ``$mrisr_results/<dataset>/<Trainer>__<plans>__<configuration>/`` holds copies of
the plans, dataset.json and dataset_fingerprint.json it trained with, and ``fold_K/``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from mrisr import paths
from mrisr.degradation.stage import ensure_synthetic_lr, model_id, synthetic_path
from mrisr.networks.checkpoint_io import pretrained_weights_file
from mrisr.paths import fold_folder, resolve_preprocessed_dataset, results_folder
from mrisr.planning.fingerprint import FINGERPRINT_FILE, DatasetFingerprint
from mrisr.plans import DEFAULT_PLANS, DEFAULT_TRAINER, Plans
from mrisr.preprocessing.dataset import PreprocessedDataset
from mrisr.throughplane.api import MODEL_FILE
from mrisr.throughplane.folds import train_fold
from mrisr.throughplane.folds import validate_fold as validate_through_plane
from mrisr.training import distributed
from mrisr.training.checkpointing import FINAL, Checkpointer, network_from_state
from mrisr.training.precision_probe import check_precision
from mrisr.training.splits import ALL, fold_cases, load_or_create_splits, parse_fold
from mrisr.training.trainer import TRAINERS, SRTrainer
from mrisr.training.validation import check_validation_inputs, validate_fold
from mrisr.utilities.cli_support import setup_logging
from mrisr.utilities.devices import check_device
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import load_json, write_bytes_atomic
from mrisr.utilities.safety import safe_name

logger = logging.getLogger(__name__)


def load_plans(dataset: str, plans_name: str = DEFAULT_PLANS) -> Plans:
    safe_name(plans_name, "plans name (-p)")
    return Plans.load(paths.preprocessed_root() / dataset / f"{plans_name}.json")


def copy_training_inputs(plans: Plans, output: Path) -> None:
    """plans.json, dataset.json and dataset_fingerprint.json beside the folds (atomic)."""
    src = paths.preprocessed_root() / plans.dataset_name
    files = {
        "plans.json": Path(plans.path) if plans.path else src / f"{plans.plans_name}.json",
        "dataset.json": src / "dataset.json",
        FINGERPRINT_FILE: src / FINGERPRINT_FILE,
    }
    for name, f in files.items():
        if not f.is_file():
            continue
        data = f.read_bytes()
        dest = output / name
        if dest.is_file() and dest.read_bytes() != data:
            logger.warning(
                "%s differs from %s (re-planned?): replaced; folds trained before may not match",
                dest,
                f,
            )
        if not dest.is_file() or dest.read_bytes() != data:
            write_bytes_atomic(dest, data)


def missing_synthetic_lr(plans: Plans, configuration: str, cases: list[str]) -> list[str]:
    """HR training cases whose synthetic LR the degradation stage has not made yet."""
    ds = PreprocessedDataset.for_plans(plans)
    mid = model_id(plans, configuration, cases)
    return [
        c
        for c in cases
        if ds.properties[c]["has_hr"] and not synthetic_path(plans, configuration, mid, c).is_file()
    ]


def prepare_synthetic_lr(
    plans: Plans, configuration: str, train_cases: list[str], device: str, progress: bool
) -> dict[str, Path]:
    missing = missing_synthetic_lr(plans, configuration, train_cases)
    if missing:
        deg = plans.configuration(configuration).degradation
        logger.info(
            "degradation stage (%s) has no synthetic LR yet for %d of the fold's training "
            "cases: running it first",
            deg["name"],
            len(missing),
        )
    return ensure_synthetic_lr(plans, configuration, train_cases, device=device, progress=progress)


def _file_ending(dataset: str) -> str:
    f = paths.preprocessed_root() / dataset / "dataset.json"
    return load_json(f)["file_ending"] if f.is_file() else ".nii.gz"


@dataclass(frozen=True)
class TrainingJob:
    """One fold's training as every process runs it (picklable: DDP processes get it)."""

    plans: Plans
    configuration: str
    fold: int | str
    fold_dir: Path
    device: str
    num_workers: int | None
    progress: bool
    precision: str = "auto"
    early_stopping: bool = True
    pretrained_weights: Path | None = None
    from_scratch: bool = False


def _train_worker(
    ctx: distributed.DistContext,
    trainer_cls: type[SRTrainer],
    job: TrainingJob,
    synthetic: dict[str, Path],
    val_cases: list[str],
    continue_training: bool,
) -> None:
    """One training process (module level: DDP processes start here through
    torch.multiprocessing.spawn, with no logging configured yet)."""
    if not logging.getLogger().handlers:
        setup_logging()
    trainer = trainer_cls(
        job.plans,
        job.configuration,
        job.fold,
        job.fold_dir,
        distributed.device_for(job.device, ctx),
        ctx,
        job.num_workers,
        job.progress,
    )
    trainer.precision = job.precision
    trainer.pretrained_weights = job.pretrained_weights
    trainer.from_scratch = job.from_scratch
    if not job.early_stopping:
        trainer.early_stopping = False
    dataset = PreprocessedDataset.for_plans(job.plans)
    trainer.run(dataset, synthetic, val_cases, continue_training)


def run_training(
    fold: int | str,
    dataset: str | int | None = None,
    configuration: str | None = None,
    trainer: str = DEFAULT_TRAINER,
    plans_name: str = DEFAULT_PLANS,
    continue_training: bool = False,
    val_only: bool = False,
    device: str = "cpu",
    num_gpus: int = 1,
    num_workers: int | None = None,
    tta: bool | None = None,
    progress: bool = True,
    precision: str = "auto",
    early_stopping: bool = True,
    pretrained_weights: str | Path | None = None,
    from_scratch: bool = False,
) -> dict | None:
    """Train (unless ``val_only`` or nothing to train) and validate one fold; returns the
    validation summary (None on non-main DDP ranks). ``configuration`` None: the plans'
    default (:attr:`mrisr.plans.Plans.default_configuration`, the selection rule's choice). ``precision``: auto (measured, see
    :mod:`mrisr.training.precision_probe`), fp32, bf16 or fp16; ``early_stopping``: False keeps
    the fixed budget (see :mod:`mrisr.training.early_stopping`); ``pretrained_weights``: a
    file whose weights a new training starts from (nnU-Net's ``-pretrained_weights``; see
    :func:`mrisr.networks.checkpoint_io.load_pretrained_weights`); else the plans'
    initialisation (:attr:`mrisr.plans.Plans.initialisation`) unless ``from_scratch``."""
    check_device(device)
    if pretrained_weights is not None and from_scratch:
        raise MrisrError(
            "-pretrained_weights names starting weights; --from-scratch has none: use one"
        )
    if pretrained_weights is not None:
        pretrained_weights = pretrained_weights_file(pretrained_weights)
        if continue_training:
            raise MrisrError(
                "-pretrained_weights starts a new training; --continue resumes one: use one"
            )
        if not pretrained_weights.is_file():
            raise MrisrError(f"{pretrained_weights}: pretrained weights not found")
    check_precision(precision, torch.device(device))
    if num_workers is not None and num_workers < 0:
        raise MrisrError(f"--num-workers {num_workers}: must be 0 or more")
    if num_gpus < 1:
        raise MrisrError(f"--num-gpus must be at least 1, got {num_gpus}")
    if num_gpus > 1 and distributed.env_world_size() > 1:
        raise MrisrError("--num-gpus cannot be combined with torchrun; use one or the other")
    if device == "mps" and num_gpus > 1:
        raise MrisrError("--num-gpus > 1 needs --device cuda (or cpu processes); not mps")
    if device == "cuda" and num_gpus > 1 and num_gpus > torch.cuda.device_count():
        raise MrisrError(
            f"--num-gpus {num_gpus}: only {torch.cuda.device_count()} CUDA device(s) visible"
        )
    ctx = distributed.context_from_env(device)
    try:
        return _run(
            ctx,
            fold,
            dataset,
            configuration,
            trainer,
            plans_name,
            continue_training,
            val_only,
            device,
            num_gpus,
            num_workers,
            tta,
            progress,
            precision,
            early_stopping,
            pretrained_weights,
            from_scratch,
        )
    finally:
        if ctx.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _train(ctx, trainer_cls, job, output, train_cases, val_cases, num_gpus, continue_training):
    """Synthetic LR for the training cases (main rank), then the training, in this process
    or in ``num_gpus`` DDP processes."""
    plans, configuration = job.plans, job.configuration
    probe = trainer_cls(
        plans, configuration, job.fold, job.fold_dir, "cpu", ctx, job.num_workers, False
    )
    if continue_training:
        probe.resume_state()  # a foreign or damaged checkpoint fails here, before any write
    if ctx.is_main:
        copy_training_inputs(plans, output)
        synthetic = prepare_synthetic_lr(
            plans, configuration, train_cases, job.device, job.progress
        )
    ctx.barrier()
    if not ctx.is_main:
        synthetic = ensure_synthetic_lr(plans, configuration, train_cases, job.device, False)
    args = (job, synthetic, val_cases, continue_training)
    if num_gpus > 1:
        logger.info("starting %d DDP processes (%s)", num_gpus, job.device)
        distributed.spawn(_train_worker, num_gpus, job.device, (trainer_cls, *args))
    else:
        _train_worker(ctx, trainer_cls, *args)


def _final_network(trainer_cls, plans, configuration, fold, fold_dir):
    """The fold's final network (its checkpoint checked against this trainer and plans)."""
    ident = trainer_cls(plans, configuration, fold, fold_dir, "cpu", None, 0, False)
    checkpoints = Checkpointer(fold_dir, ident.identity())
    if not checkpoints.exists(FINAL):
        raise MrisrError(
            f"{checkpoints.path(FINAL)} not found: train fold {fold} first "
            f"(mrisr_train {fold} -c {configuration} -tr {trainer_cls.__name__})"
        )
    networks = [network_from_state(checkpoints.load(FINAL), checkpoints.path(FINAL))]
    return networks, str(checkpoints.path(FINAL))


def _fold_split(name: str, ds: PreprocessedDataset, fold: int | str, write: bool) -> tuple:
    """The fold (parsed), its training cases, validation pairs, whether they are held out,
    and the fold's pairs left out of validation (:meth:`PreprocessedDataset.flagged_pairs`
    -> why). The splits are made, and written by the main process, on first use."""
    cases, pairs = ds.cases, ds.pairs()
    splits = load_or_create_splits(name, cases, pairs, write=write)
    fold = parse_fold(fold, len(splits))
    train_cases, val_cases, held_out = fold_cases(splits, fold, cases, pairs)
    if fold != ALL and set(train_cases) & set(val_cases):
        raise RuntimeError("a validation case is among the training cases")
    flagged = ds.flagged_pairs()
    left_out = {c: flagged[c] for c in val_cases if c in flagged}
    if write:  # the main process says it once
        for c, why in left_out.items():
            logger.warning("validation pair %s left out: %s", c, why)
    return fold, train_cases, [c for c in val_cases if c not in flagged], held_out, left_out


def _run(
    ctx: distributed.DistContext,
    fold: int | str,
    dataset: str | int | None,
    configuration: str | None,
    trainer: str,
    plans_name: str,
    continue_training: bool,
    val_only: bool,
    device: str,
    num_gpus: int,
    num_workers: int | None,
    tta: bool | None,
    progress: bool,
    precision: str = "auto",
    early_stopping: bool = True,
    pretrained_weights: Path | None = None,
    from_scratch: bool = False,
) -> dict | None:
    name = resolve_preprocessed_dataset(dataset)
    plans = load_plans(name, plans_name)
    if configuration is None:
        configuration = plans.default_configuration
        logger.info("configuration %s: the plans' default (-c chooses another)", configuration)
    config = plans.configuration(configuration)
    trainer_cls = TRAINERS.get(trainer)
    if config.axis == "through-plane":
        return _run_through_plane(name, plans, configuration, trainer, fold, val_only, progress)
    ds = PreprocessedDataset.for_plans(plans)
    fold, train_cases, val_cases, held_out, left_out = _fold_split(name, ds, fold, ctx.is_main)
    output = results_folder(name, trainer, plans.plans_name, configuration)
    fold_dir = fold_folder(output, fold)
    logger.info(
        "%s | %s | fold %s: %d training cases, %d validation pairs%s",
        name,
        configuration,
        fold,
        len(train_cases),
        len(val_cases),
        "" if held_out else " (not held out: fold 'all')",
    )

    if ctx.is_main:
        check_validation_inputs(ds, val_cases)  # a moved raw scan fails now, not after training
    if config.requires_training and not val_only:
        job = TrainingJob(
            plans,
            configuration,
            fold,
            fold_dir,
            device,
            num_workers,
            progress,
            precision,
            early_stopping,
            pretrained_weights,
            from_scratch,
        )
        _train(ctx, trainer_cls, job, output, train_cases, val_cases, num_gpus, continue_training)
    elif ctx.is_main:
        copy_training_inputs(plans, output)

    if not ctx.is_main:
        return None
    info = {"dataset": name, "trainer": trainer, "plans_name": plans.plans_name, "fold": str(fold)}
    if left_out:
        info["left_out_pairs"] = left_out
    job = (plans, configuration, fold, fold_dir, device, ctx, tta, progress)
    return _final_validation(trainer_cls, job, ds, val_cases, held_out, info)


def _run_through_plane(
    name: str,
    plans: Plans,
    configuration: str,
    trainer: str,
    fold: int | str,
    val_only: bool,
    progress: bool,
) -> dict:
    """One fold of a through-plane configuration (:mod:`mrisr.throughplane.folds`): the
    model from the fold's training cases' LR scans, validated on its pairs' HR scans."""
    fp_path = paths.preprocessed_root() / name / FINGERPRINT_FILE
    fp = DatasetFingerprint.from_json(load_json(fp_path))
    lr = {c.name: Path(c.lr.file) for c in fp.cases if c.lr is not None}
    hr = {c.name: Path(c.hr.file) for c in fp.cases if c.hr is not None}
    pairs = sorted(set(lr) & set(hr))
    splits = load_or_create_splits(name, sorted(lr), pairs, write=True)
    fold = parse_fold(fold, len(splits))
    train_cases, val_cases, held_out = fold_cases(splits, fold, sorted(lr), pairs)
    output = results_folder(name, trainer, plans.plans_name, configuration)
    fold_dir = fold_folder(output, fold)
    copy_training_inputs(plans, output)
    settings = plans.configuration(configuration).through_plane
    for c in val_cases:
        for p in (lr[c], hr[c]):
            if not p.exists():
                raise MrisrError(f"validation case {c}: raw scan {p} not found (moved?)")
    logger.info(
        "%s | %s | fold %s: %d training scans, %d validation pairs (through-plane)",
        name, configuration, fold, len(train_cases), len(val_cases),
    )  # fmt: skip
    model = None
    if plans.configuration(configuration).requires_training:
        model = fold_dir / MODEL_FILE
        if not val_only:
            fold_dir.mkdir(parents=True, exist_ok=True)
            refs = [hr[c] for c in train_cases if c in hr]
            train_fold(settings, [lr[c] for c in train_cases], refs, fold_dir, progress=progress)
        elif not model.is_file():
            raise MrisrError(
                f"{model} not found: train fold {fold} first (mrisr_train {fold} -c {configuration})"
            )
    info = {"dataset": name, "trainer": trainer, "plans_name": plans.plans_name,
            "fold": str(fold), "held_out": held_out, "checkpoint": str(model) if model else None}  # fmt: skip
    return validate_through_plane(
        configuration,
        settings,
        model,
        {c: (lr[c], hr[c]) for c in val_cases},
        fold_dir / "validation",
        _file_ending(name),
        info,
    )


def _final_validation(
    trainer_cls: type[SRTrainer], job: tuple, ds, val_cases: list[str], held_out: bool, info: dict
) -> dict:
    """The fold's validation with its final network (``job``: plans, configuration, fold,
    fold folder, device, context, TTA or None for the trainer's default, progress)."""
    plans, configuration, fold, fold_dir, device, ctx, tta, progress = job
    networks, checkpoint = None, None
    if plans.configuration(configuration).requires_training:
        networks, checkpoint = _final_network(trainer_cls, plans, configuration, fold, fold_dir)
    use_tta = trainer_cls.final_validation_tta if tta is None else tta
    return validate_fold(
        plans,
        configuration,
        networks,
        ds,
        val_cases,
        fold_dir / "validation",
        _file_ending(info["dataset"]),
        device=distributed.device_for(device, ctx),
        tta=use_tta,
        held_out=held_out,
        info={**info, "checkpoint": checkpoint},
        progress=progress,
    )
