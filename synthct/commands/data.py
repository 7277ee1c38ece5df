"""``synthct data``: check a paired dataset folder (``check``), write its seeded train/validation split
(``split``), and build its preprocessed, memory-mappable training cache (``prepare``, see :mod:`synthct.cache`).
Layouts: see :mod:`synthct.dataset`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from synthct.intensity import MR_RULES

log = logging.getLogger("synthct.data")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate every case (files present, every volume read completely, "
                           "same geometry)")
    check.add_argument("root", type=Path, help="dataset folder (holding Task1, Task1 itself, or a region folder)")
    check.add_argument("--region", default=None, help="only this region (brain, pelvis, hn, th, ab)")
    check.add_argument("--mr-only", action="store_true", help="cases need no CT (test-phase data)")
    check.add_argument("--headers-only", action="store_true",
                       help="fast: read headers only (geometry, raw data length, compressed size and gzip length "
                       "trailer); damage inside compressed data is found only by the full read (the default)")
    split = sub.add_parser("split", help="write a seeded train/validation split as JSON")
    split.add_argument("root", type=Path, help="dataset folder")
    split.add_argument("--out", required=True, type=Path, help="split JSON to write")
    split.add_argument("--region", default=None, help="only this region")
    split.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    split.add_argument("--val-fraction", type=float, default=0.2, help="validation fraction (default 0.2)")
    prepare = sub.add_parser("prepare", help="build or refresh the preprocessed training cache (normalised, "
                             "cropped, memory-mappable .npy; rebuilds only what is stale)")
    prepare.add_argument("root", type=Path, help="dataset folder")
    prepare.add_argument("--region", required=True, help="brain, pelvis, hn, th or ab")
    prepare.add_argument("--out", type=Path, default=None,
                         help="cache folder (default ROOT/.synthct-cache/REGION, where synthct train looks)")
    prepare.add_argument("--workers", type=int, default=0, help="parallel processes (default: min(4, CPUs))")
    prepare.add_argument("--mr-rule", choices=list(MR_RULES), default="max",
                         help="MR normalisation: the paper's max in the body (default), a percentile or zscore; "
                         "must match the training config's data.mr_normalisation")
    prepare.add_argument("--mr-percentile", type=float, default=99.5, help="percentile for --mr-rule percentile")
    prepare.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64], metavar=("Z", "Y", "X"),
                         help="training patch (voxels): the crop keeps half of it around the body, volumes are "
                         "padded to at least one patch (default 64 64 64)")
    prepare.add_argument("--verify", action="store_true", help="also check every array's sha256 (reads the cache)")
    prepare.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from synthct.dataset import DatasetError, find_cases, make_split, scan_dataset, write_split

    if args.action == "prepare":
        return _prepare(args)
    try:
        if args.action == "check":
            reports = scan_dataset(args.root, region=args.region, require_ct=not args.mr_only,
                                   full_read=not args.headers_only)
            _print_table(reports)
            problems = [p for r in reports for p in r.problems]
            if problems:
                print(f"\n{len(problems)} problem(s):")
                for problem in problems:
                    print(f"  {problem}")
                return 1
            how = "headers only (--headers-only)" if args.headers_only else "every volume read completely"
            print(f"\n{len(reports)} case(s), all valid ({how})")
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


def _prepare(args: argparse.Namespace) -> int:
    import os

    from synthct.cache import CacheError, prepare_cache, settings_for_patch
    from synthct.dataset import DatasetError

    workers = args.workers or min(4, os.cpu_count() or 1)
    try:
        settings = settings_for_patch(args.region, args.patch, args.mr_rule, args.mr_percentile)
        settings.check()
        index = prepare_cache(args.root, settings, args.out, workers=workers, progress=not args.no_progress,
                              verify_hashes=args.verify)
    except (DatasetError, CacheError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    total = sum(info["bytes"] for entry in index.manifest["cases"].values() for info in entry["arrays"].values())
    print(f"cache {index.cache_dir}: {len(index.cases)} case(s) of region {settings.region}, up to date "
          f"({total / 2**20:.1f} MiB; MR rule {settings.mr_rule}, margin {settings.margin_voxels} voxels)")
    geometry = index.manifest.get("geometry")
    if geometry:
        reoriented = sorted({entry["source_orientation"] for entry in index.manifest["cases"].values()}
                            - {geometry["orientation"]})
        print(f"geometry: orientation {geometry['orientation']}"
              + (f" (reoriented from {', '.join(reoriented)}, axes permuted/flipped only)" if reoriented else "")
              + ", median spacing " + " × ".join(f"{v:g}" for v in geometry["spacing_zyx_mm"]) + " mm (z, y, x)")
    return 0


def _print_table(reports: list) -> None:
    print(f"{'case':<12} {'region':<7} {'size (x, y, z)':<18} {'spacing (mm)':<20} {'ct':<4} {'status'}")
    for report in reports:
        geometry = report.geometry
        size = "x".join(str(s) for s in geometry.size) if geometry else "?"
        spacing = ", ".join(f"{s:.3g}" for s in geometry.spacing_mm) if geometry else "?"
        has_ct = "yes" if report.files.get("ct") is not None else "no"
        status = "ok" if not report.problems else f"{len(report.problems)} problem(s)"
        print(f"{report.case_id:<12} {report.region:<7} {size:<18} {spacing:<20} {has_ct:<4} {status}")
