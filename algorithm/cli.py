"""``synthct predict``: the algorithm on local files, with the container's code path.

    synthct predict --mr MR.mha --mask MASK.mha --model models/brain --out out/
    synthct predict --mr mri/ --mask body/ --model models/ --region pelvis --out out/

Writes ``OUT/<case id>.mha`` (int16 HU, MR geometry) and ``OUT/results.json``; exit status 1 if any case failed.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mr", type=Path, required=True, help="MR image file, or a folder of MR images")
    parser.add_argument("--mask", type=Path, required=True, help="body mask file, or a folder (paired by case id)")
    parser.add_argument("--model", type=Path, required=True,
                        help="model package folder (model.json), or a folder of <region>/ packages")
    parser.add_argument("--out", type=Path, required=True, help="output folder for <case id>.mha and results.json")
    parser.add_argument("--region", default=None,
                        help="anatomy (Brain, Pelvis, 'Head and Neck', …); default: the only model, else the case id")
    from algorithm.backends import BACKENDS

    parser.add_argument("--backend", choices=BACKENDS, default=os.environ.get("SYNTHCT_BACKEND") or "auto",
                        help="runtime backend (default: SYNTHCT_BACKEND, else auto: fastest this CPU/GPU supports "
                             "within the package's measured accuracy bound)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per network call (default 4)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime CPU threads (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from algorithm.cases import RegionError, canonical_region, collect_cases, find_model_packages
    from algorithm.runner import ModelRegistry, run_cases
    from synthct.atomic import write_json_atomic

    if args.batch_size < 1:
        log.error("--batch-size must be at least 1")
        return 2
    try:
        region = canonical_region(args.region) if args.region else None
        cases = collect_cases(args.mr, args.mask)
    except (RegionError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    if not cases:
        log.error("no MR images found in %s", args.mr)
        return 2
    packages = find_model_packages(args.model)
    if not packages:
        log.error("%s: no model package (model.json) found", args.model)
        return 2
    registry = ModelRegistry(packages, args.backend, args.device, args.threads)
    entries, failed = run_cases(cases, registry, args.out, region, None, args.batch_size, not args.no_progress)
    write_json_atomic(args.out / "results.json", entries)
    log.info("%d of %d case(s) written to %s", len(cases) - failed, len(cases), args.out)
    return 1 if failed else 0
