"""Paired cases from a real head CT: Debian's invesalius-examples ``Cranium.inv3`` → .mha → ``synthct phantom
--from-ct`` → (optionally) the intensity-only baseline on them.

    sudo apt-get update && sudo apt-get install -y invesalius-examples
    python benchmarks/from_ct_example.py --out bench_out/from_ct --cases 5 [--baseline]

An .inv3 file is a gzip tar holding ``main.plist`` (matrix shape, dtype, spacing) and ``matrix.dat`` (raw voxels,
(z, y, x) order, HU). The tar is read in memory (nothing extracted to disk), so member names are never used as paths.
"""

from __future__ import annotations

import argparse
import plistlib
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from synthct.cli import main as synthct_main
from synthct.io import write_image

DEFAULT_INV3 = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")


def read_inv3(path: Path) -> sitk.Image:
    """The CT volume of an InVesalius 3 project file as an image (HU, spacing from main.plist, identity direction)."""
    with tarfile.open(path, "r:gz") as archive:
        members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
        if "main.plist" not in members:
            raise ValueError(f"{path}: no main.plist inside (not an InVesalius 3 project)")
        plist = plistlib.loads(archive.extractfile(members["main.plist"]).read())  # type: ignore[union-attr]
        matrix = plist["matrix"]
        name = Path(matrix["filename"]).name
        if name not in members:
            raise ValueError(f"{path}: {name} named by main.plist is missing")
        raw = archive.extractfile(members[name]).read()  # type: ignore[union-attr]
    shape = tuple(int(n) for n in matrix["shape"])
    array = np.frombuffer(raw, dtype=np.dtype(matrix["dtype"]))
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {name} holds {array.size} voxels, main.plist says {shape}")
    image = sitk.GetImageFromArray(array.reshape(shape).astype(np.int16))
    image.SetSpacing(tuple(float(s) for s in plist["spacing"]))
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inv3", type=Path, default=DEFAULT_INV3)
    parser.add_argument("--out", type=Path, default=Path("bench_out/from_ct"))
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline", action="store_true", help="also fit/score the intensity-only baseline")
    args = parser.parse_args(argv)
    if not args.inv3.exists():
        print(f"{args.inv3} not found: apt-get update && apt-get install -y invesalius-examples", file=sys.stderr)
        return 2
    image = read_inv3(args.inv3)
    ct_path = write_image(image, args.out / "cranium_ct.mha")
    print(f"{args.inv3} -> {ct_path}: size (x, y, z) {image.GetSize()}, spacing {image.GetSpacing()} mm")
    start = time.perf_counter()
    code = synthct_main(["phantom", "--from-ct", str(ct_path), "--out", str(args.out / "data"), "--region", "brain",
                         "--cases", str(args.cases), "--seed", str(args.seed)])
    print(f"from-ct: {args.cases} case(s) in {time.perf_counter() - start:.1f} s")
    if code == 0 and args.baseline:
        code = synthct_main(["baseline", "--data", str(args.out / "data"), "--region", "brain", "--seed",
                             str(args.seed), "--out", str(args.out / "baseline"), "--no-progress"])
    return code


if __name__ == "__main__":
    sys.exit(main())
