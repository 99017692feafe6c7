"""The degradation interface: HR slices -> LR slices, and the registry of models.

A degradation model turns HR in-plane slices into the LR slices an SR network is trained
on. The plans name one per configuration (its ``"degradation"`` section, e.g.
``{"name": "gaussian", "sigma": 1.5}``) and :func:`build_degradation` builds it.

Conventions shared by every model
---------------------------------
* Input: float32 ``(z, H, W)`` stack of slices (or one ``(H, W)`` slice), intensities
  normalised to about [0, 1] (background 0).
* Output: ``(z, H // s, W // s)`` (or ``(H // s, W // s)``) float32 for the integer scale
  ``s``. HR rows/columns beyond ``s * (H // s)`` are not covered by any LR pixel and are
  ignored.
* Grid (pixel-shuffle convention): LR pixel ``i`` covers HR pixels ``s*i .. s*i+s-1``; its
  centre is at HR position ``s*i + (s-1)/2``. A blob centred at HR position ``c`` is
  centred at LR position ``(c - (s-1)/2) / s`` for every model.
* Intensity: a smooth image keeps its mean (models sum to one / keep the k-space DC).

Adding a model: subclass :class:`Degradation` (or :class:`LearnedDegradation` for a
model with weights) in its own module, set ``name`` and ``label``, implement ``degrade``
(and ``fit``), write the configurations it contributes in :meth:`Degradation.plan`, and
declare the class (or its module) in the ``mrisr.degradations`` entry-point group of its
package (:mod:`mrisr.utilities.registry`). The planner asks every registered model.

The degradation stage (:mod:`mrisr.degradation.stage`) knows no model: it asks the model
whether its synthetic LR depends on the training case set
(:attr:`Degradation.learned_on_case_set`) and lets it write the synthetic LR of the cases
(:meth:`Degradation.synthesize`; a model with its own training scheme, such as the DSGAN's
per-slice units, overrides it).
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mrisr import paths
from mrisr.degradation.kernels import degrade_with_kernel
from mrisr.plans import Plans
from mrisr.preprocessing import storage
from mrisr.preprocessing.dataset import PreprocessedDataset
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import atomic_path, load_json, save_json
from mrisr.utilities.registry import Registry
from mrisr.utilities.scale import check_scale

logger = logging.getLogger(__name__)

#: name -> Degradation subclass (entry-point group ``mrisr.degradations``)
DEGRADATIONS: Registry[type[Degradation]] = Registry("degradation", "mrisr.degradations")

#: Version of the on-disk format written by :meth:`LearnedDegradation.save`.
FORMAT_VERSION = 1


def seed_of(name: str) -> int:
    """A stable 31-bit seed from a name (a unit, a case set)."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


@dataclass
class PlanningContext:
    """What the planner decided before it asks the models for their configurations
    (:meth:`Degradation.plan`): the scale and grids, the SR network section, how a learned
    model groups its training units, the training noise and loss of the configurations
    that see the raw real LR, and ``decide`` to record a decision with its reason."""

    scale: int
    hr_spacing: float  # HR in-plane spacing (mm); the LR working grid is ``scale`` x it
    sr: dict  # the SR network section every configuration trains
    kernel_mode: str  # per_slice / per_volume / per_dataset: units of a learned model
    training_noise: dict  # the raw-input configurations' noise model
    sr_loss: dict  # the raw-input configurations' SR loss
    intensity_range: float  # normalised foreground intensities lie in [0, this]
    decide: Callable[[str, str], None]
    options: dict = field(default_factory=dict)  # model name -> planner's overrides

    def option(self, model: str, key: str, default: Any) -> Any:
        """The planner's override of one of ``model``'s planning defaults, else ``default``."""
        return self.options.get(model, {}).get(key, default)

    def configuration(
        self, label: str, description: str, degradation: dict, *, raw_input: bool
    ) -> dict:
        """A configuration training the plans' SR network on HR through ``degradation``:
        applied to the raw real LR (with the measured training noise and the texture-keeping
        loss), or, as in the paper, to the NLM-denoised real LR (no noise, L1)."""
        return {
            "label": label,
            "description": description,
            "degradation": degradation,
            "sr": self.sr,
            "sr_input": "raw" if raw_input else "denoised",
            "training_noise": self.training_noise if raw_input else None,
            "sr_loss": self.sr_loss if raw_input else {"l1": 1.0},
        }


@dataclass
class SynthesisContext:
    """What a model needs to write the synthetic LR of a set of cases for a configuration."""

    plans: Plans
    config: str
    ds: PreprocessedDataset
    cases: list[str]
    mid: str  # the model id: which trained model the synthetic LR comes from
    device: str = "cpu"
    progress: bool = True

    def dest(self, case: str) -> Path:
        """Where the synthetic LR of ``case`` goes."""
        return paths.synthetic_lr_path(self.ds.folder, self.config, self.mid, case, storage.SUFFIX)

    def folder(self, config: str | None = None) -> Path:
        """The artefact folder (weights, kernels, figures) of ``config`` (default: this one)."""
        return paths.degradation_folder(
            self.plans.dataset_name, self.plans.plans_name, config or self.config
        )

    def pairs(self) -> list[str]:
        return [c for c in self.cases if self.ds.is_registered_pair(c)]


def as_slice_stack(hr: np.ndarray, scale: int) -> tuple[np.ndarray, bool]:
    """Validate HR input; return a float32 ``(z, H, W)`` stack and whether it was 2D.

    Raises ValueError for wrong dimensions, slices smaller than ``scale`` or
    non-finite values.
    """
    vol = np.asarray(hr, dtype=np.float32)
    if vol.ndim not in (2, 3):
        raise ValueError(f"expected HR slices (z, H, W) or one slice (H, W), got shape {vol.shape}")
    squeeze = vol.ndim == 2
    if squeeze:
        vol = vol[None]
    if vol.shape[1] < scale or vol.shape[2] < scale:
        raise ValueError(f"HR slices of {vol.shape[1:]} are smaller than the scale {scale}")
    if not np.isfinite(vol).all():
        raise ValueError("HR slices contain NaN or infinite values")
    return vol, squeeze


class Degradation:
    """Base class of the degradation models (HR slices -> LR slices).

    ``params`` is the plans' ``"degradation"`` section (``name`` plus the model's
    parameters); ``scale`` the integer in-plane scale. Subclasses read their parameters
    in ``__init__`` (raising ValueError for invalid ones) and implement :meth:`degrade`.
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""  # what tables and figures call the model
    learned: ClassVar[bool] = False
    plan_order: ClassVar[int] = 100  # where its configurations come in the plans

    @classmethod
    def plan(cls, fingerprint: Any, context: PlanningContext) -> dict[str, dict]:
        """The configurations this model contributes to a dataset's plans (name ->
        configuration; :meth:`PlanningContext.configuration` writes one), each decision
        recorded with ``context.decide``. ``fingerprint`` is the dataset's
        :class:`~mrisr.planning.fingerprint.DatasetFingerprint`. The default: none (a model
        other models use, e.g. the bicubic one)."""
        return {}

    @classmethod
    def plan_summary(cls, section: dict) -> tuple[str, str] | None:
        """(title, text) of the line ``mrisr_plan_and_preprocess`` prints about a planned
        section of this model; None: nothing beyond the configuration's name."""
        return None

    def __init__(self, params: dict, scale: int):
        self.scale = check_scale(scale)
        self.params = dict(params or {})
        given = self.params.get("name", self.name)
        if given != self.name:
            raise ValueError(f"parameters for '{given}' given to the '{self.name}' model")
        self.params["name"] = self.name

    def degrade(self, hr: np.ndarray) -> np.ndarray:
        """``(z, H, W)`` or ``(H, W)`` float32 HR -> ``(z, H//s, W//s)`` (or 2D) float32 LR."""
        raise NotImplementedError

    def __call__(self, hr: np.ndarray) -> np.ndarray:
        return self.degrade(hr)

    @property
    def learned_on_case_set(self) -> bool:
        """Does the synthetic LR depend on the training cases (one model per case set)?"""
        return self.learned

    def psf_info(self) -> dict:
        """The PSF the model applies, for the summary (``psf_sigma_hr``: per in-plane axis,
        HR pixels; the training noise's width jitter reads it). Empty when unknown."""
        return {}

    def synthesize(self, ctx: SynthesisContext) -> dict:
        """Write the synthetic LR of every HR case of ``ctx`` that lacks it; return the
        summary (model, PSF)."""
        for c in ctx.cases:
            dest = ctx.dest(c)
            if ctx.ds.properties[c]["has_hr"] and not dest.is_file():
                storage.save_array(dest, self.degrade(ctx.ds.load(c, "hr")))
        return {"model": self.describe(), **self.psf_info()}

    def describe(self) -> dict:
        """JSON-able description: the parameters plus the scale."""
        return {**self.params, "scale": self.scale}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items() if k != "name")
        return f"{type(self).__name__}(scale={self.scale}, {args})"


class KernelDegradation(Degradation):
    """A fixed degradation that is one blur kernel (``self.kernel``, set by the subclass)
    correlated with each slice (half-sample symmetric borders), then decimated."""

    kernel: np.ndarray

    def degrade(self, hr: np.ndarray) -> np.ndarray:
        vol, squeeze = as_slice_stack(hr, self.scale)
        out = degrade_with_kernel(vol, self.kernel, self.scale, border="symmetric")
        return out[0] if squeeze else out


class LearnedDegradation(Degradation):
    """A degradation with weights fitted on (HR, real LR) data.

    On disk a model is two files: ``path`` (``torch.save`` of a plain state dict of
    tensors, loaded with ``weights_only=True``) and ``path`` with suffix ``.json`` (name,
    scale, parameters, fit history), so a checkpoint describes itself and
    :func:`load_degradation` rebuilds it without knowing its class;
    ``model.load(path)`` loads weights into an existing model.
    """

    learned: ClassVar[bool] = True

    def __init__(self, params: dict, scale: int):
        super().__init__(params, scale)
        self.fit_history: dict = {}

    def fit(self, pairs, *args, **kwargs) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    #: the array of the pairs the model is fitted to (``lr``: denoised; ``lr_raw``)
    fit_lr_key: ClassVar[str] = "lr"

    def synthesize(self, ctx: SynthesisContext) -> dict:
        """Fit on the pairs of ``ctx`` (or load the fit of this case set), then degrade."""
        self.fit_or_load(ctx)
        return super().synthesize(ctx)

    def fit_or_load(self, ctx: SynthesisContext) -> None:
        weights = ctx.folder() / f"{self.name}_{ctx.mid}.pt"
        if weights.is_file():
            self.load(weights)
            return
        pairs = ctx.pairs()
        if not pairs:
            raise MrisrError(
                f"configuration '{ctx.config}' ({self.name}) needs LR/HR pairs among the "
                "training cases"
            )
        logger.info("%s: fitting on %d pairs", self.name, len(pairs))
        self.fit(
            [(ctx.ds.load(c, "hr"), ctx.ds.load(c, self.fit_lr_key)) for c in pairs],
            masks=[ctx.ds.load(c, "lr_mask") for c in pairs],
            seed=seed_of(ctx.mid),
            device=ctx.device,
            progress=ctx.progress,
        )
        meta_path = self.save(weights)
        meta = load_json(meta_path)
        meta.update(cases=sorted(pairs), model=ctx.mid)
        save_json(meta, meta_path)

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def metadata(self) -> dict:
        return {
            "name": self.name,
            "class": type(self).__name__,
            "format_version": FORMAT_VERSION,
            "scale": self.scale,
            "params": self.params,
            "fit": self.fit_history,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the weights to ``path`` and the metadata to ``path.with_suffix('.json')``.

        Both files are written atomically. Returns the metadata path.
        """
        import torch

        path = Path(path)
        meta_path = path.with_suffix(".json")
        if meta_path == path:
            raise ValueError(f"weights path must not end in .json: {path}")
        state = {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        save_json(self.metadata(), meta_path)
        return meta_path

    def load(self, path: str | os.PathLike) -> LearnedDegradation:
        """Load weights saved with :meth:`save` into this model (in place); returns ``self``.

        The model must have been built with the same architecture parameters. If the
        metadata JSON next to the weights holds this format, its name and scale are
        checked and the fit history restored; a JSON without them (e.g. replaced by a
        caller's own notes) is ignored. To rebuild a model from disk without knowing its
        parameters use :func:`load_degradation`.
        """
        import torch

        path = Path(path)
        if not path.is_file():
            raise MrisrError(f"no saved {self.name} weights at {path}")
        meta_path = path.with_suffix(".json")
        meta = load_json(meta_path) if meta_path.is_file() else {}
        if "params" in meta:
            if meta.get("name") != self.name or meta.get("scale") != self.scale:
                raise MrisrError(
                    f"{path} holds a '{meta.get('name')}' model of scale {meta.get('scale')}, "
                    f"not '{self.name}' of scale {self.scale}"
                )
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            self.load_state_dict(state)
        except RuntimeError as e:
            raise MrisrError(
                f"{path} does not fit this {self.name} model (different parameters?): "
                f"{str(e).splitlines()[0]}"
            ) from None
        if "params" in meta:
            self.fit_history = meta.get("fit", {}) or {}
        return self


def available_degradations() -> list[str]:
    """Names of the registered degradation models."""
    return DEGRADATIONS.names()


def degradation_models() -> list[type[Degradation]]:
    """The registered models in plan order (built-ins first, then by name)."""
    return sorted(
        (DEGRADATIONS.get(n) for n in DEGRADATIONS.names()), key=lambda c: (c.plan_order, c.name)
    )


def build_degradation(params: dict, scale: int) -> Degradation:
    """Build the model named by ``params["name"]`` (a plans ``"degradation"`` section).

    Raises MrisrError (one line, listing the valid names) for an unknown name and
    ValueError for invalid parameters.
    """
    if not isinstance(params, dict) or "name" not in params:
        raise MrisrError(
            f"a degradation section needs a 'name'; got {params!r} "
            f"(valid names: {', '.join(available_degradations())})"
        )
    return DEGRADATIONS.get(params["name"])(params, scale)


def load_degradation(path: str | os.PathLike) -> LearnedDegradation:
    """Rebuild a learned model saved with :meth:`LearnedDegradation.save` (any registered one)."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise MrisrError(
            f"no saved degradation model at {path} (needs {path.name} and {meta_path.name})"
        )
    meta = load_json(meta_path)
    if "params" not in meta or "scale" not in meta:
        raise MrisrError(f"{meta_path} does not describe a saved degradation model")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise MrisrError(
            f"{meta_path} was written by a newer mrisr (format {meta['format_version']})"
        )
    model = build_degradation(meta["params"], meta["scale"])
    if not isinstance(model, LearnedDegradation):
        raise MrisrError(f"{meta_path}: '{model.name}' is not a learned degradation")
    return model.load(path)
