"""Benchmark: the algorithm's per-case path on real-size volumes, ONNX Runtime backend.

    python benchmarks/bench_inference.py                       # tiny analytic ONNX model: plumbing cost only
    python benchmarks/bench_inference.py --model models/brain  # an exported package (e.g. SwinUNETR)

Cases (synthetic, ellipsoid body): brain 256×256×192 voxels (x, y, z) at 1 mm, pelvis 512×512×160 at 1×1×2.5 mm.
Each case runs in a fresh process so its peak RSS is its own: read .mha → checks → normalise → sliding window
(windows without body skipped) → HU → write .mha. Prints seconds, windows computed / skipped, windows/s, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASES = {
    # name: (array shape (z, y, x), spacing (x, y, z) mm, ellipsoid semi-axes as fractions of (z, y, x))
    "brain": ((192, 256, 256), (1.0, 1.0, 1.0), (0.42, 0.40, 0.34)),
    "pelvis": ((160, 512, 512), (1.0, 1.0, 2.5), (0.75, 0.30, 0.42)),
}


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmHWM: peak RSS since exec; VmRSS: now)."""
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0  # KiB
    # not Linux: getrusage's peak (may include the parent's before exec)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_rss_mb() -> float:
    return _status_mb("VmHWM")


def write_case(name: str, folder: Path) -> tuple[Path, Path]:
    """A synthetic MR (float32, smooth-ish intensities) and its ellipsoid body mask, as .mha files."""
    import SimpleITK as sitk

    shape, spacing, axes = CASES[name]
    grids = [np.arange(n, dtype=np.float32).reshape([-1 if i == axis else 1 for i in range(3)])
             for axis, n in enumerate(shape)]
    distance = sum(((g - np.float32(n / 2.0)) / np.float32(a * n)) ** 2 for g, n, a in zip(grids, shape, axes,
                                                                                          strict=True))
    mask = (distance <= 1.0).astype(np.uint8)
    rng = np.random.default_rng(0)
    mr = (rng.random(shape, dtype=np.float32) * 100.0 + 400.0 * (1.0 - np.minimum(distance, 1.0))).astype(np.float32)
    mr *= mask
    paths = []
    for array, suffix in ((mr, "mr"), (mask, "mask")):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
        path = folder / f"{name}_{suffix}.mha"
        sitk.WriteImage(image, str(path), True)
        paths.append(path)
    return paths[0], paths[1]


def run_single(args: argparse.Namespace) -> None:
    """Child process: one case, prints one JSON line."""
    from algorithm.backends import make_predictor
    from algorithm.inference import check_inputs, predict_sct
    from synthct.io import read_image, write_image
    from synthct.model_package import load_model_package
    from synthct.sliding_window import plan_windows

    package = load_model_package(args.model)
    predictor = make_predictor(package, "onnxruntime", args.device, args.threads)
    baseline_mb = _status_mb("VmRSS")
    started = time.perf_counter()
    mr_image, mask_image = read_image(args.mr), read_image(args.mask)
    check_inputs(mr_image, mask_image)
    read_s = time.perf_counter() - started
    import SimpleITK as sitk

    plan = plan_windows(sitk.GetArrayViewFromImage(mr_image).shape, package.patch_size, package.overlap,
                        sitk.GetArrayViewFromImage(mask_image))
    predict_started = time.perf_counter()
    sct = predict_sct(mr_image, mask_image, package, predictor, batch_size=args.batch_size, progress=False)
    predict_s = time.perf_counter() - predict_started
    write_image(sct, Path(args.out) / "sct.mha")
    total_s = time.perf_counter() - started
    print(json.dumps({
        "backend": predictor.description, "size_xyz": list(mr_image.GetSize()), "read_s": read_s,
        "predict_s": predict_s, "total_s": total_s, "windows_computed": len(plan.computed),
        "windows_skipped": len(plan.skipped), "windows_per_s": len(plan.computed) / predict_s,
        "baseline_rss_mb": baseline_mb, "peak_rss_mb": peak_rss_mb(),
    }))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="model package folder (default: analytic model)")
    parser.add_argument("--cases", default="brain,pelvis", help="comma-separated: brain, pelvis")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mr", help=argparse.SUPPRESS)
    parser.add_argument("--mask", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        run_single(args)
        return 0

    with tempfile.TemporaryDirectory(prefix="synthct_bench_") as tmp:
        folder = Path(tmp)
        model = args.model
        if model is None:
            from algorithm.analytic import build_analytic_package

            model = build_analytic_package(folder / "analytic", "brain")
            print("model: analytic tanh(a·x+b) ONNX (plumbing cost; a real network adds its per-window time)")
        else:
            print(f"model: {model}")
        for name in [c.strip() for c in args.cases.split(",") if c.strip()]:
            mr, mask = write_case(name, folder)
            command = [sys.executable, __file__, "--single", "--model", str(model), "--mr", str(mr), "--mask",
                       str(mask), "--out", str(folder), "--batch-size", str(args.batch_size), "--device", args.device]
            if args.threads:
                command += ["--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", check=False)
            if done.returncode != 0:
                print(f"{name}: FAILED\n{done.stderr}", file=sys.stderr)
                return 1
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{name:7s} size (x,y,z) {tuple(r['size_xyz'])}  {r['backend']}  total {r['total_s']:.1f} s "
                  f"(read+check {r['read_s']:.1f} s, predict {r['predict_s']:.1f} s)  windows computed "
                  f"{r['windows_computed']} skipped {r['windows_skipped']}  {r['windows_per_s']:.1f} windows/s  "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB (after model load {r['baseline_rss_mb']:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
