"""Benchmark synthct.metrics against the skimage-based reference on a pelvis-size case.

Case: array (z, y, x) = (160, 512, 512) float32 HU (512×512×160 voxels, 1×1×2.5 mm), a body-shaped mask (elliptic
cylinder with a noisy outline), fat/muscle/bone/bowel gas, and an sCT = blurred CT + bias + noise.

Each implementation runs in its own subprocess (so peak RSS figures do not mix); each child loads the same arrays
from .npy files, reports its RSS after loading, its peak RSS (``ru_maxrss``) and the metric time.

The reference is what the SynthRAD 2023 evaluation does: numpy MAE, ``skimage.metrics.peak_signal_noise_ratio`` on
the masked clipped voxels, ``skimage.metrics.structural_similarity(full=True)`` on the masked clipped shifted
volumes, then the crop + masked mean.

Usage: ``python benchmarks/bench_metrics.py [--shape 160 512 512] [--variant synthrad2025]`` (prints figures).
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


def make_pelvis_case(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ct_hu, sct_hu, mask)``: float32 HU, float32 HU, uint8; axes (z, y, x)."""
    from scipy.ndimage import gaussian_filter, zoom

    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    y, x = np.ogrid[:ny, :nx]
    angle = np.arctan2(y - ny / 2, x - nx / 2)
    ct = np.empty(shape, np.float32)
    mask = np.empty(shape, np.uint8)
    outline_noise = zoom(rng.normal(0, 1, (max(2, nz // 16), 24)), (nz / max(2, nz // 16), 1), order=1)
    for z in range(nz):
        t = z / max(1, nz - 1)
        a, b = nx * (0.40 + 0.04 * np.sin(np.pi * t)), ny * (0.30 + 0.03 * np.sin(np.pi * t))
        wobble = 1.0 + 0.02 * np.interp(angle, np.linspace(-np.pi, np.pi, 24), outline_noise[z])
        radius = np.sqrt(((x - nx / 2) / a) ** 2 + ((y - ny / 2) / b) ** 2) / wobble
        body = radius < 1.0
        hu = np.full((ny, nx), -1000.0, np.float32)
        hu[body] = 40.0  # muscle
        hu[body & (radius > 0.88)] = -100.0  # subcutaneous fat
        for side in (-1, 1):  # femoral heads / iliac bone with a cortical rim
            bone = np.hypot((x - nx / 2 - side * 0.55 * a) / (0.16 * a), (y - ny / 2) / (0.22 * b))
            hu[bone < 1.0] = 300.0
            hu[(bone < 1.0) & (bone > 0.8)] = 1200.0
        sacrum = np.hypot((x - nx / 2) / (0.12 * a), (y - ny / 2 - 0.55 * b) / (0.18 * b)) < 1.0
        hu[sacrum] = 700.0
        gas = np.hypot((x - nx / 2 + 0.1 * a) / (0.05 * a), (y - ny / 2 + 0.1 * b) / (0.06 * b)) < 1.0
        hu[gas] = -900.0
        ct[z] = hu + rng.normal(0, 20, (ny, nx)).astype(np.float32)
        mask[z] = body
    sct = gaussian_filter(ct, sigma=(0.8, 1.5, 1.5)).astype(np.float32)
    sct += np.float32(15.0)
    sct += rng.normal(0, 40, shape).astype(np.float32)
    sct[mask == 0] = -1000.0
    return ct, sct, mask


def reference_metrics(ct: np.ndarray, sct: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """The skimage-based SynthRAD 2023 metrics (float64, full volumes), as their evaluation code computes them."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    from skimage.util import crop

    inside = mask > 0
    mae = float(np.abs(ct[inside].astype(np.float64) - sct[inside].astype(np.float64)).mean())
    gt_clip = np.clip(ct.astype(np.float64), -1024.0, 3000.0)
    pred_clip = np.clip(sct.astype(np.float64), -1024.0, 3000.0)
    psnr = float(peak_signal_noise_ratio(gt_clip[inside], pred_clip[inside], data_range=4024.0))
    gt = np.where(inside, gt_clip, -1024.0) + 1024.0
    pred = np.where(inside, pred_clip, -1024.0) + 1024.0
    del gt_clip, pred_clip
    _, ssim_map = structural_similarity(gt, pred, data_range=4024.0, full=True)
    ssim = float(crop(ssim_map, 3)[crop(inside, 3)].mean(dtype=np.float64))
    return {"mae": mae, "psnr": psnr, "ssim": ssim}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def child(which: str, data: Path, variant: str) -> None:
    ct, sct, mask = (np.load(data / f"{name}.npy") for name in ("ct", "sct", "mask"))
    loaded_mb = _current_rss_mb()
    start = time.perf_counter()
    if which == "ours":
        from synthct.metrics import compute_metrics

        values = compute_metrics(ct, sct, mask, variant)  # type: ignore[arg-type]
    else:
        values = reference_metrics(ct, sct, mask)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "values": values, "loaded_mb": loaded_mb, "peak_mb": _peak_rss_mb()}))


def run_child(which: str, data: Path, variant: str) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", which, "--data", str(data), "--variant", variant],
        capture_output=True,
        text=True, encoding="utf-8",
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(160, 512, 512), metavar=("Z", "Y", "X"))
    parser.add_argument("--variant", default="synthrad2023", choices=("synthrad2023", "synthrad2025"))
    parser.add_argument("--child", choices=("ours", "reference"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.variant)
        return

    shape = tuple(args.shape)
    start = time.perf_counter()
    ct, sct, mask = make_pelvis_case(shape)  # type: ignore[arg-type]
    print(f"case: array (z, y, x) {shape} float32 HU, body mask {mask.mean():.1%} of voxels "
          f"(built in {time.perf_counter() - start:.1f} s)")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench_metrics_") as folder:
        data = Path(folder)
        for name, array in (("ct", ct), ("sct", sct), ("mask", mask)):
            np.save(data / f"{name}.npy", array)
        del ct, sct, mask
        ours = run_child("ours", data, args.variant)
        reference = run_child("reference", data, args.variant) if args.variant == "synthrad2023" else None
    rows = [("synthct.metrics", ours)] + ([("skimage reference", reference)] if reference else [])
    print(f"{'implementation':<20}{'seconds':>10}{'RSS after load (MB)':>22}{'peak RSS (MB)':>16}  values")
    for name, result in rows:
        values = ", ".join(f"{k}={v:.6f}" for k, v in result["values"].items())
        print(f"{name:<20}{result['seconds']:>10.2f}{result['loaded_mb']:>22.0f}{result['peak_mb']:>16.0f}  {values}")
    if reference:
        ratio = reference["seconds"] / ours["seconds"]
        diffs = {k: abs(ours["values"][k] - reference["values"][k]) for k in reference["values"]}
        print(f"speed-up: {ratio:.1f}x   |difference|: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))


if __name__ == "__main__":
    main()
