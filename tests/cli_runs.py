"""What the CLI fault tests share: the synthetic dataset's names, a checkpoint of random
weights, and running a command's ``main()`` to its exit code, stdout and stderr."""

from __future__ import annotations

import os

import torch

from mrisr.cli import predict as predict_cli
from mrisr.networks.edsr import EDSR
from mrisr.training.checkpointing import FORMAT

DS = "Dataset001_Synth"
ROOTS = ("mrisr_raw", "mrisr_preprocessed", "mrisr_results")
MODEL = "EDSRTrainer__mrisrPlans__gaussian_edsr"


def random_checkpoint(scale: int, **change) -> dict:
    torch.manual_seed(0)
    args = {"scale": scale, "num_blocks": 1, "num_features": 8, "res_scale": 1.0, "in_channels": 1}
    net = EDSR(**args)
    state = {
        "format": FORMAT,
        "network_class": "EDSR",
        "network_args": args,
        "network": net.state_dict(),
    }
    state.update(change)
    return state


def run(cli, *args):
    """(exit code, stdout, stderr) of a command's main() (argparse exits included)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def one_line(err: str, prog: str, *expected: str) -> str:
    """The command's error line; no traceback anywhere."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith(f"{prog}: error: ")]
    assert len(lines) == 1, err
    if os.environ.get("MRISR_SHOW_ERRORS"):
        print("\n" + lines[0])
    for s in expected:
        assert s in lines[0], lines[0]
    return lines[0]


def predict(env, out, *extra):
    return run(
        predict_cli, "-i", env["in"], "-o", out, "-c", "gaussian_edsr", "--disable-tta", *extra
    )
