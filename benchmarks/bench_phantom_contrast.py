"""How far MR intensity alone tells cortical bone from air in the phantoms (issue 19's "harder phantoms").

    python benchmarks/bench_phantom_contrast.py [--regions brain pelvis hn th ab] [--cases 5] [--size small]

For each region, over ``--cases`` seeds: :func:`synthct.phantom.contrast.mr_overlap` of cortical bone against the
body's air (internal air; lung where a case has fewer than 10 internal-air core voxels): the share of bone's core
voxels whose MR lies in air's MR range (1st-99th percentile), and how badly the best single MR threshold separates
them (1 - Kolmogorov-Smirnov distance; 1 = no better than chance). Also the share over *every* bone voxel, boundary
voxels included (these take their neighbours' signal through the point spread, as on a real MR). Run it on two
commits to see what a change to the tissue table did.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from synthct.phantom import generate_volumes
from synthct.phantom import tissues as T
from synthct.phantom.contrast import core, mr_overlap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regions", nargs="+", default=["brain", "pelvis", "hn", "th", "ab"])
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--size", default="small")
    args = parser.parse_args(argv)
    print(f"{'region':<8}{'cases':>6}{'bone core in air range':>24}{'1 - KS distance':>19}"
          f"{'every bone voxel in range':>27}  (mean, min over cases)")
    for region in args.regions:
        in_range, histogram, every = [], [], []
        for seed in range(1, args.cases + 1):
            volumes = generate_volumes(region, seed, args.size)
            in_plane = volumes.spacing_xyz_mm[2] > 1.5 * volumes.spacing_xyz_mm[0]
            dark = T.INTERNAL_AIR if core(volumes.labels, T.INTERNAL_AIR, in_plane).sum() >= 10 else T.LUNG
            overlap = mr_overlap(volumes.mr, volumes.labels, T.CORTICAL_BONE, dark, in_plane)
            in_range.append(overlap.in_range)
            histogram.append(overlap.inseparable)
            low, high = overlap.second_range
            bone = volumes.mr[volumes.labels == T.CORTICAL_BONE]
            every.append(float(np.mean((bone >= low) & (bone <= high))))
        print(f"{region:<8}{args.cases:>6}{np.mean(in_range):>15.2f} ({min(in_range):.2f})"
              f"{np.mean(histogram):>11.2f} ({min(histogram):.2f}){np.mean(every):>19.2f} ({min(every):.2f})",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
