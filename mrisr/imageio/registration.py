"""Rigid registration of the two scans of a session (SimpleITK).

The LR and HR series of a session are acquired minutes apart; the head moves between them
and the scanner records no such motion in the headers. Comparing an SR scan with its HR
partner (validation, ``mrisr_evaluate``) therefore first aligns the HR scan to the SR scan
with a rigid (Euler 3D) transform: normalised cross-correlation (both are the same
contrast, in different intensity units), a two-level pyramid (shrink 2, then full
resolution), regular-step gradient descent, physical-shift parameter scales, initialised
with the identity (the headers' alignment). Deterministic (fixed sampling seed). The
result is kept only if it improves the correlation and reaches a squared correlation of
:data:`MIN_NCC2` (scans of the same anatomy); otherwise the headers are trusted.
"""

from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk

logger = logging.getLogger(__name__)

SEED = 20210527
#: below this squared normalised correlation after registration the two scans are not
#: taken to show the same anatomy, and the headers' alignment is kept
MIN_NCC2 = 0.5


def rigid_register(fixed: sitk.Image, moving: sitk.Image) -> sitk.Euler3DTransform:
    """Euler transform ``T`` with ``T(p)`` = the point of ``moving`` that shows what
    ``fixed`` shows at physical point ``p``. Resample ``moving`` with ``T`` onto a grid of
    ``fixed`` to align it. Falls back to the identity (with a warning) if the optimiser
    ends with a worse correlation than the headers' alignment."""
    f = sitk.Cast(fixed, sitk.sitkFloat32)
    m = sitk.Cast(moving, sitk.sitkFloat32)
    tf = sitk.Euler3DTransform()
    # rotate about the centre of the fixed scan (well-conditioned parameters)
    size = np.array(f.GetSize()) - 1
    tf.SetCenter(f.TransformContinuousIndexToPhysicalPoint((size / 2).tolist()))
    if min(f.GetSize()) < 4 or min(m.GetSize()) < 4:
        logger.info("scans with fewer than 4 voxels along an axis: headers' alignment kept")
        return tf
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsCorrelation()
    reg.SetMetricSamplingStrategy(reg.REGULAR)
    reg.SetMetricSamplingPercentage(0.3, SEED)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=1e-4,
        numberOfIterations=200,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(shrinkFactors=[2, 1])
    reg.SetSmoothingSigmasPerLevel(smoothingSigmas=[1.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(tf, inPlace=False)
    try:
        identity_value = _metric(f, m, sitk.Euler3DTransform(tf))
        out = reg.Execute(f, m)
    except RuntimeError as e:  # e.g. no overlap at all
        logger.warning("rigid registration failed (%s): headers' alignment kept", str(e)[-200:])
        return tf
    if isinstance(out, sitk.CompositeTransform) or out.GetName() == "CompositeTransform":
        out = sitk.CompositeTransform(out).GetBackTransform()
    result = sitk.Euler3DTransform(out)
    value = _metric(f, m, result)
    # ITK's correlation metric is -NCC^2: lower is better
    logger.debug("rigid registration: metric %.4f -> %.4f", identity_value, value)
    if not value <= identity_value or -value < MIN_NCC2:
        logger.warning(
            "rigid registration kept the headers' alignment (squared correlation %.3f after, "
            "%.3f before; needs an improvement and >= %.2f)",
            -value,
            -identity_value,
            MIN_NCC2,
        )
        return sitk.Euler3DTransform(tf)
    return result


def _metric(fixed: sitk.Image, moving: sitk.Image, tf: sitk.Transform) -> float:
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsCorrelation()
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetInitialTransform(tf)
    return float(reg.MetricEvaluate(fixed, moving))


def transform_to_json(tf: sitk.Euler3DTransform) -> dict:
    """A rigid transform as JSON numbers (exact: floats round-trip through JSON)."""
    return {
        "transform": "Euler3D",
        "fixed_parameters": list(tf.GetFixedParameters()),
        "parameters": list(tf.GetParameters()),
    }


def transform_from_json(d: dict) -> sitk.Euler3DTransform:
    """The transform :func:`transform_to_json` wrote."""
    tf = sitk.Euler3DTransform()
    tf.SetFixedParameters([float(v) for v in d["fixed_parameters"]])
    tf.SetParameters([float(v) for v in d["parameters"]])
    return tf
