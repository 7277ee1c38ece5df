"""Where the QA page's flag limits come from: the figures of ``algorithm.qa.case_statistics`` on the phantoms' true
CTs (what a perfect model would predict) inside the automatic body mask, and a QA page of those cases.

    python benchmarks/qa_calibration.py --out bench_out/qa_calibration [--size small] [--seeds 4]

Prints per case the bone fraction (> 250 HU in the mask), the air fraction in the body's core and the MR's
max / p99.5, and writes ``OUT/qa/index.html`` with the true CT in place of the sCT (a page with no flags expected).
Cases: brain, pelvis, head-and-neck, thorax and abdomen phantoms, and an MR simulated from Debian's
invesalius-examples head CT when installed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from synthct.algorithm.qa import qa_case, write_qa_index

from synthct.body_mask import body_mask_from_mr
from synthct.phantom import case_seed, generate_volumes

INV3 = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")


def cases(size: str, seeds: int):
    """Yield (name, region, mr image, true CT image)."""
    for region in ("brain", "pelvis", "hn", "th", "ab"):
        for index in range(1, seeds + 1):
            volumes = generate_volumes(region, case_seed(1, region, index), size)
            yield f"{region}-{size}-{index}", region, volumes.image(volumes.mr), volumes.image(volumes.ct_hu)
    if INV3.exists():
        import SimpleITK as sitk

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from from_ct_example import read_inv3

        from synthct.io import array_to_image
        from synthct.phantom.from_ct import simulate_pair

        image = read_inv3(INV3)
        hu = sitk.GetArrayFromImage(image).astype(np.float32)
        spacing = tuple(float(s) for s in image.GetSpacing()[::-1])
        ct, mr, _, _ = simulate_pair(hu, spacing, "brain", 7)  # type: ignore[arg-type]
        yield "from-ct-cranium", "brain", array_to_image(mr, image), array_to_image(ct, image)
    else:
        print(f"{INV3} not installed: from-CT case skipped", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out/qa_calibration"))
    parser.add_argument("--size", default="small", choices=("small", "medium", "synthrad"))
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args(argv)
    rows = []
    for name, region, mr, ct in cases(args.size, args.seeds):
        mask = body_mask_from_mr(mr)
        row = qa_case(name, region, mr, ct, mask, args.out / "qa", auto_mask=True)
        print(json.dumps({k: row[k] for k in ("case_id", "bone_fraction", "air_fraction_core", "mr_max_over_p995",
                                              "flags")}), flush=True)
        rows.append(row)
    print(f"QA page: {write_qa_index(rows, args.out / 'qa')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
