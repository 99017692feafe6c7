"""Issue 11: torch threads from the CPUs this process may really use, OMP_NUM_THREADS wins,
the OpenMP spin is bounded before torch loads unless the user chose a policy, the thread
count follows contention."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mrisr.utilities import threads


def _cgroup_v2(root: Path, quota: str, nested: str | None = None) -> Path:
    (root / "user.slice" / "job").mkdir(parents=True)
    (root / "cpu.max").write_text("max 100000\n")
    (root / "user.slice" / "cpu.max").write_text(f"{quota}\n")
    if nested:
        (root / "user.slice" / "job" / "cpu.max").write_text(f"{nested}\n")
    proc = root / "proc_cgroup"
    proc.write_text("0::/user.slice/job\n")
    return proc


def test_cgroup_v2_quota_is_the_tightest_over_the_ancestors(tmp_path):
    proc = _cgroup_v2(tmp_path, "150000 100000", nested="max 100000")
    assert threads.cgroup_cpu_limit(proc, tmp_path) == pytest.approx(1.5)
    proc = _cgroup_v2(tmp_path / "b", "400000 100000", nested="50000 100000")
    assert threads.cgroup_cpu_limit(proc, tmp_path / "b") == pytest.approx(0.5)


def test_cgroup_v1_quota_and_unlimited(tmp_path):
    cpu = tmp_path / "cpu,cpuacct" / "docker" / "abc"
    cpu.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text("250000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc_cgroup"
    proc.write_text("5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n")
    assert threads.cgroup_cpu_limit(proc, tmp_path) == pytest.approx(2.5)
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")
    assert threads.cgroup_cpu_limit(proc, tmp_path) is None
    assert threads.cgroup_cpu_limit(tmp_path / "missing", tmp_path / "nothing") is None


def test_threads_follow_affinity_quota_loaders_and_the_user(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "affinity_cpus", lambda: 8)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 2.5)
    assert threads.usable_cpus() == 3  # quota 2.5 CPUs: 3 threads keep it busy
    assert threads.compute_threads(loader_workers=1) == 2
    assert threads.compute_threads(loader_workers=5) == 1  # never below one
    assert threads.compute_threads(processes=2) == 1
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert threads.compute_threads() == 8
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.compute_threads(loader_workers=4) == 3  # the user's choice wins
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert threads.compute_threads() == 8


def test_configure_openmp_keeps_the_users_choice():
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert threads.configure_openmp(env) == {} and env == {"OMP_WAIT_POLICY": "ACTIVE"}
    env = {}
    threads.configure_openmp(env)
    assert env == threads.OPENMP_ENV


@pytest.mark.parametrize("user", [None, "ACTIVE"])
def test_entry_points_set_the_wait_policy_before_torch(user):
    env = {k: v for k, v in os.environ.items() if k not in threads.USER_POLICY_KEYS}
    env["OMP_NUM_THREADS"] = "1"
    if user:
        env["OMP_WAIT_POLICY"] = user
    code = (
        "import sys, os\nimport mrisr.cli.train\n"
        "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    spin, policy = out.stdout.split()
    if user:  # the user's policy, and nothing of ours beside it
        assert (spin, policy) == ("None", user)
    else:
        assert (spin, policy) == (threads.OPENMP_ENV["GOMP_SPINCOUNT"], "None")


def test_tuner_follows_contention_that_comes_and_goes():
    """2 cores: alone 2 threads step in 1.0 (1 thread: 1.8); beside a busy process 2 threads
    take 3.5 and 1 thread 1.9. The tuner must drop to 1 thread while the other process runs
    and come back to 2 when it has gone, within a few hundred steps each time."""
    counts: list[int] = []
    tuner = threads.ThreadTuner(2, trial=4, every=50, enabled=True, set_threads=counts.append)
    times = {False: {2: 1.0, 1: 1.8}, True: {2: 3.5, 1: 1.9}}
    history = []
    for step in range(900):
        busy = 300 <= step < 600
        tuner.step_done(times[busy][tuner.current])
        history.append(tuner.current)
    assert counts[0] == 2
    alone = history[100:300] + history[700:900]
    contended = history[400:600]
    assert sum(c == 2 for c in alone) / len(alone) > 0.9
    assert sum(c == 1 for c in contended) / len(contended) > 0.9
    assert len(tuner.switches) >= 2


def test_tuner_is_off_when_the_user_fixed_the_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    counts: list[int] = []
    tuner = threads.ThreadTuner(2, set_threads=counts.append)
    for _ in range(500):
        tuner.step_done(1.0 if tuner.current == 1 else 9.0)
    assert not tuner.enabled and tuner.current == 2 and tuner.switches == []
    assert not threads.ThreadTuner(1, enabled=True, set_threads=counts.append).enabled
