"""Automatic body mask (``synthct.body_mask``) against the phantoms' own masks: Dice per threshold fraction t, time,
and one picture per case (MR with the automatic mask's outline in red and the phantom's in green).

    python benchmarks/bench_body_mask.py --out bench_out/body_mask [--size small] [--seeds 3] [--pictures DIR]

Cases: brain and pelvis phantoms (bias field and Rician noise on, as always) and MRs simulated from Debian's
invesalius-examples head CT (``Cranium.inv3``; skipped with a message when it is not installed). The phantom masks are
dilated by a few mm (3 mm small phantoms, 4 mm real-size and from-CT) while SynthRAD's recipe adds ~10 mm: Dice is
reported with the automatic mask's dilation set to the reference's own margin (the like-for-like comparison of the
segmented body) and, for information, with the default 10 mm.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from synthct.body_mask import DEFAULT_THRESHOLD_FRACTION, body_mask_array, dice
from synthct.phantom import SIZES, case_seed, generate_volumes

INV3 = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
FRACTIONS = (0.02, 0.04, 0.06, 0.08, 0.10, 0.15, 0.20, 0.30)


class PeakRss:
    """Peak resident memory above the level at entry, sampled every 5 ms by a thread (psutil)."""

    def __enter__(self) -> PeakRss:
        import threading

        import psutil

        self._process = psutil.Process()
        self._base = self._peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._process.memory_info().rss)

    @property
    def extra_mb(self) -> float:
        return (self._peak - self._base) / 2**20


def phantom_cases(size: str, seeds: int):
    """Yield (name, mr (z, y, x), reference mask, spacing (z, y, x) mm, reference margin mm)."""
    for region in ("brain", "pelvis"):
        spec = SIZES[region][size]
        margin = float(round(4.0 * max(spec.scale) ** 0.5))
        for index in range(1, seeds + 1):
            volumes = generate_volumes(region, case_seed(0, region, index), size)
            yield f"{region}-{size}-{index}", volumes.mr, volumes.mask, spec.spacing_mm, margin


def from_ct_cases(seeds: int):
    if not INV3.exists():
        print(f"{INV3} not found (apt-get install invesalius-examples): from-CT cases skipped", file=sys.stderr)
        return
    import SimpleITK as sitk

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from from_ct_example import read_inv3

    from synthct.phantom.from_ct import simulate_pair

    image = read_inv3(INV3)
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    spacing = tuple(float(s) for s in image.GetSpacing()[::-1])
    for index in range(1, seeds + 1):
        _, mr, mask, _ = simulate_pair(hu, spacing, "brain", case_seed(0, "brain", index))  # type: ignore[arg-type]
        yield f"from-ct-cranium-{index}", mr, mask, spacing, 4.0


def picture(path: Path, mr: np.ndarray, auto: np.ndarray, reference: np.ndarray, spacing: tuple, title: str) -> None:
    """Three planes through the reference mask's centre: MR, automatic mask (red), phantom mask (green)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centre = [round(c) for c in np.argwhere(reference > 0).mean(axis=0)]
    views = [(mr[centre[0]], auto[centre[0]], reference[centre[0]], spacing[1] / spacing[2], "axial"),
             (mr[:, centre[1]], auto[:, centre[1]], reference[:, centre[1]], spacing[0] / spacing[2], "coronal"),
             (mr[:, :, centre[2]], auto[:, :, centre[2]], reference[:, :, centre[2]], spacing[0] / spacing[1],
              "sagittal")]
    figure, axes = plt.subplots(1, 3, figsize=(13, 4.8))
    vmax = float(np.percentile(mr, 99.5))
    for ax, (image, a, r, aspect, name) in zip(axes, views, strict=True):
        origin = "lower" if name != "axial" else "upper"
        ax.imshow(image, cmap="gray", vmin=0, vmax=vmax, aspect=aspect, origin=origin)
        ax.contour(r, levels=[0.5], colors="lime", linewidths=1.0)  # follows imshow's axes; origin= would flip it
        ax.contour(a, levels=[0.5], colors="red", linewidths=1.0, linestyles="--")
        ax.set_title(name)
        ax.axis("off")
    figure.suptitle(f"{title}\nred dashed: automatic mask; green: phantom's own mask")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out/body_mask"))
    parser.add_argument("--size", default="small", choices=("small", "medium", "synthrad"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--from-ct-seeds", type=int, default=2)
    parser.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS), help="t values to sweep")
    parser.add_argument("--pictures", type=Path, default=None, help="folder for the pictures (default OUT/pictures)")
    args = parser.parse_args(argv)
    pictures = args.pictures or args.out / "pictures"
    rows = []
    cases = list(phantom_cases(args.size, args.seeds)) + list(from_ct_cases(args.from_ct_seeds))
    for name, mr, reference, spacing, margin in cases:
        row: dict = {"case": name, "shape_zyx": list(mr.shape), "reference_margin_mm": margin, "dice": {}}
        for fraction in args.fractions:
            row["dice"][f"{fraction:g}"] = round(dice(body_mask_array(mr, spacing, fraction, margin), reference), 4)
        start = time.perf_counter()
        with PeakRss() as peak:
            auto = body_mask_array(mr, spacing, DEFAULT_THRESHOLD_FRACTION, margin)
        row["seconds"] = round(time.perf_counter() - start, 2)
        row["peak_extra_rss_mb"] = round(peak.extra_mb, 1)
        row["dice_default_t"] = round(dice(auto, reference), 4)
        row["dice_default_t_10mm"] = round(dice(body_mask_array(mr, spacing), reference), 4)
        picture(pictures / f"{name}.png", mr, auto, reference, spacing,
                f"{name}: t = {DEFAULT_THRESHOLD_FRACTION:g}, margin {margin:g} mm, Dice {row['dice_default_t']:.4f}")
        print(json.dumps(row), flush=True)
        rows.append(row)
    summary = {f"{f:g}": round(min(r["dice"][f"{f:g}"] for r in rows), 4) for f in args.fractions}
    print("minimum Dice over the cases per t:", json.dumps(summary))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "body_mask.json").write_text(json.dumps({"cases": rows, "min_dice_per_t": summary}, indent=2) + "\n",
                                              encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
