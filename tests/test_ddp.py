"""DDP on two CPU processes (gloo): same weights on both ranks, only rank 0 writes."""

import os
from pathlib import Path

import torch
from synthetic import write_dataset

from mrisr.cli.plan_and_preprocess import main as plan_main
from mrisr.training.train_api import results_folder, run_training
from mrisr.training.trainer import TRAINERS
from mrisr.training.variants import EDSRTrainer_tiny


class DDPProbeTrainer(EDSRTrainer_tiny):
    """The tiny trainer, reporting each rank's weights and checkpoint writes to a folder."""

    iterations = 4
    checkpoint_every = 2
    validate_every = 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.writes = 0
        save = self.checkpoints.save

        def counting_save(name, state):
            self.writes += int(self.checkpoints.enabled)
            save(name, state)

        self.checkpoints.save = counting_save

    def on_train_end(self):
        super().on_train_end()
        probe = Path(os.environ["MRISR_TEST_DDP_PROBE"])
        weights = {k: v.detach().clone() for k, v in self._unwrapped().state_dict().items()}
        torch.save(
            {"writes": self.writes, "world": self.ctx.world_size, "weights": weights},
            probe / f"rank{self.ctx.rank}.pt",
        )


TRAINERS.register(DDPProbeTrainer)


def test_two_cpu_processes_agree_and_rank0_writes(mrisr_env, tmp_path, monkeypatch):
    write_dataset(mrisr_env["mrisr_raw"], n_pairs=3, hr_size=(48, 48, 3), lr_size=(24, 24, 3))
    assert plan_main(["-d", "1", "-np", "1", "--no-select"]) == 0
    probe = tmp_path / "probe"
    probe.mkdir()
    monkeypatch.setenv("MRISR_TEST_DDP_PROBE", str(probe))
    summary = run_training(
        0,
        configuration="gaussian_edsr",
        trainer="DDPProbeTrainer",
        num_gpus=2,
        device="cpu",
        num_workers=0,
        progress=False,
    )
    r0 = torch.load(probe / "rank0.pt", weights_only=True)
    r1 = torch.load(probe / "rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2
    for k, v in r0["weights"].items():
        assert torch.equal(v, r1["weights"][k]), k
    assert r0["writes"] > 0 and r1["writes"] == 0
    fd = results_folder("Dataset001_Synth", "DDPProbeTrainer", "mrisrPlans", "gaussian_edsr")
    files = sorted(p.name for p in (fd / "fold_0").iterdir() if p.suffix == ".pth")
    assert files == ["checkpoint_best.pth", "checkpoint_final.pth", "checkpoint_latest.pth"]
    assert not [p for p in (fd / "fold_0").iterdir() if p.name.startswith(".")]
    final = torch.load(fd / "fold_0" / "checkpoint_final.pth", weights_only=True)
    assert final["world_size"] == 2 and final["iteration"] == 4
    for k, v in r0["weights"].items():
        assert torch.equal(v, final["network"][k])
    assert summary["num_cases"] == 1
