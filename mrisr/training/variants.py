"""Trainer variants: each a small subclass that changes one thing, registered by name.

Budget (the learning-rate milestones, checkpoint and validation intervals follow the new
length, see :class:`mrisr.training.trainer.SRTrainer`):

* ``EDSRTrainer_2000iters``, ``EDSRTrainer_5000iters``, ``EDSRTrainer_20000iters``
* ``EDSRTrainer_5iters``: five iterations of the planned network (smoke test of a setup)
* ``EDSRTrainer_demo``: the embedded demo (``mrisr_demo``) on a 2-core CPU: EDSR with 8
  residual blocks x 32 features (1/8 of the planned network's arithmetic), 1200
  iterations of 16 patches, Adam 2e-4 (halved at 1/2 and 3/4), validation every 400 and
  checkpoints every 200 iterations. About 65 ms per iteration with bf16 autocast (AMX),
  ~80 s per configuration; the planned network and budget (16 x 64, tens of thousands of
  iterations) are what ``EDSRTrainer`` trains.
* ``EDSRTrainer_tiny``: for the test-suite: 2 blocks x 16 features, batch 4, 8 iterations,
  checkpoint and validation every 4; trains nothing useful in well under a second.

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


@TRAINERS.register
class EDSRTrainer_quality(EDSRTrainer):
    """The quality harness's budget (``benchmarks/bench_quality.py``): a half-depth,
    half-width EDSR, 1200 iterations (~80 s on 2 AMX cores, ~175 s on 2 AMD EPYC cores)."""

    iterations = 1200
    batch_size = 16
    num_blocks = 8
    num_features = 32
    learning_rate = 2e-4
    checkpoint_every = 200
    validate_every = 400
    log_every = 20


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


@TRAINERS.register
class EDSRTrainer_fp32(EDSRTrainer):
    """No bf16 autocast on CPU: float32 throughout."""

    cpu_mixed_precision = False
