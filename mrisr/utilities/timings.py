"""Timings measured once per machine: the probes that choose an arithmetic (the SR
network's precision, the DSGAN discriminator's precision and chunking) cache them in a
JSON file under ``$mrisr_results/.machine`` (:func:`mrisr.paths.machine_cache`), keyed by
what a timing depends on (:func:`machine_key`) and the shape measured."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from mrisr.utilities.devices import cpu_model
from mrisr.utilities.file_io import load_json, save_json

logger = logging.getLogger(__name__)


def machine_key(device: torch.device) -> str:
    """What a cached timing depends on besides the network: processor, torch, threads."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}|torch {torch.__version__}"
    return (
        f"{device.type}:{cpu_model()}|torch {torch.__version__}|threads {torch.get_num_threads()}"
    )


def cached_seconds(
    cache: Path | None, key: str, candidates: list[str], measure
) -> tuple[dict[str, float], str]:
    """Seconds of every candidate under ``key`` in the machine's JSON ``cache``; what the
    cache lacks is measured (``measure(candidate)``) and written back. Returns the
    timings and their source ("cache" or "probe")."""
    table = {}
    if cache is not None and cache.is_file():
        try:
            table = load_json(cache)
        except (OSError, ValueError):
            table = {}
    entry = table.get(key)
    seconds = {p: float(v) for p, v in (entry if isinstance(entry, dict) else {}).items()}
    seconds = {p: v for p, v in seconds.items() if p in candidates}
    if set(seconds) == set(candidates):
        return seconds, "cache"
    for p in candidates:
        if p not in seconds:
            seconds[p] = float(measure(p))
    if cache is not None:
        table = {k: v for k, v in table.items() if isinstance(v, dict)}
        table[key] = seconds
        try:
            save_json(table, cache)
        except OSError as e:  # a read-only results folder costs a probe next time
            logger.warning("timings not cached in %s: %s", cache, e)
    return seconds, "probe"
