"""Benchmark: seconds to write and read real-size DICOM series with ``synthct.dicom``.

    python benchmarks/bench_dicom.py                    # brain 256×256×192 and pelvis 512×512×160 (SynthRAD sizes)
    python benchmarks/bench_dicom.py --region brain     # one of them

Per region: ``write_mr_series`` (float MR → uint16 + rescale, shuffled, no suffix), ``find_series`` (headers),
``read_dicom_series`` (ordered and checked), ``write_ct_series`` (int16 HU), and SimpleITK's own series reader on
the written CT as a reference. Each figure is the median of --repeats runs; the process's peak resident memory is
printed at the end. The last line is a one-line JSON summary.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synthct.dicom import find_series, read_dicom_series, write_ct_series, write_mr_series

SHAPES = {"brain": ((192, 256, 256), (1.0, 1.0, 1.0)), "pelvis": ((160, 512, 512), (1.0, 1.0, 2.5))}
"""Region → (shape (z, y, x), spacing (x, y, z) mm), as SynthRAD's cases."""


def volumes(shape: tuple[int, int, int], spacing_mm: tuple[float, float, float]) -> tuple[sitk.Image, sitk.Image]:
    """A float MR and an int16 HU image (smooth body ellipsoid with noise) in one oblique geometry."""
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    radius = sum(((axis - n / 2) / (0.45 * n)) ** 2 for axis, n in zip((z, y, x), shape, strict=True))
    body = radius < 1.0
    mr = np.where(body, 600.0 + 80.0 * rng.standard_normal(shape), 5.0 + rng.random(shape)).astype(np.float32)
    hu = np.where(body, 40.0 + 30.0 * rng.standard_normal(shape), -1000.0).astype(np.int16)
    angle = np.radians(12.0)
    direction = (1.0, 0.0, 0.0, 0.0, np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle))
    images = []
    for array in (mr, hu):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing_mm)
        image.SetOrigin((-120.0, -130.0, -90.0))
        image.SetDirection(direction)
        images.append(image)
    return images[0], images[1]


def timed(run: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median seconds of ``repeats`` calls, and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    (series_uid,) = reader.GetGDCMSeriesIDs(str(folder))
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series_uid))
    return reader.Execute()


def bench_region(region: str, repeats: int, root: Path) -> dict[str, float]:
    shape, spacing = SHAPES[region]
    mr, hu = volumes(shape, spacing)
    mr_dir, ct_dir = root / f"{region}_mr", root / f"{region}_ct"
    figures = {"slices": shape[0]}
    figures["write_mr_s"], _ = timed(lambda: write_mr_series(mr, mr_dir, suffix="", shuffle_seed=1), repeats)
    figures["find_series_s"], _ = timed(lambda: find_series(mr_dir), repeats)
    figures["read_dicom_series_s"], volume = timed(lambda: read_dicom_series(mr_dir), repeats)
    figures["write_ct_s"], _ = timed(lambda: write_ct_series(hu, ct_dir, identity=volume.identity,
                                                              model_name="bench", model_sha256="0" * 64), repeats)
    figures["read_ct_ours_s"], ours = timed(lambda: read_dicom_series(ct_dir), repeats)
    figures["read_ct_simpleitk_s"], theirs = timed(lambda: sitk_series(ct_dir), repeats)
    if not np.array_equal(sitk.GetArrayFromImage(ours.image), sitk.GetArrayFromImage(theirs).astype(np.float32)):
        raise SystemExit(f"{region}: our reader and SimpleITK's disagree on the CT series")
    figures["mb_on_disk_ct"] = sum(p.stat().st_size for p in ct_dir.iterdir()) / 1e6
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--region", choices=sorted(SHAPES), action="append")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench_dicom_") as tmp:
        for region in args.region or sorted(SHAPES):
            figures = bench_region(region, args.repeats, Path(tmp))
            summary[region] = {k: round(v, 3) for k, v in figures.items()}
            print(region, ", ".join(f"{k} {v:.3f}" for k, v in figures.items()), flush=True)
    summary["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    print(f"peak resident memory {summary['peak_rss_gb']:.2f} GB")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
