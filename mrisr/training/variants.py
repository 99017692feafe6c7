"""Trainer variants: each a small subclass that changes one thing, registered by name.

Budget (the learning-rate milestones, checkpoint and validation intervals follow the new
length, see :class:`mrisr.training.trainer.SRTrainer`):

* ``EDSRTrainer_2000iters``, ``EDSRTrainer_5000iters``, ``EDSRTrainer_20000iters``
* ``EDSRTrainer_5iters``: five iterations of the planned network (smoke test of a setup)
* ``EDSRTrainer_demo``: the embedded demo on a laptop CPU: 400 iterations of batch 4 with
  the planned 16-block network, validation and checkpoints every 100 iterations. On the
  demo dataset and two cores: about 0.1 s per iteration with bf16 autocast (AMX), 0.3 s
  in float32, plus about 10 s of validation per fold. Far from converged (the planned
  budget is tens of thousands of iterations): it shows the pipeline, not the method's
  quality; expect SR below bicubic on PSNR at this budget.
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
class EDSRTrainer_demo(EDSRTrainer):
    """A few hundred iterations of small batches: the demo on a CPU."""

    iterations = 400
    batch_size = 4
    checkpoint_every = 100
    validate_every = 100
    log_every = 10


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
