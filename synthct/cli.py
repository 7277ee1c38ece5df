"""The ``synthct`` command line: one entry point, one subcommand per stage.

Each subcommand lives in its stage's ``cli`` module, which exposes ``add_arguments(parser)`` and
``run(args) -> int`` and imports its heavy dependencies (torch, onnxruntime) only inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from synthct import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    "phantom": ("synthct.commands.phantom", "generate paired MR/CT/mask phantom cases (SynthRAD layout)"),
    "data": ("synthct.commands.data", "check a dataset, write its split, prepare its training cache"),
    "baseline": ("synthct.commands.baseline", "fit and score the intensity-only MR → HU baseline"),
    "train": ("synthct.train.cli", "train the 3D Pix2Pix (SwinUNETR generator) on paired MR/CT"),
    "export": ("synthct.export.cli", "export a checkpoint to a self-describing ONNX model package"),
    "trust-record": ("synthct.export.trust_record", "add the training record (out-of-distribution check, "
                     "uncertainty calibration) to a model package"),
    "predict": ("synthct.algorithm.cli",
                "run the algorithm: MR (image or DICOM, mask optional) → sCT (+ DICOM CT, QA)"),
    "evaluate": ("synthct.evaluation.cli", "score synthetic CTs against CTs (SynthRAD metrics)"),
    "package": ("synthct.algorithm.model_archive",
                "write a model package as grand-challenge's algorithm-model tarball"),
    "submission-check": ("synthct.algorithm.submission_check",
                         "check an algorithm image against grand-challenge's rules and runtime limits"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, just that subcommand's arguments are built (its module imported)."""
    parser = argparse.ArgumentParser(prog="synthct", description="MR → synthetic CT for radiotherapy.")
    parser.add_argument("--version", action="version", version=f"synthct {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(_module=module_name)
        if name == only:
            importlib.import_module(module_name).add_arguments(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = build_parser(chosen if chosen in COMMANDS else None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except Exception as exc:  # a bug: one line here, the traceback in a file (on the console with --verbose)
        if args.verbose:
            raise
        from synthct.outputs import report_unexpected

        report_unexpected(logging.getLogger("synthct"), exc, f"synthct {args.command}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
