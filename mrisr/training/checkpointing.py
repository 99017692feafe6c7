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

import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from mrisr.planning.plans_handler import Plans
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import atomic_path

FORMAT = 1
LATEST = "checkpoint_latest.pth"
BEST = "checkpoint_best.pth"
FINAL = "checkpoint_final.pth"


def plans_identity(plans: Plans, configuration: str) -> str:
    """Hash of everything in the plans that changes what a configuration trains on/with."""
    blob = json.dumps(
        {
            "preprocessing": plans.preprocessing_identity(),
            "configuration": plans.configuration(configuration).data,
        },
        sort_keys=True,
    )
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write ``state`` atomically (temporary file, fsync, rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely; an unreadable file is a one-line MrisrError."""
    path = Path(path)
    if not path.is_file():
        raise MrisrError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for damaged or foreign files
        raise MrisrError(
            f"{path}: unreadable checkpoint ({type(e).__name__}); delete it to start over"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "network" not in state:
        raise MrisrError(f"{path}: not an mrisr checkpoint (format {FORMAT}); delete it")
    return state


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


# ---------------------------------------------------------------- networks for inference
#: what a checkpoint's ``network_args`` may hold (a checkpoint is data: bounded before
#: anything is allocated). name -> (type, minimum, maximum)
NETWORK_ARG_BOUNDS = {
    "EDSR": {
        "scale": (int, 2, 16),
        "num_blocks": (int, 1, 256),
        "num_features": (int, 1, 1024),
        "res_scale": (float, 0.0, 10.0),
        "in_channels": (int, 1, 16),
    }
}


def check_network_args(cls_name: str, args: object, path: str | os.PathLike | None) -> dict:
    """``args`` if every entry is known, of its type and within bounds; else MrisrError."""
    where = f"{path}: " if path else ""
    bounds = NETWORK_ARG_BOUNDS[cls_name]
    if not isinstance(args, dict):
        raise MrisrError(f"{where}checkpoint network_args is not a mapping; the file is damaged")
    for k, v in args.items():
        if k not in bounds:
            raise MrisrError(f"{where}checkpoint network_args has unknown key '{k}'; delete it")
        typ, lo, hi = bounds[k]
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        if ok and typ is int:
            ok = float(v).is_integer()
        if not ok or not lo <= v <= hi:
            raise MrisrError(
                f"{where}checkpoint network_args {k}={v!r} is out of range ({lo}..{hi}); the "
                "file is damaged or foreign: delete it and retrain"
            )
    if "scale" not in args:
        raise MrisrError(f"{where}checkpoint network_args lacks 'scale'; the file is damaged")
    return {k: (int(v) if bounds[k][0] is int else float(v)) for k, v in args.items()}


def network_from_state(state: dict, path: str | os.PathLike | None = None) -> torch.nn.Module:
    """Rebuild the network of a loaded checkpoint (class and arguments stored in it); the
    arguments are bounded, the weights must fit them and be finite."""
    from mrisr.networks.edsr import EDSR
    from mrisr.utilities.safety import check_finite_network

    classes = {"EDSR": EDSR}
    name = state.get("network_class", "EDSR")
    cls = classes.get(name) if isinstance(name, str) else None
    if cls is None:
        raise MrisrError(f"checkpoint holds an unknown network class '{name}'")
    net = cls(**check_network_args(name, state.get("network_args"), path))
    try:
        net.load_state_dict(state["network"])
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0] if first else type(e).__name__
        raise MrisrError(
            f"{path or 'checkpoint'}: weights do not fit the network ({detail[:160]}); "
            "the file is damaged or foreign: delete it and retrain"
        ) from None
    check_finite_network(net, path or "checkpoint")
    return net.eval()


def load_network(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The trained network of a checkpoint file, in eval mode (for the predictor)."""
    return network_from_state(read_checkpoint(path, map_location="cpu"), path).to(device)
