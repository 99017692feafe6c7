"""How many CPU threads this process may really use, and an OpenMP runtime that behaves
beside other work.

``os.cpu_count()`` counts the machine's CPUs; a process may be pinned to fewer (affinity
mask: ``taskset``, Slurm, ``docker --cpuset-cpus``) or given a CPU quota (cgroup
``cpu.max``: ``docker --cpus``, Kubernetes limits). Torch threads beyond what the process
may use, spinning at OpenMP barriers for a core someone else holds, slow training by an
order of magnitude beside one other CPU-bound process. So:

* :func:`usable_cpus` = min(affinity mask, ceil(cgroup quota));
* :func:`compute_threads` = ``OMP_NUM_THREADS`` when the user set it, else the usable CPUs
  less the loader processes that run beside the compute threads (at least 1);
* :func:`configure_openmp` bounds how long an idle OpenMP thread spins before it sleeps
  (``GOMP_SPINCOUNT=10000`` instead of libgomp's far longer default) unless the user chose a
  wait policy; it must run before torch is imported (the runtime reads its environment
  when it is loaded), which the command-line entry points do (``mrisr/cli/__init__.py``);
* :class:`ThreadTuner` keeps the thread count at whichever of n and n/2 steps faster
  now, so that a busy neighbour costs a fair share, not a collapse.

Measured with ``benchmarks/bench_contention.py`` (2-core Xeon with AMX, trainer / DSGAN ms
per step): a fully passive policy (``OMP_WAIT_POLICY=PASSIVE``) costs 19-44% when alone
(88 / 75 vs 74 / 52) and is not needed once the tuner runs; the bounded spin costs nothing
measurable alone and keeps the trainer at 1.1x beside a nice-19 torch process (1.8x with
libgomp's default spin).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")

#: What :func:`configure_openmp` sets for the OpenMP runtime torch ships with on Linux
#: (GNU libgomp) when the user chose no wait policy (``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``).
OPENMP_ENV = {"GOMP_SPINCOUNT": "10000"}
USER_POLICY_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (``os.cpu_count()`` where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _cgroup_dirs(proc_cgroup: Path, root: Path) -> list[Path]:
    """The cgroup folders that may hold this process's CPU limit, innermost first (the
    process's own cgroup and its ancestors; in a container the root is its own)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return [root]
    dirs: list[Path] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        bases = (
            [root]
            if controllers == ""
            else [root / c for c in (controllers, "cpu", "cpu,cpuacct") if (root / c).is_dir()]
        )
        for base in bases:
            p = base / rel.lstrip("/")
            while True:
                dirs.append(p)
                if p == base or base not in p.parents:
                    break
                p = p.parent
    return dirs or [root]


def _quota_of(folder: Path) -> float | None:
    """CPUs allowed by the quota in ``folder`` (cgroup v2 ``cpu.max`` or v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``); None when unlimited or absent."""
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def cgroup_cpu_limit(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = CGROUP_ROOT
) -> float | None:
    """The tightest CPU quota over this process's cgroup and its ancestors, in CPUs (e.g.
    1.5 for ``docker --cpus 1.5``); None when there is none."""
    limits = [q for q in (_quota_of(d) for d in _cgroup_dirs(proc_cgroup, root)) if q]
    return min(limits) if limits else None


def usable_cpus() -> int:
    """CPUs this process may keep busy: the affinity mask, capped by the cgroup quota."""
    n = affinity_cpus()
    quota = cgroup_cpu_limit()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota - 1e-9)))
    return n


def user_threads() -> int | None:
    """``OMP_NUM_THREADS`` when the user set it to a positive integer, else None."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    try:
        n = int(value.split(",")[0])
    except ValueError:
        return None
    return n if n > 0 else None


def compute_threads(loader_workers: int = 0, processes: int = 1) -> int:
    """Intra-op threads for each of ``processes`` compute processes (DDP ranks), leaving a
    CPU to each of ``loader_workers`` loader processes; ``OMP_NUM_THREADS`` wins."""
    user = user_threads()
    if user is not None:
        return user
    free = usable_cpus() - max(0, int(loader_workers))
    return max(1, free // max(1, int(processes)))


def set_compute_threads(loader_workers: int = 0, processes: int = 1) -> int:
    """Set torch's intra-op threads to :func:`compute_threads`; returns the number."""
    import torch

    n = compute_threads(loader_workers, processes)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def configure_openmp(environ: dict | None = None) -> dict[str, str]:
    """Set :data:`OPENMP_ENV` in ``environ`` (default ``os.environ``) unless the user chose
    a wait policy; returns what was set. Effective only before torch is first imported."""
    env = os.environ if environ is None else environ
    if any(k in env for k in USER_POLICY_KEYS):
        return {}
    env.update(OPENMP_ENV)
    return dict(OPENMP_ENV)


class ThreadTuner:
    """Keeps torch's intra-op thread count at whichever of ``threads`` and ``threads // 2``
    steps faster right now, by measurement.

    Beside another CPU-bound process, threads that must meet at every operator's barrier
    wait for the one that shares a core with it: on 2 cores, 2 threads then step 3-4x
    slower than alone, 1 thread ~1.8x (its fair share). The tuner times ``trial`` steps
    at the current count, then ``trial`` at the other, keeps the faster (the other only
    when it is faster by ``margin``), and tries again every ``every`` steps, so it follows
    contention that comes and goes. Off (a fixed count) when the user set
    ``OMP_NUM_THREADS``, on one CPU, or with ``enabled=False``. Results differ between
    thread counts only in float summation order; fix ``OMP_NUM_THREADS`` for bit-identical
    reruns.
    """

    def __init__(
        self,
        threads: int,
        trial: int = 4,
        every: int = 200,
        margin: float = 0.9,
        enabled: bool | None = None,
        set_threads=None,
        warmup: int = 20,
    ) -> None:
        import torch

        self.full = max(1, int(threads))
        self.reduced = max(1, self.full // 2)
        if enabled is None:
            enabled = user_threads() is None
        self.enabled = bool(enabled) and self.reduced < self.full
        self.trial, self.every, self.margin = max(1, trial), max(1, every), margin
        self._set = set_threads or torch.set_num_threads
        self.current = self.full
        self._set(self.current)
        self._phase = "measure"  # measure -> try -> settle -> measure ...
        self._times: list[float] = []
        self._baseline = 0.0
        self._countdown = warmup  # the first steps warm up caches, allocator and oneDNN
        self.switches: list[tuple[int, int]] = []  # (step, threads) where the count changed
        self._steps = 0

    def _other(self) -> int:
        return self.reduced if self.current == self.full else self.full

    def step_done(self, seconds: float) -> None:
        """Record the wall time of one step (call after every step)."""
        self._steps += 1
        if not self.enabled:
            return
        if self._countdown > 0:
            self._countdown -= 1
            return
        if self._phase == "settle":
            self._phase, self._countdown = "measure", self.every
            return
        self._times.append(float(seconds))
        if len(self._times) < self.trial:
            return
        median = sorted(self._times)[len(self._times) // 2]
        self._times = []
        if self._phase == "measure":
            self._baseline, self._phase = median, "try"
            self._switch(self._other())
            self._countdown = 1  # the first step at a new count pays the thread start-up
            return
        if median >= self.margin * self._baseline:
            self._switch(self._other())  # not faster: back
        self._phase, self._countdown = "settle", 0

    def _switch(self, n: int) -> None:
        self.current = n
        self._set(n)
        self.switches.append((self._steps, n))
