"""Benchmark: does the sCT depend on how the scanner stored the MR? Before and after the geometry step (issue 15).

    python benchmarks/bench_geometry.py --model demo/models/brain --data demo/data --split demo/split.json \
        [--json benchmarks/results/cpu/bench_geometry.json] [--picture benchmarks/results/cpu/bench_geometry.png]

Each validation phantom is "acquired" in other layouts — the same physical image, axes permuted / flipped with
SimpleITK (no interpolation): axial (as trained), sagittal, coronal, flipped (R→L, A→P) — and resampled to an axial
0.5 × 0.5 × 3 mm grid (MR linear, mask nearest, the CT linear as the ground truth on that grid). ``synthct``'s
``predict_case`` runs on each, once as today (the package's ``geometry``: reorient, resample when an axis differs
by more than its tolerance) and once as before this issue (the same package without ``geometry``: the network sees
the stored grid). Printed: MAE against the phantom CT inside the mask, on the acquisition's own grid, and the mean
|Δ| to the axial sCT at the same physical points (permutations: exact grid correspondence).

``--sweep`` also scales the spacing of the axial acquisition (in-plane and through-plane, MR/CT resampled) by
factors around 1 and compares resampling forced (tolerance 0) with never resampling: the crossing point is the
tolerance ``synthct.geometry.DEFAULT_SPACING_TOLERANCE`` should have.

``--timing`` generates a real-size brain phantom (SynthRAD size, 256 × 256 × 192 at 1 mm), acquires it at
0.5 × 0.5 × 3 mm and times ``predict_case`` with the package's CPU default backend, and separately the geometry
steps (to the network's grid and back): the share resampling adds (target ≤ 10 %).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LAYOUTS: dict[str, tuple[tuple[int, int, int], tuple[bool, bool, bool]]] = {
    "axial": ((0, 1, 2), (False, False, False)),
    "sagittal": ((1, 2, 0), (False, False, False)),
    "coronal": ((0, 2, 1), (False, False, False)),
    "flipped": ((0, 1, 2), (True, True, False)),
}
ANISOTROPIC_ZYX_MM = (3.0, 0.5, 0.5)


def _stored(image: Any, layout: str) -> Any:
    import SimpleITK as sitk

    order, flips = LAYOUTS[layout]
    return sitk.Flip(sitk.PermuteAxes(image, order), flips)


def _acquire(mr: Any, ct: Any, mask: Any, spacing_zyx: tuple[float, float, float]) -> tuple[Any, Any, Any]:
    import SimpleITK as sitk

    from synthct.geometry import resample_onto, resampled_grid

    grid = resampled_grid(mr, spacing_zyx)
    return (resample_onto(sitk.Cast(mr, sitk.sitkFloat32), grid, sitk.sitkLinear, 0.0),
            resample_onto(sitk.Cast(ct, sitk.sitkFloat32), grid, sitk.sitkLinear, -1000.0),
            resample_onto(mask, grid, sitk.sitkNearestNeighbor, 0))


def _mae(sct: Any, ct: Any, mask: Any) -> float:
    import SimpleITK as sitk

    body = sitk.GetArrayViewFromImage(mask) > 0
    return float(np.abs(sitk.GetArrayViewFromImage(sct).astype(np.float64)
                        - sitk.GetArrayViewFromImage(ct).astype(np.float64))[body].mean())


def _delta_to_axial(sct: Any, axial_sct: Any, axial_mask: Any) -> float:
    """Mean |Δ| HU to the axial sCT inside the axial mask, at the axial voxel centres (nearest: exact for
    permutations; for the resampled acquisition the axial sCT is compared on its own grid instead)."""
    import SimpleITK as sitk

    on_axial = sitk.Resample(sct, axial_sct, sitk.Transform(), sitk.sitkNearestNeighbor, -1000, sitk.sitkInt16)
    return _mae(on_axial, axial_sct, axial_mask)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="model package exported with geometry")
    parser.add_argument("--data", type=Path, required=True, help="phantom dataset root (Task1/brain/<ID>/)")
    parser.add_argument("--split", type=Path, required=True, help="split.json: its validation cases are used")
    parser.add_argument("--backend", default="onnxruntime", help="runtime backend for the layout runs")
    parser.add_argument("--sweep", default="0.8,0.9,0.95,1.05,1.1,1.2,1.5",
                        help="spacing factors for the tolerance sweep ('' to skip)")
    parser.add_argument("--timing", action="store_true", help="also time resampling on a real-size brain")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--picture", type=Path, default=None)
    args = parser.parse_args()


    from synthct.algorithm.backends import make_predictor
    from synthct.algorithm.inference import predict_case

    from synthct.geometry import NetworkGeometry
    from synthct.io import read_image
    from synthct.model_package import ModelPackage, load_model_package

    package = load_model_package(args.model)
    if package.geometry is None or package.geometry.spacing_zyx_mm is None:
        raise SystemExit(f"{args.model}: the package records no training spacing; export it with this synthct")
    before = ModelPackage(package.directory, {k: v for k, v in package.manifest.items() if k != "geometry"})
    predictor = make_predictor(package, args.backend, "cpu", None)  # type: ignore[arg-type]
    val_ids = json.loads(args.split.read_text(encoding="utf-8"))["val"]
    load = os.getloadavg()
    print(f"model {args.model} (training spacing {package.geometry.spacing_zyx_mm} mm z, y, x; tolerance "
          f"{package.geometry.tolerance:.0%}); backend {predictor.description}; validation cases {val_ids}; "
          f"load average {load[0]:.2f}", flush=True)

    def run(mr: Any, mask: Any, pkg: ModelPackage, resample: str = "auto") -> tuple[Any, dict[str, Any], float]:
        started = time.perf_counter()
        sct, record = predict_case(mr, mask, pkg, predictor, progress=False, resample=resample)  # type: ignore[arg-type]
        return sct, record, time.perf_counter() - started

    rows: list[dict[str, Any]] = []
    pictures: dict[str, Any] = {}
    for case_id in val_ids:
        folder = args.data / "Task1" / "brain" / case_id
        mr, ct, mask = (read_image(next(folder.glob(f"{n}.*"))) for n in ("mr", "ct", "mask"))
        axial = {"after": run(mr, mask, package)[0], "before": run(mr, mask, before)[0]}
        acquisitions = {layout: tuple(_stored(image, layout) for image in (mr, ct, mask)) for layout in LAYOUTS}
        acquisitions["0.5×0.5×3 mm"] = _acquire(mr, ct, mask, ANISOTROPIC_ZYX_MM)
        for name, (a_mr, a_ct, a_mask) in acquisitions.items():
            row: dict[str, Any] = {"case": case_id, "acquisition": name}
            for when, pkg in (("before", before), ("after", package)):
                sct, record, seconds = run(a_mr, a_mask, pkg)
                row[f"mae_{when}"] = _mae(sct, a_ct, a_mask)
                if name in LAYOUTS:
                    row[f"delta_to_axial_{when}"] = _delta_to_axial(sct, axial["after"], mask)
                else:  # different grid: compare with the axial sCT interpolated onto the acquisition's grid
                    _, reference, _ = _acquire(mr, axial["after"], mask, ANISOTROPIC_ZYX_MM)
                    row[f"delta_to_axial_{when}"] = _mae(sct, reference, a_mask)
                row[f"seconds_{when}"] = seconds
                row[f"summary_{when}"] = record["summary"]
                if case_id == val_ids[0]:
                    pictures[(name, when)] = (sct, a_ct, a_mask)
            rows.append(row)
            print(f"{case_id} {name:<14} MAE before {row['mae_before']:7.1f}  after {row['mae_after']:7.1f} HU   "
                  f"|Δ| to axial before {row['delta_to_axial_before']:7.1f}  after {row['delta_to_axial_after']:6.1f}"
                  f" HU   ({row['seconds_after']:.1f} s)", flush=True)

    print("\nmean over cases             MAE before   MAE after   |Δ| to axial before   after")
    summary = {}
    for name in [*LAYOUTS, "0.5×0.5×3 mm"]:
        chosen = [r for r in rows if r["acquisition"] == name]
        means = {k: float(np.mean([r[k] for r in chosen])) for k in ("mae_before", "mae_after",
                                                                    "delta_to_axial_before", "delta_to_axial_after")}
        summary[name] = means
        print(f"{name:<26} {means['mae_before']:10.1f} {means['mae_after']:11.1f} "
              f"{means['delta_to_axial_before']:17.1f} {means['delta_to_axial_after']:9.1f}")

    sweep = []
    if args.sweep:
        print("\ntolerance sweep (axial acquisition at scaled spacing; MAE vs CT, mean over cases)")
        print("factor  axis      resampled (tolerance 0)   not resampled")
        forced = ModelPackage(package.directory, {**package.manifest, "geometry": NetworkGeometry(
            package.geometry.orientation, package.geometry.spacing_zyx_mm, 0.0).to_dict()})
        spacing = package.geometry.spacing_zyx_mm
        for factor in (float(f) for f in args.sweep.split(",")):
            for axis_name, scaled in (("in-plane", (spacing[0], spacing[1] * factor, spacing[2] * factor)),
                                      ("z", (spacing[0] * factor, spacing[1], spacing[2]))):
                maes = {"resampled": [], "not resampled": []}
                for case_id in val_ids:
                    folder = args.data / "Task1" / "brain" / case_id
                    mr, ct, mask = (read_image(next(folder.glob(f"{n}.*"))) for n in ("mr", "ct", "mask"))
                    a_mr, a_ct, a_mask = _acquire(mr, ct, mask, scaled)  # type: ignore[arg-type]
                    maes["resampled"].append(_mae(run(a_mr, a_mask, forced)[0], a_ct, a_mask))
                    maes["not resampled"].append(_mae(run(a_mr, a_mask, package, "never")[0], a_ct, a_mask))
                entry = {"factor": factor, "axis": axis_name, **{k: float(np.mean(v)) for k, v in maes.items()}}
                sweep.append(entry)
                print(f"{factor:<7g} {axis_name:<9} {entry['resampled']:18.1f} {entry['not resampled']:17.1f}",
                      flush=True)

    timing = _timing(package, predictor) if args.timing else None
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": str(args.model), "backend": predictor.description,
                                         "load_average_at_start": load[0], "rows": rows, "summary": summary,
                                         "sweep": sweep, "timing": timing}, indent=2), encoding="utf-8")
        print(f"wrote {args.json}")
    if args.picture:
        _picture(pictures, summary, args.picture)
        print(f"wrote {args.picture}")
    return 0


def _timing(package: Any, predictor: Any) -> dict[str, Any]:
    import SimpleITK as sitk
    from synthct.algorithm.inference import predict_case

    from synthct.geometry import to_mr_grid, to_network_grid
    from synthct.phantom.generate import generate_case

    mr, ct, mask = generate_case("brain", 11, "synthrad")
    a_mr, _, a_mask = _acquire(mr, ct, mask, ANISOTROPIC_ZYX_MM)
    started = time.perf_counter()
    grid = to_network_grid(a_mr, a_mask, package.geometry)
    to_grid_s = time.perf_counter() - started
    network = sitk.GetArrayFromImage(grid.mr)
    started = time.perf_counter()
    to_mr_grid(network, grid, a_mr, -1000.0)
    back_s = time.perf_counter() - started
    started = time.perf_counter()
    _, record = predict_case(a_mr, a_mask, package, predictor, progress=False)
    predict_s = time.perf_counter() - started
    load = os.getloadavg()[0]
    share = (to_grid_s + back_s) / predict_s
    print(f"\nreal-size brain acquired at 0.5×0.5×3 mm ({a_mr.GetSize()} voxels x, y, z): predict {predict_s:.1f} s "
          f"(network grid {record['network_shape_zyx']} z, y, x), of which resampling to the network's grid "
          f"{to_grid_s:.2f} s and back {back_s:.2f} s = {100 * share:.1f} % (target ≤ 10 %); load average {load:.2f}")
    return {"mr_size_xyz": list(a_mr.GetSize()), "network_shape_zyx": record["network_shape_zyx"],
            "predict_s": predict_s, "to_network_grid_s": to_grid_s, "to_mr_grid_s": back_s, "share": share,
            "backend": getattr(predictor, "description", ""), "load_average": load}


def _picture(pictures: dict[Any, Any], summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [*LAYOUTS, "0.5×0.5×3 mm"]
    fig, axes = plt.subplots(3, len(names), figsize=(3.2 * len(names), 9.5))
    for column, name in enumerate(names):
        for row, when in enumerate(("before", "after")):
            sct, ct, _ = pictures[(name, when)]
            axial = _axial_slice(sct)
            axes[row, column].imshow(axial, cmap="gray", vmin=-1000, vmax=1500)
            axes[row, column].set_title(f"{name}, {when}\nMAE {summary[name][f'mae_{when}']:.0f} HU", fontsize=9)
            axes[row, column].axis("off")
        _, ct, _ = pictures[(name, "after")]
        axes[2, column].imshow(_axial_slice(ct), cmap="gray", vmin=-1000, vmax=1500)
        axes[2, column].set_title(f"{name}: phantom CT", fontsize=9)
        axes[2, column].axis("off")
    fig.suptitle("sCT of one validation phantom by acquisition layout (transverse slice through the centre):\n"
                 "before = the network sees the stored grid; after = reoriented / resampled to the training geometry")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


def _axial_slice(image: Any) -> np.ndarray:
    """The transverse slice through the image centre, in patient orientation (image reoriented to LPS first)."""
    import SimpleITK as sitk

    from synthct.geometry import canonical_reorientation

    canonical = canonical_reorientation(image).apply_to_image(image)
    array = sitk.GetArrayViewFromImage(canonical)
    return np.asarray(array[array.shape[0] // 2], dtype=np.float32)


if __name__ == "__main__":
    sys.exit(main())
