"""``synthct phantom``: write paired MR/CT/mask phantom cases in the SynthRAD layout.

Either generated anatomy (``--region brain|pelvis|hn|th|ab --cases N --seed S --size small|medium|synthrad``: SynthRAD
2023's brain and pelvis in ``Task1/{brain,pelvis}/1BA001…``, SynthRAD 2025's head and neck, thorax and abdomen in
``Task1/{HN,TH,AB}/1HNA001…``) or cases made
from a real CT (``--from-ct PATH``: tissue classes by HU, simulated MR, one random deformation per case).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

log = logging.getLogger("synthct.phantom")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from synthct.phantom.generate import REGIONS, SIZE_NAMES

    parser.add_argument("--out", required=True, type=Path,
                        help="output folder (cases go to OUT/Task1/<region folder>/<ID>/: brain, pelvis, HN, TH, AB)")
    parser.add_argument("--region", choices=REGIONS, default="brain",
                        help="anatomy: brain, pelvis (SynthRAD 2023); hn = head and neck, th = thorax, ab = abdomen "
                             "(SynthRAD 2025); default brain")
    parser.add_argument("--cases", type=int, default=10, help="number of cases (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed; case k's seed derives from (seed, k)")
    parser.add_argument("--size", choices=SIZE_NAMES, default="small",
                        help="small (test/training size), medium, or synthrad (real SynthRAD size); default small; "
                             "ignored with --from-ct (cases keep the CT's grid)")
    parser.add_argument("--from-ct", type=Path, default=None, metavar="PATH",
                        help="make the cases from this real CT (any image synthct reads) instead of generated anatomy")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from synthct.io import ImageError

    start = time.perf_counter()
    try:
        if args.from_ct is not None:
            from synthct.phantom.from_ct import write_from_ct_dataset

            folders = write_from_ct_dataset(args.from_ct, args.out, args.region, args.cases, args.seed,
                                            progress=not args.no_progress)
        else:
            from synthct.phantom.writer import write_phantom_dataset

            folders = write_phantom_dataset(args.out, args.region, args.cases, args.seed, args.size,
                                            progress=not args.no_progress)
    except (ValueError, ImageError, OSError) as exc:
        log.error("%s", exc)
        return 2
    elapsed = time.perf_counter() - start
    print(f"wrote {len(folders)} {args.region} case(s) to {folders[0].parent} in {elapsed:.1f} s "
          f"({elapsed / len(folders):.2f} s per case)")
    return 0
