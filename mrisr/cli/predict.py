"""``mrisr_predict -i IN -o OUT``: super-resolve real LR scans with trained models."""

from __future__ import annotations

import argparse
from pathlib import Path

from mrisr.plans import DEFAULT_CONFIGURATION, DEFAULT_PLANS, DEFAULT_TRAINER
from mrisr.utilities.cli_support import int_at_least, run_command, setup_logging


def _tile_size(text: str) -> int:
    """0 (never tile) or 16..65536 LR pixels per side."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value != 0 and not 16 <= value <= 65536:
        raise argparse.ArgumentTypeError(
            f"{value} is not allowed: 0 (never tile) or 16..65536 pixels per side"
        )
    return value


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging()
    return run_command("mrisr_predict", lambda: _predict(args))


def _parser() -> argparse.ArgumentParser:
    """The input, the output and the model to predict with; the run options below."""
    p = argparse.ArgumentParser(
        prog="mrisr_predict",
        description="Super-resolve every real LR scan in IN; write one SR scan per input, same "
        "file name, into OUT (HR in-plane spacing, geometry correct in physical space).",
    )
    p.add_argument(
        "-i",
        required=True,
        help="folder of real LR scans (files, sub-folders holding one DICOM series each, or "
        "the files of one DICOM series)",
    )
    p.add_argument("-o", required=True, help="output folder (not the input folder)")
    p.add_argument("-d", default=None, help="dataset id or name (default: the only trained one)")
    p.add_argument(
        "-c",
        default=None,
        help="configuration (default: the plans' default_configuration, chosen by the "
        f"selection rule, else {DEFAULT_CONFIGURATION})",
    )
    p.add_argument("-tr", default=DEFAULT_TRAINER, help=f"trainer (default {DEFAULT_TRAINER})")
    p.add_argument("-p", default=DEFAULT_PLANS, help=f"plans identifier (default {DEFAULT_PLANS})")
    p.add_argument(
        "-f", nargs="+", default=None, help="folds to average (default: every trained fold)"
    )
    p.add_argument(
        "-chk", default="final", choices=["final", "best"], help="checkpoint (default final)"
    )
    p.add_argument(
        "--disable-tta", action="store_true", help="no 8-fold dihedral test-time augmentation"
    )
    _add_run_options(p)
    return p


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Device, parts, resuming, output format, uncertainty and tiling."""
    p.add_argument(
        "--device", default="cpu", choices=("cpu", "cuda", "mps"), help="cpu, cuda or mps"
    )
    p.add_argument(
        "--num-parts", type=int_at_least(1), default=1, help="split the scans over N runs"
    )
    p.add_argument(
        "--part-id", type=int_at_least(0), default=0, help="which part this run does (0..N-1)"
    )
    p.add_argument("--continue", dest="resume", action="store_true", help="skip finished outputs")
    p.add_argument(
        "--output-format",
        default="same",
        choices=("same", "nifti", "dicom"),
        help="same (default: DICOM in -> DICOM series out, files keep their format), nifti "
        "(<name>.nii.gz) or dicom (a folder <name>/ holding the SR series)",
    )
    p.add_argument(
        "--save-uncertainty",
        action="store_true",
        help="also write <name>_uncertainty: the per-voxel sd over TTA transforms and folds",
    )
    p.add_argument(
        "--tile-size",
        type=_tile_size,
        default=None,
        help="LR slices larger than this many pixels per side are predicted in overlapping "
        "tiles (default 256; 0: never tile)",
    )


def _predict(args: argparse.Namespace) -> int:
    from mrisr.inference.predict_api import predict_folder

    written = predict_folder(
        Path(args.i),
        Path(args.o),
        args.d,
        args.c,
        args.tr,
        args.p,
        args.f,
        tta=not args.disable_tta,
        device=args.device,
        num_parts=args.num_parts,
        part_id=args.part_id,
        resume=args.resume,
        checkpoint=args.chk,
        output_format=args.output_format,
        save_uncertainty=args.save_uncertainty,
        tile_size=args.tile_size,
    )
    print(f"{len(written)} scan(s) super-resolved into {args.o}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
