"""Trainer variants: each a small subclass that changes one thing, registered by name.

Budget (the learning-rate milestones, checkpoint and validation intervals follow the new
length, see :class:`mrisr.training.trainer.SRTrainer`):

* ``EDSRTrainer_2000iters``, ``EDSRTrainer_5000iters``, ``EDSRTrainer_20000iters``
* ``EDSRTrainer_5iters``: five iterations of the planned network (smoke test of a setup)
* ``EDSRTrainer_quality`` (the quality harness) and ``EDSRTrainer_demo`` (``mrisr_demo``):
  EDSR with 8 residual blocks x 32 features (1/8 of the planned network's arithmetic),
  Adam 2e-4 (halved at 1/2 and 3/4); see the classes for their budgets. The planned
  network and budget (16 x 64, tens of thousands of iterations) are what ``EDSRTrainer``
  trains.
* ``EDSRTrainer_screening``: the harness's network for 300 iterations, the selection rule's
  short training of every candidate (:mod:`mrisr.training.selection`).
* ``EDSRTrainer_quality_long`` / ``EDSRTrainer_quality_long_fixed``: the harness's network
  for four times its budget, with and without early stopping (its benchmark).
* ``EDSRTrainer_tiny``: for the test-suite: 2 blocks x 16 features, batch 4, 8 iterations,
  checkpoint and validation every 4; trains nothing useful in well under a second.

Early stopping (:mod:`mrisr.training.early_stopping`) is on for ``EDSRTrainer`` and the
budget variants; the fixed-budget comparisons (quality harness, demo, tests) keep it off so
that every configuration trains the same number of iterations.

Precision:

* ``EDSRTrainer_fp32``: float32 throughout on CPU (the default trains with bf16 autocast
  on CPUs that compute bf16 natively, see ``SRTrainer.cpu_mixed_precision``).
"""

from __future__ import annotations

from mrisr.training.trainer import TRAINERS, EDSRTrainer


@TRAINERS.register
class EDSRTrainer_2000iters(EDSRTrainer):
    """2000 iterations."""

    iterations = 2000


@TRAINERS.register
class EDSRTrainer_5000iters(EDSRTrainer):
    """5000 iterations."""

    iterations = 5000


@TRAINERS.register
class EDSRTrainer_20000iters(EDSRTrainer):
    """20000 iterations."""

    iterations = 20000


@TRAINERS.register
class EDSRTrainer_5iters(EDSRTrainer):
    """Five iterations of the planned network."""

    iterations = 5
    checkpoint_every = 5
    validate_every = 5
    early_stopping = False


@TRAINERS.register
class EDSRTrainer_quality(EDSRTrainer):
    """The quality harness's budget (``benchmarks/bench_quality.py``): a half-depth,
    half-width EDSR, 1200 iterations (its time per machine: ``benchmarks/bench_edsr.py``)."""

    iterations = 1200
    batch_size = 16
    num_blocks = 8
    num_features = 32
    learning_rate = 2e-4
    checkpoint_every = 200
    validate_every = 400
    log_every = 20
    early_stopping = False  # every configuration of the harness trains the same budget


@TRAINERS.register
class EDSRTrainer_quality_long(EDSRTrainer_quality):
    """The harness's network for four times its budget (4800 iterations) as a ceiling, with
    early stopping (``benchmarks/bench_early_stop.py``)."""

    iterations = 4800
    checkpoint_every = 400
    validate_every = 400
    early_stopping = True


@TRAINERS.register
class EDSRTrainer_quality_long_fixed(EDSRTrainer_quality_long):
    """``EDSRTrainer_quality_long`` without early stopping: the same 4800 iterations in full,
    validated as often (its benchmark's reference)."""

    early_stopping = False
    validate_every = 240


@TRAINERS.register
class EDSRTrainer_quality_l1(EDSRTrainer_quality):
    """The harness's budget with L1 only, whatever the plans say (the loss ablation)."""

    frequency_loss_weight = 0.0


@TRAINERS.register
class EDSRTrainer_quality_amp1(EDSRTrainer_quality):
    """The harness's budget with the Fourier-amplitude term at 1.0 (the loss ablation)."""

    frequency_loss_weight = 1.0


@TRAINERS.register
class EDSRTrainer_quality_amp2(EDSRTrainer_quality):
    """The harness's budget with the Fourier-amplitude term at 2.0 (the loss ablation)."""

    frequency_loss_weight = 2.0


@TRAINERS.register
class EDSRTrainer_demo(EDSRTrainer_quality):
    """The demo budget: the harness's network for half the iterations, so that
    ``mrisr_demo`` stays within 15 minutes on 2 CPU cores without AMX."""

    iterations = 600
    validate_every = 200


@TRAINERS.register
class EDSRTrainer_screening(EDSRTrainer_quality):
    """The selection rule's screen (:mod:`mrisr.training.selection`): the harness's network
    for a quarter of its budget (300 iterations), the same for every candidate, validated
    once at the end."""

    iterations = 300
    checkpoint_every = 100
    validate_every = 300


@TRAINERS.register
class EDSRTrainer_tiny(EDSRTrainer):
    """A two-block EDSR for tests: 8 iterations of batch 4."""

    iterations = 8
    batch_size = 4
    num_blocks = 2
    num_features = 16
    checkpoint_every = 4
    validate_every = 4
    log_every = 2
    validation_max_slices = 4
    early_stopping = False


@TRAINERS.register
class EDSRTrainer_fp32(EDSRTrainer):
    """No bf16 autocast on CPU: float32 throughout."""

    cpu_mixed_precision = False
