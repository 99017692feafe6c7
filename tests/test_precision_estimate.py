"""Issue 11: the precision probe (measured, cached per machine and network) and the
training-time estimates."""

from __future__ import annotations

import pytest
import torch

from mrisr.training import estimate
from mrisr.training import precision_probe as precision
from mrisr.utilities.file_io import load_json

TINY = {"scale": 2, "num_blocks": 1, "num_features": 8, "res_scale": 1.0, "in_channels": 1}


def test_probe_measures_once_then_reads_the_cache(tmp_path, monkeypatch):
    cache = tmp_path / "results" / precision.CACHE_FILE
    calls = []
    real = precision.step_seconds

    def counted(*a, **k):
        calls.append(a[4])
        return real(*a, **k)

    monkeypatch.setattr(precision, "step_seconds", counted)
    cpu = torch.device("cpu")
    first = precision.probe(cpu, TINY, 2, 8, cache, candidates=["fp32", "bf16"])
    assert first.source == "probe" and calls == ["fp32", "bf16"] and cache.is_file()
    assert first.precision == min(first.seconds, key=first.seconds.get)
    again = precision.probe(cpu, TINY, 2, 8, cache, candidates=["fp32", "bf16"])
    assert again.source == "cache" and again.precision == first.precision and len(calls) == 2
    other = precision.probe(cpu, {**TINY, "num_features": 4}, 2, 8, cache, ["fp32"])
    assert other.source == "probe" and len(calls) == 3 and other.precision == "fp32"
    assert "per step" in first.describe()


def test_fp16_is_not_timed_by_auto_on_cpu(monkeypatch):
    monkeypatch.setattr(precision, "native_precisions", lambda d: ["fp32", "bf16", "fp16"])
    assert precision.auto_candidates(torch.device("cpu")) == ["fp32", "bf16"]


def test_check_precision_names_the_problem(monkeypatch):
    monkeypatch.setattr(precision, "native_precisions", lambda d: ["fp32"])
    precision.check_precision("auto", torch.device("cpu"))
    precision.check_precision("fp32", torch.device("cpu"))
    with pytest.raises(precision.MrisrError, match="does not compute bf16 natively"):
        precision.check_precision("bf16", torch.device("cpu"))
    with pytest.raises(precision.MrisrError, match="choose one of"):
        precision.check_precision("int8", torch.device("cpu"))


def test_fold_clock_costs_steps_and_validations():
    # 100 iterations, validation every 25 over 4 * 48^2 LR pixels at batch 4 x 24^2 patches
    clock = estimate.FoldClock(0, 100, 25, 4, 24, 4 * 48 * 48, "cpu", gpu_seconds_per_step=0.001)
    msgs = [clock.step_done(i + 1, 0.5 if i < 3 else 0.2) for i in range(40)]
    ready = [m for m in msgs if m]
    assert len(ready) == 1 and msgs.index(ready[0]) == 32  # 3 warm-up + 30 measured
    v = 0.2 * 4 * 48 * 48 / (3 * 4 * 24 * 24)  # one validation, from the step's cost
    assert clock.estimate == pytest.approx(67 * 0.2 + 3 * v)
    assert "100 iterations at 0.2 s" in ready[0] and "a CUDA GPU would take about 0 s" in ready[0]


def test_durations_read_naturally():
    assert [estimate.format_duration(s) for s in (42, 720, 5.5 * 3600, 3 * 86400)] == [
        "42 s",
        "12 min",
        "5.5 h",
        "3.0 days",
    ]


def test_step_flops_scale_with_the_batch_and_the_network():
    a = estimate.edsr_step_flops(TINY, 2, 8)
    assert estimate.edsr_step_flops(TINY, 4, 8) == pytest.approx(2 * a)
    big = {**TINY, "num_blocks": 16, "num_features": 64}
    # 16 x 64 EDSR, batch 16 of 48^2: ~0.3 TFLOP per training step
    assert 2e11 < estimate.edsr_step_flops(big, 16, 48) < 4e11


def test_plan_cost_lines_cost_every_trained_configuration(tmp_path):
    from mrisr.plans import Plans

    sr = {
        "lr_patch": 8,
        "num_blocks": 1,
        "num_features": 8,
        "batch_size": 2,
        "iterations": 1000,
        "learning_rate": 1e-4,
        "betas": [0.9, 0.999],
        "lr_milestones": [500],
        "lr_gamma": 0.5,
        "checkpoint_every": 100,
        "validate_every": 100,
    }
    plans = Plans(
        {
            "plans_name": "p",
            "dataset_name": "Dataset001_X",
            "scale": 2,
            "configurations": {
                "a_edsr": {"degradation": {"name": "gaussian"}, "sr": sr},
                "b_edsr": {"degradation": {"name": "gaussian"}, "sr": sr},
                "bicubic": {"degradation": {"name": "bicubic"}},
            },
        }
    )
    lines = estimate.plan_cost_lines(plans, 5, tmp_path / "precision.json")
    assert [ln.split()[0] for ln in lines] == ["a_edsr", "b_edsr", "all"]
    assert "5 folds x 1000 iterations at " in lines[0] and "on this CPU" in lines[0]
    # one probe serves both (same network), and it is cached
    assert len(load_json(tmp_path / "precision.json")) == 1


def test_amplitude_loss_sees_missing_texture_not_position():
    from mrisr.training.optimisation import amplitude_loss

    g = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 1, 32, 32, generator=g)
    assert amplitude_loss(hr, hr) == 0
    # a circular shift keeps every Fourier amplitude: no penalty
    assert amplitude_loss(torch.roll(hr, (3, 5), dims=(2, 3)), hr) < 1e-5
    # a blurred copy lacks high-frequency energy: penalised
    blurred = torch.nn.functional.avg_pool2d(hr, 3, 1, 1, count_include_pad=False)
    assert amplitude_loss(blurred, hr) > 0.05
