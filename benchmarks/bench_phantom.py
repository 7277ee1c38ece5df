"""Phantom generation speed: seconds per case (generate + write compressed .mha) for each region and size.

    python benchmarks/bench_phantom.py [--sizes small medium synthrad] [--cases 2] [--out bench_out/phantom]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from synthct.io import write_image
from synthct.phantom import SIZES, generate_volumes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["small", "medium", "synthrad"])
    parser.add_argument("--regions", nargs="+", default=["brain", "pelvis"])
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench_out/phantom"))
    args = parser.parse_args(argv)
    print(f"{'region':<8}{'size':<10}{'voxels (x, y, z)':<20}{'generate s':>12}{'write s':>10}{'total s':>10}"
          f"{'MB/case':>10}")
    for region in args.regions:
        for size in args.sizes:
            generate, write, megabytes = [], [], []
            for case in range(args.cases):
                start = time.perf_counter()
                volumes = generate_volumes(region, 1000 + case, size)
                middle = time.perf_counter()
                folder = args.out / f"{region}_{size}_{case}"
                for name, array in (("mr", volumes.mr), ("ct", volumes.ct_hu), ("mask", volumes.mask)):
                    write_image(volumes.image(array), folder / f"{name}.mha")
                generate.append(middle - start)
                write.append(time.perf_counter() - middle)
                megabytes.append(sum(p.stat().st_size for p in folder.iterdir()) / 1e6)
                shutil.rmtree(folder)
            shape = "x".join(str(n) for n in SIZES[region][size].shape[::-1])
            g, w = float(np.mean(generate)), float(np.mean(write))
            print(f"{region:<8}{size:<10}{shape:<20}{g:>12.2f}{w:>10.2f}{g + w:>10.2f}{np.mean(megabytes):>10.1f}",
                  flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
