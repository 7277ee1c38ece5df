"""``synthct baseline``: fit the intensity-only MR → HU map on the training split and score the validation split.

Prints a per-case table and the mean MAE / PSNR / SSIM; writes ``OUT/baseline.json`` (per-case metrics,
aggregates, the chosen method with its cross-validated MAE, and the fitted mapping). See :mod:`synthct.baseline`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("synthct.baseline")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="dataset folder (SynthRAD layout)")
    parser.add_argument("--region", required=True, help="region (brain, pelvis, ...)")
    parser.add_argument("--split", type=Path, default=None, help="split JSON (default: seeded 80/20 split)")
    parser.add_argument("--seed", type=int, default=0, help="split seed when no --split is given (default 0)")
    parser.add_argument("--out", type=Path, default=None, help="folder for baseline.json (default: print only)")
    parser.add_argument("--method", choices=("auto", "median_lut", "isotonic", "linear"), default="auto",
                        help="mapping; auto picks by cross-validation on the training split (default)")
    parser.add_argument("--mr-normalisation", choices=("max", "percentile"), default="max",
                        help="MR scaling rule (default max, as the paper)")
    parser.add_argument("--mr-percentile", type=float, default=99.5, help="percentile for --mr-normalisation "
                                                                          "percentile (default 99.5)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from synthct.baseline import run_baseline
    from synthct.dataset import DatasetError

    try:
        report = run_baseline(args.data, args.region, split=args.split, seed=args.seed, method=args.method,
                              mr_rule=args.mr_normalisation, mr_percentile=args.mr_percentile, out_dir=args.out,
                              progress=not args.no_progress)
    except (DatasetError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    cv = ", ".join(f"{name} {value:.1f}" for name, value in report["cv_mae"].items())
    print(f"baseline {report['region']}: method {report['method']}"
          + (f" (cross-validated training MAE, HU: {cv})" if cv else ""))
    names = list(report["aggregates"])
    print(f"{'case':<12}" + "".join(f"{name:>10}" for name in names))
    for case in report["cases"]:
        print(f"{case['id']:<12}" + "".join(f"{case[name]:>10.3f}" for name in names))
    means = report["aggregates"]
    print(f"{'mean':<12}" + "".join(f"{means[name]['mean']:>10.3f}" for name in names))
    print(f"{'std':<12}" + "".join(f"{means[name]['std']:>10.3f}" for name in names))
    if args.out is not None:
        print(f"wrote {args.out / 'baseline.json'}")
    return 0
