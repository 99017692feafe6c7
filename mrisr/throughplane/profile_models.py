"""Slice-profile models: how a thick slice averaged the tissue along the slice axis, each a
component with its own configuration of a thick-slice dataset's plans.

A model ``build``s the profile of a set of scans (a :class:`SliceProfile` on the in-plane
pixel grid, and a record for ``throughplane.json``) and ``plan``s the through-plane
configuration that uses it. ``mrisr_throughplane --profile NAME`` and the plans'
``"through_plane": {"profile": NAME}`` name one. Models are found in
:data:`PROFILE_MODELS`, whose entry-point group ``mrisr.profiles`` a plugin may extend
(:mod:`mrisr.utilities.registry`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from mrisr.throughplane.profile import SliceProfile, gaussian_profile, rect_profile
from mrisr.throughplane.profile_fit import ProfileFitError, fit_profile
from mrisr.throughplane.profile_gan import learn_profile
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.registry import Registry

logger = logging.getLogger(__name__)

#: how far (fraction) a measured profile may differ from a stated thickness before a warning
WIDTH_WARN = 0.25


@dataclass
class ThroughPlanePlanning:
    """What every through-plane configuration of a dataset shares (the planner's): the
    training settings of its ``through_plane`` section and the configuration's fixed keys."""

    settings: dict
    base: dict

    def configuration(self, label: str, description: str, profile: str | None) -> dict:
        return {
            **self.base,
            "label": label,
            "description": description,
            "through_plane": {**self.settings, "profile": profile},
        }


class ProfileModel:
    """A slice-profile model: ``build`` the profile of scans, ``plan`` its configuration."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    plan_order: ClassVar[int] = 100

    @classmethod
    def build(cls, scans: list, seed: int, progress: bool) -> tuple[SliceProfile, dict]:
        """The profile of ``scans`` (objects with ``geometry``, ``volume``, ``sigma``, ``path``:
        :class:`mrisr.throughplane.api.Scan`) and its record."""
        raise NotImplementedError

    @classmethod
    def plan(cls, context: ThroughPlanePlanning) -> dict[str, dict]:
        """The configurations this model contributes to a thick-slice dataset's plans (the
        default: none, a model available by ``--profile`` only)."""
        return {}


#: name -> ProfileModel subclass (entry-point group ``mrisr.profiles``)
PROFILE_MODELS: Registry[type[ProfileModel]] = Registry("slice profile", "mrisr.profiles")


class StatedThicknessProfile(ProfileModel):
    """A fixed shape whose FWHM is the stated thickness; its configuration is
    ``<name>_tp_edsr``. A subclass names the shape (``shape``: FWHM in px -> profile)."""

    shape: ClassVar[Callable[[float], SliceProfile]]
    description: ClassVar[str] = ""

    @classmethod
    def build(cls, scans, seed, progress):
        return cls.shape(scans[0].geometry.thickness_px), {}

    @classmethod
    def plan(cls, context):
        return {f"{cls.name}_tp_edsr": context.configuration(cls.label, cls.description, cls.name)}


@PROFILE_MODELS.register
class RectProfile(StatedThicknessProfile):
    """A box of the stated thickness (the scanner's nominal slab)."""

    name = "rect"
    label = "TP-EDSR (box profile)"
    description = "through-plane EDSR, slice profile a box of the stated thickness"
    plan_order = 20
    shape = staticmethod(rect_profile)


@PROFILE_MODELS.register
class GaussianProfile(StatedThicknessProfile):
    """A Gaussian whose FWHM is the stated thickness (a smooth slab edge)."""

    name = "gaussian"
    label = "TP-EDSR (Gaussian profile)"
    description = "through-plane EDSR, slice profile a Gaussian of the stated thickness"
    plan_order = 30
    shape = staticmethod(gaussian_profile)


@PROFILE_MODELS.register
class MeasuredProfile(ProfileModel):
    """A box whose width is measured from the scans' through-plane spectrum
    (:func:`mrisr.throughplane.profile_fit.fit_profile`); the default configuration."""

    name = "learned"
    label = "TP-EDSR (measured profile)"
    plan_order = 10

    @classmethod
    def build(cls, scans, seed, progress):
        g = scans[0].geometry
        volumes, sigmas = [s.volume for s in scans], [s.sigma for s in scans]
        try:
            prof, log = fit_profile(volumes, g, sigmas, seed)
        except ProfileFitError as e:
            raise MrisrError(
                f"{scans[0].path}: {e}; use a box of the stated thickness instead "
                "(mrisr_throughplane --profile rect, or the rect_tp_edsr configuration)"
            ) from e
        width = log["width_px"] * g.inplane_spacing
        logger.info("slice profile measured: a %.2f mm box (%s thickness %.2f mm)", width,
                    g.thickness_source, g.slice_thickness)  # fmt: skip
        if g.thickness_source != "assumed" and abs(width / g.slice_thickness - 1) > WIDTH_WARN:
            logger.warning(
                "%s: the measured slice profile (%.2f mm) differs from the stated thickness "
                "(%.2f mm, %s) by more than %d %%",
                scans[0].path, width, g.slice_thickness, g.thickness_source, 100 * WIDTH_WARN,
            )  # fmt: skip
        return prof, log

    @classmethod
    def plan(cls, context):
        return {
            "learned_tp_edsr": context.configuration(
                cls.label,
                "through-plane EDSR trained on in-plane slices degraded by the slice profile "
                "measured from the scans; applied to the thick-slice LR",
                cls.name,
            )
        }


@PROFILE_MODELS.register
class AdversarialProfile(ProfileModel):
    """The DSGAN's linear generator in 1D against the real through-plane views
    (:mod:`mrisr.throughplane.profile_gan`); biased narrow, so ``--profile dsgan`` only."""

    name = "dsgan"
    label = "TP-EDSR (adversarial profile)"
    plan_order = 90

    @classmethod
    def build(cls, scans, seed, progress):
        volumes, sigmas = [s.volume for s in scans], [s.sigma for s in scans]
        return learn_profile(volumes, scans[0].geometry, sigmas, seed, progress)


def profile_models() -> list[type[ProfileModel]]:
    """The registered models in plan order."""
    return sorted(
        (PROFILE_MODELS.get(n) for n in PROFILE_MODELS.names()),
        key=lambda m: (m.plan_order, m.name),
    )
