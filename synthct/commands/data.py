"""``synthct data``: check a paired dataset folder (``check``) and write its seeded train/validation split
(``split``). Layouts: see :mod:`synthct.dataset`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("synthct.data")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate every case (files present, readable, same geometry)")
    check.add_argument("root", type=Path, help="dataset folder (holding Task1, Task1 itself, or a region folder)")
    check.add_argument("--region", default=None, help="only this region (brain, pelvis, hn, th, ab)")
    check.add_argument("--mr-only", action="store_true", help="cases need no CT (test-phase data)")
    split = sub.add_parser("split", help="write a seeded train/validation split as JSON")
    split.add_argument("root", type=Path, help="dataset folder")
    split.add_argument("--out", required=True, type=Path, help="split JSON to write")
    split.add_argument("--region", default=None, help="only this region")
    split.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    split.add_argument("--val-fraction", type=float, default=0.2, help="validation fraction (default 0.2)")


def run(args: argparse.Namespace) -> int:
    from synthct.dataset import DatasetError, find_cases, make_split, scan_dataset, write_split

    try:
        if args.action == "check":
            reports = scan_dataset(args.root, region=args.region, require_ct=not args.mr_only)
            _print_table(reports)
            problems = [p for r in reports for p in r.problems]
            if problems:
                print(f"\n{len(problems)} problem(s):")
                for problem in problems:
                    print(f"  {problem}")
                return 1
            print(f"\n{len(reports)} case(s), all valid")
            return 0
        cases = find_cases(args.root, region=args.region)
        split = make_split([c.case_id for c in cases], val_fraction=args.val_fraction, seed=args.seed)
        split["root"] = str(Path(args.root).resolve())
        split["region"] = args.region
        write_split(args.out, split)
        print(f"wrote {args.out}: {len(split['train'])} train, {len(split['val'])} validation "
              f"(seed {args.seed}): val = {', '.join(split['val'])}")
        return 0
    except (DatasetError, ValueError) as exc:
        log.error("%s", exc)
        return 1


def _print_table(reports: list) -> None:
    print(f"{'case':<12} {'region':<7} {'size (x, y, z)':<18} {'spacing (mm)':<20} {'ct':<4} {'status'}")
    for report in reports:
        geometry = report.geometry
        size = "x".join(str(s) for s in geometry.size) if geometry else "?"
        spacing = ", ".join(f"{s:.3g}" for s in geometry.spacing_mm) if geometry else "?"
        has_ct = "yes" if report.files.get("ct") is not None else "no"
        status = "ok" if not report.problems else f"{len(report.problems)} problem(s)"
        print(f"{report.case_id:<12} {report.region:<7} {size:<18} {spacing:<20} {has_ct:<4} {status}")
