"""Slowdown beside other work: the EDSR trainer and the DSGAN stage, alone and beside one
CPU-bound process.

Each workload runs in a fresh process, started the way the command-line entry points start
(``mrisr.cli`` imported before torch: bounded OpenMP spin unless the user chose a policy;
torch threads from :func:`mrisr.utilities.threads.compute_threads`, kept by the
:class:`~mrisr.utilities.threads.ThreadTuner`), first alone and then
while a CPU-bound process (``--hog``: a Python busy loop, or a one-thread torch matmul
loop) runs beside it. The figure is the ratio of the median step times. A fair share of
2 cores beside one busy process is 2x; the bar is <= 2.2x.

* ``trainer``: :class:`~mrisr.training.trainer.EDSRTrainer` with the demo's network
  (8 x 32, batch 16 of 48x48 LR patches, bf16 where native), its real data pipeline;
* ``dsgan``: the DSGAN stage's :class:`~mrisr.degradation.dsgan.trainer.BatchTrainer` on 24
  slices (one batch).

``--policy`` runs the children with another OpenMP setting for comparison: ``default``
(libgomp's, nothing set), ``active``, ``passive`` or ``spin:N``; ``OMP_NUM_THREADS=1``
in the environment fixes one thread (and turns the tuner off).

    python benchmarks/bench_contention.py                      # about 3 minutes
    python benchmarks/bench_contention.py --policy default     # libgomp's own spin
    python benchmarks/bench_contention.py --hog torch --hog-nice 19
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOGS = {
    "python": "while True:\n    pass\n",
    "torch": (
        "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\n"
        "while True:\n    a = torch.tanh(a @ a)\n"
    ),
}


# ---------------------------------------------------------------------------- children
def child_trainer(iterations: int, warmup: int) -> list[float]:
    """Seconds per iteration of the trainer (after ``warmup``)."""
    sys.path.insert(0, str(HERE))
    import bench_edsr  # the benchmark's store and plans

    from mrisr.preprocessing.dataset import PreprocessedDataset
    from mrisr.training.trainer import EDSRTrainer

    stamps: list[float] = []

    class Timed(EDSRTrainer):
        num_blocks, num_features, log_every = 8, 32, 10**9

        def on_iteration_end(self, iteration, loss):
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "store"
        folder.mkdir()
        synthetic = bench_edsr.make_store(folder, cases=2, slices=12, size=192)
        plans = bench_edsr.make_plans(warmup + iterations)
        t = Timed(plans, "bench", 0, Path(tmp) / "out", "cpu", progress=False)
        t.run(PreprocessedDataset(folder), synthetic, [], continue_training=False)
    diffs = [b - a for a, b in zip(stamps[warmup - 1 :], stamps[warmup:])]
    return diffs


def child_dsgan(iterations: int, warmup: int) -> list[float]:
    """Seconds per iteration of the DSGAN stage's batched trainer on 24 slices."""
    sys.path.insert(0, str(HERE))
    import bench_dsgan
    import torch

    from mrisr.degradation.dsgan import params as dsgan_params
    from mrisr.degradation.dsgan import trainer as core
    from mrisr.degradation.dsgan import units as dsgan_units
    from mrisr.utilities.threads import set_compute_threads

    set_compute_threads()
    hr, lr = bench_dsgan.make_slices(24)
    units = [dsgan_units.DSGANUnit(f"s{i}", hr[i], lr[i], seed=i) for i in range(len(hr))]
    update = bench_dsgan.PLANNED  # the update rule dsgan_edsr plans
    p = dsgan_params.resolve_params({"iterations": warmup + iterations, "update": update}, 2)
    plans = [dsgan_units.prepare_unit(i, u, p, warmup + iterations) for i, u in enumerate(units)]
    trainer = core.BatchTrainer(plans, [u.name for u in units], 2, p, torch.device("cpu"))
    times: list[float] = []
    trainer.run(on_step=times.append)
    return times[warmup:]


# ---------------------------------------------------------------------------- parent
def run_child(workload: str, policy: str, iterations: int, warmup: int) -> dict:
    env = dict(os.environ)
    for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"):
        env.pop(key, None)
    if policy in ("active", "passive"):
        env["OMP_WAIT_POLICY"] = policy.upper()
    elif policy.startswith("spin:"):
        env["GOMP_SPINCOUNT"] = policy[5:]
    if policy != "mrisr":
        env["MRISR_BENCH_RAW_ENV"] = "1"
    cmd = [sys.executable, __file__, "--child", workload]
    cmd += ["--iterations", str(iterations), "--warmup", str(warmup)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{workload} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workloads", default="trainer,dsgan")
    ap.add_argument(
        "--policy",
        default="mrisr",
        help="mrisr (as the entry points set it), default (torch's: nothing set), active, "
        "passive, or spin:N (GOMP_SPINCOUNT=N)",
    )
    ap.add_argument("--hog", choices=sorted(HOGS), default="python")
    ap.add_argument("--hog-nice", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=0, help="timed steps (0: per workload)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        if not os.environ.get("MRISR_BENCH_RAW_ENV"):
            import mrisr.cli  # noqa: F401  (the entry points' OpenMP settings, before torch)

        fn = {"trainer": child_trainer, "dsgan": child_dsgan}[a.child]
        times = fn(a.iterations, a.warmup)
        import torch

        print(
            json.dumps(
                {
                    "times": times,
                    "threads": torch.get_num_threads(),
                    "wait_policy": os.environ.get("OMP_WAIT_POLICY")
                    or f"spin {os.environ.get('GOMP_SPINCOUNT', 'libgomp default')}",
                }
            )
        )
        return
    from mrisr.utilities.devices import cpu_model

    model = cpu_model()
    print(
        f"CPU: {model}; {os.cpu_count()} CPUs; policy {a.policy}; hog {a.hog} (nice {a.hog_nice})"
    )
    default_iters = {"trainer": 100, "dsgan": 100}  # the tuner adapts within ~30 steps
    for w in a.workloads.split(","):
        iters = a.iterations or default_iters[w]
        alone = run_child(w, a.policy, iters, a.warmup)
        hog = subprocess.Popen(
            [sys.executable, "-c", HOGS[a.hog]],
            preexec_fn=(lambda: os.nice(a.hog_nice)) if a.hog_nice else None,
        )
        try:
            time.sleep(1.0)
            busy = run_child(w, a.policy, iters, a.warmup)
        finally:
            hog.kill()
            hog.wait()
        t_alone = statistics.median(alone["times"])
        t_busy = statistics.median(busy["times"])
        print(
            f"{w:8s} threads {alone['threads']} (wait policy {alone['wait_policy']}): "
            f"alone {1e3 * t_alone:8.1f} ms/step, beside the hog {1e3 * t_busy:8.1f} ms/step "
            f"-> slowdown {t_busy / t_alone:.2f}x (bar <= 2.2x)"
        )


if __name__ == "__main__":
    main()
