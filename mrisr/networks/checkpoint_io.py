"""Checkpoint files: written atomically, read only with ``torch.load(weights_only=True)``,
and the network rebuilt from the registered name and arguments recorded in them.

Reading a checkpoint and rebuilding its network is what the trainer (resume), the
predictor and the model export share; it lives with the networks so that inference does
not depend on training. :mod:`mrisr.training.checkpointing` adds the trainer's side
(identity checks, RNG states, the latest/best/final files of a fold).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from mrisr.networks.registry import network_spec, registered_networks
from mrisr.utilities.errors import MrisrError
from mrisr.utilities.file_io import atomic_path
from mrisr.utilities.safety import check_finite_network

FORMAT = 1
#: the network of checkpoints written before the name was recorded
DEFAULT_NETWORK_CLASS = "EDSR"


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


def check_network_args(cls_name: str, args: object, path: str | os.PathLike | None) -> dict:
    """``args`` if every entry is known, of its type and within bounds; else MrisrError."""
    where = f"{path}: " if path else ""
    bounds = network_spec(cls_name).arg_bounds
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


def _check_shapes_before_allocating(cls, args: dict, weights: object, path) -> None:
    """Build the network on the meta device (no memory) and compare its parameter shapes with
    the stored weights: arguments within bounds can still mean tens of GiB, and a foreign
    file is refused here in one line before the allocator is asked for them."""
    where = path or "checkpoint"
    if not isinstance(weights, dict):
        raise MrisrError(f"{where}: checkpoint network is not a mapping; the file is damaged")
    with torch.device("meta"):
        meta = cls(**args)
    want = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in weights.items() if isinstance(v, torch.Tensor)}
    if want != got:
        diff = sorted(set(want) ^ set(got)) or [k for k in want if want[k] != got.get(k)]
        nbytes = sum(v.numel() * v.element_size() for v in meta.state_dict().values())
        raise MrisrError(
            f"{where}: weights do not fit the network its arguments describe ({diff[0]}; "
            f"{nbytes / 2**30:.2g} GiB of parameters); the file is damaged or foreign: "
            "delete it and retrain"
        )


def network_from_state(state: dict, path: str | os.PathLike | None = None) -> torch.nn.Module:
    """Rebuild the network of a loaded checkpoint (registered name and arguments stored in
    it); the arguments are bounded, the weights must fit them and be finite."""
    name = state.get("network_class", DEFAULT_NETWORK_CLASS)
    if not isinstance(name, str) or name not in registered_networks():
        raise MrisrError(f"checkpoint holds an unknown network class '{name}'")
    spec = network_spec(name)
    args = check_network_args(name, state.get("network_args"), path)
    _check_shapes_before_allocating(spec.cls, args, state["network"], path)
    net = spec.cls(**args)
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


def check_network_scale(net: torch.nn.Module, plans: object, path: str | os.PathLike) -> None:
    """One-line MrisrError unless the network upsamples by the plans' scale."""
    got, want = getattr(net, "scale", None), plans.scale
    if got is not None and int(got) != int(want):
        raise MrisrError(
            f"{path}: the network upsamples x{got} but the plans' scale is x{want}; "
            "the checkpoint belongs to other plans: retrain or use the matching model"
        )


def load_network(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The trained network of a checkpoint file, in eval mode (for the predictor)."""
    return network_from_state(read_checkpoint(path, map_location="cpu"), path).to(device)


#: the least share of a network's parameters a file of starting weights must fill
PRETRAINED_MIN_FRACTION = 0.5
#: starting weights shipped with mrisr, by the name ``-pretrained_weights`` takes; each has
#: its training recipe beside it (``.json``: benchmarks/pretrain_generic_edsr.py)
PRETRAINED_DIR = Path(__file__).parent / "pretrained"
SHIPPED_WEIGHTS = {"generic": PRETRAINED_DIR / "edsr_generic_8x32.pt"}


def generic_weights_for(network: str, args: dict) -> Path | None:
    """The shipped generic network of this architecture (registered ``network`` name and
    constructor ``args``), preferring one of the same scale, else the x2 one (an x4
    upsampler begins with an x2 stage); None if none is shipped. A network of another scale
    still starts from it (its upsampler keeps its initialisation where the shapes differ)."""
    cls_name = network_spec(network).cls.__name__
    ours = {k: v for k, v in args.items() if k != "scale"}
    found = []
    for recipe_file in sorted(PRETRAINED_DIR.glob("*.json")):
        recipe = json.loads(recipe_file.read_text())
        theirs = dict(recipe.get("network_args", {}))
        weights = recipe_file.with_suffix(".pt")
        if recipe.get("network_class") != cls_name or not weights.is_file():
            continue
        if {k: v for k, v in theirs.items() if k != "scale"} == ours:
            scale = theirs.get("scale")
            found.append((scale != args.get("scale"), scale != 2, weights))
    return min(found)[-1] if found else None


def pretrained_weights_file(name_or_path: str | os.PathLike) -> Path:
    """The file ``-pretrained_weights`` names: a shipped network (``generic``) or a path."""
    if str(name_or_path) in SHIPPED_WEIGHTS:
        return SHIPPED_WEIGHTS[str(name_or_path)]
    return Path(name_or_path).expanduser().resolve()


def load_pretrained_weights(network: torch.nn.Module, path: str | os.PathLike) -> dict:
    """Start ``network`` from the weights in ``path`` (nnU-Net's ``-pretrained_weights``): an
    mrisr checkpoint (any fold's, exported or not) or a plain state dict, read with
    ``weights_only=True``. Every tensor whose name and shape match is copied; the others
    (e.g. the upsampler of another scale) keep their initialisation. A file that fills less
    than :data:`PRETRAINED_MIN_FRACTION` of the parameters is refused in one line. Returns
    the record kept in the fold's checkpoints."""
    path = Path(path)
    if not path.is_file():
        raise MrisrError(f"{path}: pretrained weights not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # damaged, foreign or pickled beyond plain tensors
        raise MrisrError(
            f"{path}: unreadable pretrained weights ({type(e).__name__}); give an mrisr "
            "checkpoint or a state dict of tensors"
        ) from None
    weights = state.get("network", state) if isinstance(state, dict) else None
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise MrisrError(f"{path}: not network weights (an mrisr checkpoint or a state dict)")
    own = network.state_dict()
    loaded = {k: v for k, v in weights.items() if k in own and v.shape == own[k].shape}
    total = sum(v.numel() for v in own.values())
    fraction = sum(own[k].numel() for k in loaded) / max(total, 1)
    if fraction < PRETRAINED_MIN_FRACTION:
        raise MrisrError(
            f"{path}: its weights fill {100 * fraction:.0f} % of this network's parameters "
            f"({len(loaded)} of {len(own)} tensors match by name and shape): weights of "
            "another network; train from scratch or give weights of this network"
        )
    bad = [k for k, v in loaded.items() if not torch.isfinite(v).all()]
    if bad:
        raise MrisrError(f"{path}: pretrained tensor '{bad[0]}' holds NaN or infinite values")
    with torch.no_grad():
        for k, v in loaded.items():
            own[k].copy_(v)
    return {
        "file": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "tensors_loaded": len(loaded),
        "tensors": len(own),
        "parameter_fraction": round(fraction, 4),
        "kept_initialised": sorted(set(own) - set(loaded)),
    }
