"""Checkpoints: written atomically, read only with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain types (no pickled objects):

``format``, ``trainer``, ``dataset``, ``plans_name``, ``plans_identity``,
``configuration``, ``fold``, ``iteration``, ``total_iterations``, ``seed``,
``world_size``, ``network_class``, ``network_args`` (rebuild the network without the
plans), ``network`` (state dict), ``optimisation`` (optimiser, scheduler, grad scaler),
``rng`` (torch, numpy and python states as tensors/lists), ``history`` (the curves of
``progress.png``), ``best_psnr``.

A file is written to a temporary name beside its destination, synced, then renamed over
it: a full disk, a crash or Ctrl-C during the write leaves the previous checkpoint valid.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from mrisr.networks.checkpoint_io import (  # noqa: F401  (the checkpoint API, in one place)
    FORMAT,
    load_network,
    network_from_state,
    read_checkpoint,
    save_checkpoint,
)
from mrisr.plans import plans_identity  # noqa: F401
from mrisr.utilities.errors import MrisrError

LATEST = "checkpoint_latest.pth"
BEST = "checkpoint_best.pth"
FINAL = "checkpoint_final.pth"


def check_identity(state: dict, expected: dict, path: str | os.PathLike) -> None:
    """One-line MrisrError if the checkpoint belongs to another trainer, plans or config."""
    for key, want in expected.items():
        got = state.get(key)
        if got != want:
            raise MrisrError(
                f"{path}: checkpoint was written with {key} '{got}', not '{want}'; "
                "use the matching options or delete the checkpoint to start over"
            )


class Checkpointer:
    """The checkpoints of one fold folder: ``latest``, ``best``, ``final``.

    ``identity`` (trainer, dataset, plans, configuration, fold) is written into every
    checkpoint and checked on loading; only the main rank writes (``enabled``).
    """

    def __init__(self, folder: str | os.PathLike, identity: dict, enabled: bool = True):
        self.folder = Path(folder)
        self.identity = dict(identity)
        self.enabled = enabled

    def path(self, name: str) -> Path:
        return self.folder / name

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def save(self, name: str, state: dict) -> None:
        if self.enabled:
            save_checkpoint({"format": FORMAT, **self.identity, **state}, self.path(name))

    def load(self, name: str, map_location: str | torch.device = "cpu") -> dict:
        state = read_checkpoint(self.path(name), map_location)
        check_identity(state, self.identity, self.path(name))
        return state


# ---------------------------------------------------------------- RNG states as plain data
def rng_state() -> dict:
    """Torch, numpy and python global RNG states as tensors and lists (weights_only-safe)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": py_state[0],
            "state": list(py_state[1]),
            "gauss_next": py_state[2],
        },
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
