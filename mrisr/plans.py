"""Typed access to plans.json (the ground floor: every package may read plans).

Plans are data: plain JSON on disk, validated on load. Configurations may inherit from
another one (``"inherits_from": "dsgan_edsr"``): the child's top-level keys replace the
parent's, the rest is inherited (but its ``label``). Inheritance is resolved here and nowhere else (and cached).
The ``sr`` and ``degradation`` sections have typed views (:class:`SRPlan`,
:class:`DegradationPlan`); the raw dicts stay available for code that forwards them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import load_json, save_json

DEFAULT_CONFIGURATION = "dsgan_edsr"
#: the interpolation baseline the planner adds to every in-plane plan: bicubic interpolation
#: of the real LR, trains nothing; every fold's validation computes it beside the configuration
BASELINE_CONFIGURATION = "bicubic"
#: its through-plane counterpart: cubic B-spline along the slice axis of a thick-slice scan
THROUGH_PLANE_BASELINE = "bspline_tp"
#: the plans and the trainer every command uses unless told otherwise (-p, -tr)
DEFAULT_PLANS = "mrisrPlans"
DEFAULT_TRAINER = "EDSRTrainer"


MAX_SCALE = 16
#: how a plans' SR networks start (:attr:`Plans.initialisation`): the planner's default first
INITIALISATIONS = ("generic", "scratch")


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def plans_problem(data: object) -> str | None:
    """What is wrong with a plans file's content, or None (the schema of plans.json)."""
    if not isinstance(data, dict):
        return "the file must hold a JSON object"
    for k in ("plans_name", "dataset_name"):
        if not isinstance(data.get(k), str) or not data[k]:
            return f"'{k}' must be a non-empty string"
    s = data.get("scale")
    configs = data.get("configurations")
    through_plane_only = isinstance(configs, dict) and all(
        isinstance(c, dict) and c.get("axis") == "through-plane" for c in configs.values()
    )
    lowest = 1 if through_plane_only else 2  # a thick-slice dataset: no in-plane scale
    if not isinstance(s, int) or isinstance(s, bool) or not lowest <= s <= MAX_SCALE:
        return f"'scale' must be an integer {lowest}..{MAX_SCALE}, not {s!r}"
    for k in ("hr_inplane_spacing", "lr_working_inplane_spacing"):
        v = data.get(k)
        if not _number(v) or v <= 0:
            return f"'{k}' must be a positive number (mm), not {v!r}"
    n = data.get("through_plane_normal")
    if not isinstance(n, list) or len(n) != 3 or not all(_number(x) for x in n):
        return f"'through_plane_normal' must be 3 numbers, not {n!r}"
    if sum(float(x) ** 2 for x in n) == 0:
        return "'through_plane_normal' must not be zero"
    pre = data.get("preprocessing")
    if not isinstance(pre, dict):
        return "'preprocessing' must be an object"
    for k in ("normalization", "denoising"):
        if not isinstance(pre.get(k), dict):
            return f"'preprocessing.{k}' must be an object"
    configs = data.get("configurations")
    if not isinstance(configs, dict) or not configs:
        return "'configurations' must be a non-empty object"
    for name, c in configs.items():
        if not isinstance(c, dict):
            return f"configuration '{name}' must be an object"
        for sec in ("sr", "degradation"):
            if c.get(sec) is not None and not isinstance(c[sec], dict):
                return f"'configurations.{name}.{sec}' must be an object or null"
    for key in ("default_configuration",):
        if key in data and data[key] not in configs:
            return f"'{key}' {data[key]!r} is not one of the configurations"
    if data.get("initialisation", INITIALISATIONS[0]) not in INITIALISATIONS:
        return (
            f"'initialisation' must be one of {', '.join(INITIALISATIONS)}, "
            f"not {data['initialisation']!r}"
        )
    worth = data.get("worth_training", [])
    if not isinstance(worth, list) or any(w not in configs for w in worth):
        return f"'worth_training' must list configurations, not {worth!r}"
    return _sections_problem(configs)


def _sections_problem(configs: dict) -> str | None:
    """What is wrong with a resolved configuration's typed sections, or None."""
    for name in configs:
        try:
            c = json.loads(_resolve(json.dumps(configs), name))
        except MrisrError as e:
            return str(e)
        try:
            if c.get("sr"):
                SRPlan.from_dict(c["sr"])
            if c.get("degradation"):
                DegradationPlan.from_dict(c["degradation"])
        except KeyError as e:
            return f"configuration '{name}' lacks {e} in its sr/degradation section"
        except (TypeError, ValueError) as e:
            return f"configuration '{name}': bad value in its sr/degradation section ({e})"
    return None


def _machine_memory() -> int | None:
    """Physical memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class SRPlan:
    """The ``sr`` section of a configuration: the SR network and its training schedule."""

    network: str
    lr_patch: int
    num_blocks: int
    num_features: int
    res_scale: float
    batch_size: int
    iterations: int
    learning_rate: float
    betas: tuple[float, float]
    lr_milestones: tuple[int, ...]
    lr_gamma: float
    grad_clip_norm: float | None
    augmentation: str
    checkpoint_every: int
    validate_every: int

    @classmethod
    def from_dict(cls, sr: dict) -> SRPlan:
        clip = sr.get("grad_clip_norm")
        return cls(
            network=str(sr.get("name", "edsr")),
            lr_patch=int(sr["lr_patch"]),
            num_blocks=int(sr["num_blocks"]),
            num_features=int(sr["num_features"]),
            res_scale=float(sr.get("res_scale", 1.0)),
            batch_size=int(sr["batch_size"]),
            iterations=int(sr["iterations"]),
            learning_rate=float(sr["learning_rate"]),
            betas=tuple(float(b) for b in sr["betas"]),
            lr_milestones=tuple(int(m) for m in sr["lr_milestones"]),
            lr_gamma=float(sr["lr_gamma"]),
            grad_clip_norm=clip,
            augmentation=str(sr.get("augmentation", "dihedral8")),
            checkpoint_every=int(sr["checkpoint_every"]),
            validate_every=int(sr["validate_every"]),
        )

    def __post_init__(self) -> None:
        """Range checks (a hand-edited plans file): a ValueError naming the value."""
        bounds = {
            "lr_patch": (4, 1024),
            "num_blocks": (1, 256),
            "num_features": (1, 1024),
            "batch_size": (1, 4096),
            "iterations": (1, 10**8),
            "checkpoint_every": (1, 10**8),
            "validate_every": (1, 10**8),
        }
        for k, (lo, hi) in bounds.items():
            if not lo <= getattr(self, k) <= hi:
                raise ValueError(f"{k} {getattr(self, k)} is not in {lo}..{hi}")
        if not (math.isfinite(self.learning_rate) and 0 < self.learning_rate <= 1):
            raise ValueError(f"learning_rate {self.learning_rate} is not in (0, 1]")
        if not 0 <= self.res_scale <= 10:
            raise ValueError(f"res_scale {self.res_scale} is not in 0..10")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas {list(self.betas)} must be two numbers in [0, 1)")
        if any(m < 0 for m in self.lr_milestones) or not 0 < self.lr_gamma <= 1:
            raise ValueError("lr_milestones must be >= 0 and lr_gamma in (0, 1]")
        clip = self.grad_clip_norm
        if clip is not None and (
            isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0
        ):
            raise ValueError(f"grad_clip_norm {clip!r} must be a positive number or null")
        # weights, gradients and Adam's two moments in float32: must fit this machine
        need = 16 * 9 * (2 * self.num_blocks + 2) * self.num_features**2
        memory = _machine_memory()
        if memory and need > memory:
            raise ValueError(
                f"a network of {self.num_blocks} blocks x {self.num_features} features needs "
                f"{need / 2**30:.1f} GiB to train, more than this machine's "
                f"{memory / 2**30:.1f} GiB"
            )


@dataclass(frozen=True)
class DegradationPlan:
    """The ``degradation`` section: the registered model's ``name`` and its parameters."""

    name: str
    params: dict

    @classmethod
    def from_dict(cls, d: dict) -> DegradationPlan:
        return cls(str(d["name"]), {k: v for k, v in d.items() if k != "name"})

    def get(self, key: str, default: object = None) -> object:
        return self.params.get(key, default)


@functools.lru_cache(maxsize=256)
def _resolve(configs_json: str, name: str) -> str:
    """The configuration ``name`` with its inheritance chain applied (JSON in, JSON out:
    cached on the content, so an edited plans dict never reads a stale resolution)."""
    configs = json.loads(configs_json)
    if name not in configs:
        raise MrisrError(f"unknown configuration '{name}'; valid names: {', '.join(configs)}")
    chain, resolved, cur = [], {}, name
    while cur is not None:
        if cur in chain:
            raise MrisrError(f"configuration inheritance loop: {' -> '.join(chain + [cur])}")
        if cur not in configs:
            raise MrisrError(f"configuration '{chain[-1]}' inherits from unknown '{cur}'")
        chain.append(cur)
        cur = configs[cur].get("inherits_from")
    for c in reversed(chain):  # a label names one configuration: it is not inherited
        own = {k: v for k, v in configs[c].items() if k != "inherits_from"}
        resolved.update({k: v for k, v in own.items() if k != "label" or c == name})
    return json.dumps(resolved)


@dataclass(frozen=True)
class ConfigurationPlans:
    name: str
    data: dict

    @property
    def degradation(self) -> dict | None:
        """The degradation model's section (``name`` plus its parameters), None for bicubic."""
        return self.data.get("degradation")

    @property
    def degradation_name(self) -> str | None:
        d = self.degradation
        return d["name"] if d else None

    @property
    def degradation_plan(self) -> DegradationPlan | None:
        d = self.degradation
        return DegradationPlan.from_dict(d) if d else None

    @property
    def sr(self) -> dict | None:
        """The SR network's section (EDSR), None for configurations without training."""
        return self.data.get("sr")

    @property
    def sr_plan(self) -> SRPlan | None:
        """The ``sr`` section, typed (None for configurations without training)."""
        return SRPlan.from_dict(self.sr) if self.sr else None

    @property
    def denoise_input(self) -> bool:
        """Is the real LR NLM-denoised before the network (the paper), or does the network
        see the raw LR and denoise it itself (``"sr_input": "raw"``)?"""
        return self.data.get("sr_input", "denoised") != "raw"

    @property
    def amplitude_loss_weight(self) -> float:
        """Weight of the Fourier-amplitude term beside L1 in the SR loss (``"sr_loss"``;
        absent: L1 only, the paper's loss)."""
        return float((self.data.get("sr_loss") or {}).get("fourier_amplitude", 0.0))

    @property
    def training_noise(self) -> dict | None:
        """Per-patch noise / jitter of the training LR (:mod:`mrisr.degradation.patch_noise`)."""
        return self.data.get("training_noise")

    @property
    def axis(self) -> str:
        """``"in-plane"`` (the paper's SR of the slices) or ``"through-plane"`` (thick slices
        to isotropic volumes, :mod:`mrisr.throughplane`)."""
        return str(self.data.get("axis", "in-plane"))

    @property
    def through_plane(self) -> dict | None:
        """A through-plane configuration's settings (slice profile, budget, references)."""
        return self.data.get("through_plane")

    @property
    def requires_training(self) -> bool:
        return self.sr is not None or bool((self.through_plane or {}).get("profile"))

    @property
    def description(self) -> str:
        return self.data.get("description", "")

    @property
    def label(self) -> str:
        """The configuration's name in tables and figures (``"label"``; else its name)."""
        return str(self.data.get("label") or self.name)


class Plans:
    def __init__(self, data: dict, path: Path | None = None):
        self.data = data
        self.path = path

    @classmethod
    def load(cls, path: str | Path) -> Plans:
        """Read and validate a plans file (one schema, one message naming the problem)."""
        path = Path(path)
        if not path.is_file():
            raise MrisrError(f"{path}: plans file not found; run mrisr_plan_and_preprocess first")
        try:
            data = load_json(path)
            problem = plans_problem(data)
        except (ValueError, UnicodeDecodeError) as e:
            problem = f"not valid JSON ({e})"
        if problem:
            raise MrisrError(
                f"{path}: invalid plans: {problem}; fix it or re-create it with "
                "mrisr_plan_and_preprocess --clean"
            )
        return cls(data, path)

    def save(self, path: str | Path) -> None:
        save_json(self.data, path)
        self.path = Path(path)

    # ---- global decisions
    @property
    def plans_name(self) -> str:
        return self.data["plans_name"]

    @property
    def dataset_name(self) -> str:
        return self.data["dataset_name"]

    @property
    def scale(self) -> int:
        return int(self.data["scale"])

    @property
    def hr_spacing(self) -> float:
        """Target HR in-plane spacing (mm)."""
        return float(self.data["hr_inplane_spacing"])

    @property
    def lr_spacing(self) -> float:
        """LR working in-plane spacing (mm) = scale x HR spacing."""
        return float(self.data["lr_working_inplane_spacing"])

    @property
    def real_lr_spacing(self) -> float | None:
        """Median in-plane spacing (mm) of the real LR scans planned on (None in plans
        written before it was recorded)."""
        v = self.data.get("real_lr_inplane_spacing")
        return float(v) if v else None

    @property
    def real_lr_acquired_spacing(self) -> list[float] | None:
        """Median acquired in-plane spacing (mm, SimpleITK order) of the real LR scans, read
        from their spectra (None where none was read, or in plans written before)."""
        v = self.data.get("real_lr_acquired_inplane_spacing")
        return [float(x) for x in v] if v else None

    @property
    def through_plane_normal(self) -> list[float]:
        return list(self.data["through_plane_normal"])

    @property
    def preprocessing(self) -> dict:
        return self.data["preprocessing"]

    @property
    def normalization(self) -> dict:
        return self.data["preprocessing"]["normalization"]

    @property
    def denoising(self) -> dict:
        return self.data["preprocessing"]["denoising"]

    @property
    def data_identifier(self) -> str:
        """Folder name of the preprocessed data inside the dataset's preprocessed folder."""
        return f"{self.plans_name}_preprocessed"

    def preprocessing_identity(self) -> str:
        """Hash of everything that changes the preprocessed data (resuming checks it)."""
        keys = (
            "scale",
            "hr_inplane_spacing",
            "lr_working_inplane_spacing",
            "preprocessing",
            "through_plane_normal",
        )
        return content_hash({k: self.data[k] for k in keys})

    # ---- configurations
    @property
    def configuration_names(self) -> list[str]:
        return list(self.data["configurations"])

    @property
    def default_configuration(self) -> str:
        """The configuration commands use without ``-c``: the selection rule's choice
        (``"default_configuration"``, :mod:`mrisr.training.selection`), else
        :data:`DEFAULT_CONFIGURATION` where the plans hold it, else the first one."""
        names = self.configuration_names
        chosen = self.data.get("default_configuration")
        if chosen in names:
            return chosen
        return DEFAULT_CONFIGURATION if DEFAULT_CONFIGURATION in names else names[0]

    @property
    def initialisation(self) -> str:
        """How the SR networks start (``"initialisation"``): ``generic``, fine-tuning the
        generic network shipped with mrisr where one of the planned size exists
        (:func:`mrisr.networks.checkpoint_io.generic_weights_for`), or ``scratch``. Plans
        written before the choice was recorded trained from scratch and keep doing so."""
        return str(self.data.get("initialisation", "scratch"))

    @property
    def worth_training(self) -> list[str]:
        """The configurations the selection rule found worth a full training (the default
        and those within its margin of the best); every trainable one when not selected."""
        if "worth_training" in self.data:
            return list(self.data["worth_training"])
        return [n for n in self.configuration_names if self.configuration(n).requires_training]

    def configuration(self, name: str) -> ConfigurationPlans:
        configs = self.data["configurations"]
        if name not in configs:
            raise MrisrError(f"unknown configuration '{name}'; valid names: {', '.join(configs)}")
        return ConfigurationPlans(name, json.loads(_resolve(json.dumps(configs), name)))


def plans_identity(plans: Plans, configuration: str) -> str:
    """Hash of everything in the plans that changes what a configuration trains on/with
    (not its ``label``, a name for tables)."""
    data = {k: v for k, v in plans.configuration(configuration).data.items() if k != "label"}
    return content_hash({"preprocessing": plans.preprocessing_identity(), "configuration": data})


def content_hash(data) -> str:
    """A short hash of JSON-able data, independent of key order: what a stored result was
    made under (resuming compares it)."""
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
