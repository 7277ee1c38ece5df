"""Benchmark: calibration of the trust outputs (SPEC §14, issue 20) with a trained model.

    python benchmarks/bench_trust.py --model models/brain --data data/brain --split data/brain/split.json \
        --work bench_out/trust [--ensemble SNAPSHOT_PACKAGE ...] [--inv3 Cranium.inv3]

1. The package is copied to ``WORK/models/<region>`` and given its training record (``export.trust_record``: the
   training split's cases → the out-of-distribution record and its leave-one-out threshold).
2. **OOD check.** In-distribution held-out cases (the validation split and new phantoms of the training generator,
   other seeds) against a constructed set: T2-like contrast, a pelvis through the brain model, a strong bias field
   (4× across the body), a field of view cutting the body, a 15 mm signal void (:mod:`synthct.phantom.ood`). Scores
   through the algorithm's own path (:func:`synthct.algorithm.inference.ood_check`). Prints the AUROC, the false-flag
   rate at the package's threshold and the detection rate per kind.
3. **Uncertainty, by test-time augmentation mode.** On held-out cases with CT (validation split + new phantoms),
   every member of every mode (:data:`synthct.trust.UNCERTAINTY_MODES`) is predicted once; each mode's map is the
   std over its members and the plain prediction. With ``--ensemble``, packages exported from other checkpoints
   of the same run give the checkpoint-ensemble alternative (std over the package and them). Prints, per mode,
   the voxel-wise Spearman correlation between the map and |sCT − CT| inside the body (per case and pooled), the
   case-wise Spearman between mean uncertainty and MAE, and the network passes it costs. The validation cases
   calibrate the chosen mode (written into the copied package).
4. **Cost and a real-size case.** A real-size brain (the real head CT of ``invesalius-examples`` with a simulated MR,
   else a SynthRAD-size phantom) through :func:`synthct.algorithm.inference.predict_case` with the CPU default backend,
   without and with the chosen mode: seconds added, and that case's Spearman and OOD score.

Prints the machine's load average; writes ``WORK/bench_trust.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy.stats import spearmanr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthct.algorithm.backends import make_predictor  # noqa: E402
from synthct.algorithm.inference import TrustRequest, ood_check, predict_case  # noqa: E402
from synthct.export.trust_record import calibration, make_record  # noqa: E402

from synthct.dataset import find_cases, read_split, select_cases  # noqa: E402
from synthct.geometry import to_mr_grid, to_network_grid  # noqa: E402
from synthct.intensity import denormalise_ct, finalise_sct, normalise_mr  # noqa: E402
from synthct.io import read_image  # noqa: E402
from synthct.model_package import ModelPackage, load_model_package, write_manifest  # noqa: E402
from synthct.phantom import generate_case, generate_volumes  # noqa: E402
from synthct.phantom import ood as constructed  # noqa: E402
from synthct.sliding_window import sliding_window_predict  # noqa: E402
from synthct.trust import UNCERTAINTY_MODES, Member, member_predict  # noqa: E402

INV3 = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")


def auroc(negatives: list[float], positives: list[float]) -> float:
    """P(score of a positive > score of a negative), ties counting half (Mann–Whitney)."""
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def engine(package: ModelPackage) -> dict[str, Any]:
    return {"patch_size": package.patch_size, "overlap": package.overlap, "batch_size": 4,
            "mode": package.manifest.get("blend", "gaussian"),
            "sigma_scale": float(package.manifest.get("sigma_scale", 0.125)), "pad_value": -1.0,
            "fill_value": -1.0, "progress": False}


def member_hu(mr: sitk.Image, mask: sitk.Image, package: ModelPackage, predictor: Any,
              members: list[Member]) -> tuple[list[np.ndarray], float]:
    """Each member's HU (float32, MR grid, z, y, x) and the seconds of one pass (the plain one)."""
    grid = to_network_grid(mr, mask, package.geometry)
    body = sitk.GetArrayViewFromImage(grid.mask) > 0
    normalised = normalise_mr(sitk.GetArrayViewFromImage(grid.mr), body, package.mr_rule, package.mr_percentile)
    outputs, seconds = [], 0.0
    for member in members:
        started = time.perf_counter()
        if member.is_identity:
            value = sliding_window_predict(normalised, predictor, mask=body, **engine(package))
            seconds = time.perf_counter() - started
        else:
            value = member_predict(normalised, body, predictor, member, **engine(package))
        outputs.append(to_mr_grid(denormalise_ct(value), grid, mr, -1000.0))
    return outputs, seconds


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(spearmanr(a, b).statistic)


def held_out_with_ct(data: Path, region: str, split: Path, n_new: int, seed: int) -> list[tuple[str, Any, Any, Any]]:
    """(name, MR, mask, CT) of the validation split and ``n_new`` new phantoms of the training generator."""
    cases = select_cases(find_cases(data, region), read_split(split).get("val", []), "val")
    held = [(c.case_id, read_image(c.mr), read_image(c.mask), read_image(c.ct)) for c in cases]
    for k in range(n_new):
        mr, ct, mask = generate_case(region, seed + k, "small")
        held.append((f"new{seed + k}", mr, mask, ct))
    return held


def ood_part(package: ModelPackage, held: list[tuple[str, Any, Any, Any]], n_extra: int, seed: int,
             region: str) -> dict[str, Any]:
    """OOD scores of in-distribution held-out cases vs the constructed set; AUROC and operating point."""
    in_dist: dict[str, dict[str, Any]] = {}
    for name, mr, mask, _ in held:
        in_dist[name] = ood_check(mr, mask, package)
    for k in range(n_extra):
        mr, _, mask = generate_case(region, seed + 100 + k, "small")
        in_dist[f"id{seed + 100 + k}"] = ood_check(mr, mask, package)
    kinds: dict[str, list[dict[str, Any]]] = {k: [] for k in ("t2_like", "pelvis", "bias", "truncated_fov", "void")}
    for k in range(3):
        brain = generate_volumes(region, seed + 200 + k, "small")

        def image(array: np.ndarray, volumes: Any = brain) -> sitk.Image:
            return volumes.image(np.ascontiguousarray(array))

        for kind, build in (("t2_like", constructed.t2_like), ("bias", constructed.strong_bias),
                            ("truncated_fov", constructed.truncated_fov), ("void", constructed.signal_void)):
            mr, mask = build(brain)
            kinds[kind].append(ood_check(image(mr), image(mask), package))
        pelvis = generate_volumes("pelvis", seed + 300 + k, "small")
        kinds["pelvis"].append(ood_check(pelvis.image(pelvis.mr), pelvis.image(pelvis.mask), package))
    negatives = [r["score"] for r in in_dist.values()]
    positives = [r["score"] for results in kinds.values() for r in results]
    threshold = float(package.trust["threshold"]["score"])  # type: ignore[index]
    return {"threshold": threshold, "auroc": auroc(negatives, positives),
            "false_flag_rate": float(np.mean([r["flagged"] for r in in_dist.values()])),
            "detected": {k: float(np.mean([r["flagged"] for r in v])) for k, v in kinds.items()},
            "in_distribution": {k: {"score": v["score"], "flagged": v["flagged"], "reasons": v["reasons"]}
                                for k, v in in_dist.items()},
            "constructed": {k: [{"score": r["score"], "flagged": r["flagged"], "reasons": r["reasons"][:2]}
                                for r in v] for k, v in kinds.items()}}


def uncertainty_part(package: ModelPackage, held: list[tuple[str, Any, Any, Any]],
                     ensemble: list[ModelPackage]) -> tuple[dict[str, Any], dict[str, list[tuple[float, float]]]]:
    """Per mode: voxel-wise and case-wise Spearman; also each validation case's (mean, p95) per mode."""
    predictor = make_predictor(package, "auto", "cpu", None)
    members = [Member(), *sorted({m for ms in UNCERTAINTY_MODES.values() for m in ms}, key=lambda m: m.label())]
    modes = {mode: [0, *(members.index(m) for m in ms)] for mode, ms in UNCERTAINTY_MODES.items()}
    others = [make_predictor(p, "auto", "cpu", None) for p in ensemble]
    per_mode: dict[str, dict[str, list[Any]]] = {}
    stats_by_case: dict[str, list[tuple[float, float]]] = {}
    pass_seconds = []
    for name, mr, mask, ct in held:
        outputs, seconds = member_hu(mr, mask, package, predictor, members)
        pass_seconds.append(seconds)
        body = sitk.GetArrayViewFromImage(mask) > 0
        sct = finalise_sct(outputs[0], body).astype(np.float32)
        error = np.abs(sct - sitk.GetArrayViewFromImage(ct).astype(np.float32))[body]
        maps = {mode: np.std(np.stack([outputs[i] for i in index]), axis=0) for mode, index in modes.items()}
        if others:
            ens = [outputs[0]] + [member_hu(mr, mask, p, q, [Member()])[0][0] for p, q in zip(ensemble, others,
                                                                                              strict=True)]
            maps[f"ensemble{len(ens)}"] = np.std(np.stack(ens), axis=0)
        for mode, spread in maps.items():
            inside = spread[body]
            entry = per_mode.setdefault(mode, {"rho": [], "mean": [], "mae": [], "voxels": [], "errors": []})
            entry["rho"].append(spearman(inside, error))
            entry["mean"].append(float(inside.mean()))
            entry["mae"].append(float(error.mean()))
            step = max(1, inside.size // 50_000)  # pooled over cases: a subsample of each
            entry["voxels"].append(inside[::step])
            entry["errors"].append(error[::step])
            stats_by_case.setdefault(mode, []).append((float(inside.mean()), float(np.percentile(inside, 95))))
        print(f"  {name}: MAE {float(error.mean()):.1f} HU; " + ", ".join(
            f"{m} ρ={per_mode[m]['rho'][-1]:.2f}" for m in maps), flush=True)
    summary = {}
    for mode, entry in per_mode.items():
        passes = len(modes[mode]) if mode in modes else len(ensemble) + 1
        summary[mode] = {"passes": passes, "voxel_spearman": [round(v, 3) for v in entry["rho"]],
                         "voxel_spearman_mean": round(float(np.mean(entry["rho"])), 3),
                         "voxel_spearman_pooled": round(spearman(np.concatenate(entry["voxels"]),
                                                                 np.concatenate(entry["errors"])), 3),
                         "case_spearman": round(spearman(np.asarray(entry["mean"]), np.asarray(entry["mae"])), 3),
                         "case_pearson": round(float(np.corrcoef(entry["mean"], entry["mae"])[0, 1]), 3),
                         "mean_uncertainty_hu": [round(v, 1) for v in entry["mean"]],
                         "mae_hu": [round(v, 1) for v in entry["mae"]]}
    summary["_pass_seconds_small"] = round(float(np.median(pass_seconds)), 2)
    return summary, stats_by_case


def real_size_case(seed: int) -> tuple[str, sitk.Image, sitk.Image, sitk.Image]:
    if INV3.is_file():
        sys.path.insert(0, str(REPO / "benchmarks"))
        from from_ct_example import read_inv3

        from synthct.io import array_to_image
        from synthct.phantom.from_ct import simulate_pair

        source = read_inv3(INV3)
        hu = sitk.GetArrayFromImage(source).astype(np.float32)
        ct, mr, mask, _ = simulate_pair(hu, tuple(float(s) for s in source.GetSpacing()[::-1]), "brain", seed)
        return ("real head CT (invesalius Cranium, simulated MR)", array_to_image(mr, source),
                array_to_image(mask, source), array_to_image(ct, source))
    mr, ct, mask = generate_case("brain", seed, "synthrad")
    return "SynthRAD-size brain phantom", mr, mask, ct


def timing_part(package: ModelPackage, mode: str, seed: int) -> dict[str, Any]:
    name, mr, mask, ct = real_size_case(seed)
    predictor = make_predictor(package, "auto", "cpu", None)
    started = time.perf_counter()
    plain, _ = predict_case(mr, mask, package, predictor, progress=False)
    plain_s = time.perf_counter() - started
    trust = TrustRequest(uncertainty=mode)
    started = time.perf_counter()
    sct, geometry = predict_case(mr, mask, package, predictor, progress=False, trust=trust)
    with_s = time.perf_counter() - started
    assert np.array_equal(sitk.GetArrayViewFromImage(plain), sitk.GetArrayViewFromImage(sct))
    body = sitk.GetArrayViewFromImage(mask) > 0
    spread = sitk.GetArrayViewFromImage(trust.uncertainty_image)[body]  # type: ignore[arg-type]
    error = np.abs(sitk.GetArrayViewFromImage(sct)[body].astype(np.float32)
                   - sitk.GetArrayViewFromImage(ct)[body].astype(np.float32))
    return {"case": name, "size_xyz": list(mr.GetSize()), "spacing_xyz_mm": [round(s, 3) for s in mr.GetSpacing()],
            "network_grid": geometry["summary"], "backend": predictor.description, "plain_s": round(plain_s, 1),
            "with_uncertainty_s": round(with_s, 1), "added_s": round(with_s - plain_s, 1),
            "ratio": round(with_s / plain_s, 2), "mae_hu": round(float(error.mean()), 1),
            "mean_uncertainty_hu": round(float(spread.mean()), 1), "voxel_spearman": round(spearman(spread, error), 3),
            "ood": {k: trust.ood_result[k] for k in ("score", "threshold", "flagged", "reasons")}  # type: ignore[index]
            }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("bench_out/trust"))
    parser.add_argument("--ensemble", type=Path, nargs="*", default=[],
                        help="packages exported from other checkpoints of the same run")
    parser.add_argument("--new-cases", type=int, default=4, help="new phantoms with CT among the held-out cases")
    parser.add_argument("--ood-extra", type=int, default=10, help="further in-distribution phantoms (OOD check only)")
    parser.add_argument("--seed", type=int, default=7000)
    parser.add_argument("--mode", default=None, help="the mode to calibrate and time (default: best ρ per pass)")
    parser.add_argument("--parts", default="ood,uncertainty,timing", help="comma-separated parts to run")
    parser.add_argument("--shifted", action="store_true",
                        help="also run the chosen --mode on T2-like, bias-field and signal-void versions of a held-out "
                             "phantom (same CT) for the case-wise correlation over a spread of errors")
    args = parser.parse_args(argv)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    source = load_model_package(args.model)
    target = args.work / "models" / source.region
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source.directory, target)
    started = time.perf_counter()
    record = make_record(load_model_package(target), args.data, args.split, uncertainty=None)
    manifest = {**load_model_package(target).manifest, "trust": record}
    write_manifest(target, manifest)
    package = load_model_package(target)
    print(f"training record: {record['cases']} cases, threshold {record['threshold']['score']} "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    results: dict[str, Any] = {"model": str(args.model), "record_threshold": record["threshold"]}

    parts = set(args.parts.split(","))
    held = held_out_with_ct(args.data, package.region, args.split, args.new_cases, args.seed)
    if "ood" in parts:
        _print_ood(results, package, held, args)
    if "uncertainty" in parts:
        _uncertainty(results, package, held, record, target, args)
        package = load_model_package(target)
    if "timing" in parts:
        _timing(results, package, args.mode or str((package.trust or {}).get("uncertainty", {}).get("mode")),
                args.seed)
    results["load_average_end"] = os.getloadavg()
    print(f"\nload average at end: {results['load_average_end']}")
    out = args.work / f"bench_trust_{'_'.join(sorted(parts))}.json"
    out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"written {out}; calibrated package {target}")
    return 0


def _print_ood(results: dict[str, Any], package: ModelPackage, held: list[tuple[str, Any, Any, Any]],
               args: argparse.Namespace) -> None:
    ood = ood_part(package, held, args.ood_extra, args.seed, package.region)
    results["ood"] = ood
    print(f"\nOOD check: AUROC {ood['auroc']:.3f}; at the package threshold {ood['threshold']:.2f}: false flags "
          f"{100 * ood['false_flag_rate']:.1f} % of {len(ood['in_distribution'])} in-distribution cases; detected: "
          + ", ".join(f"{k} {100 * v:.0f} %" for k, v in ood["detected"].items()), flush=True)
    for name, result in ood["in_distribution"].items():
        flagged = f" FLAGGED {result['reasons']}" if result["flagged"] else ""
        print(f"  in-dist {name}: score {result['score']:.2f}{flagged}")
    for kind, results_k in ood["constructed"].items():
        print(f"  {kind}: scores {[r['score'] for r in results_k]}; first reason: {results_k[0]['reasons'][:1]}")



def _uncertainty(results: dict[str, Any], package: ModelPackage, held: list[tuple[str, Any, Any, Any]],
                 record: dict[str, Any], target: Path, args: argparse.Namespace) -> None:
    ensemble = [load_model_package(p) for p in args.ensemble]
    print(f"\nuncertainty on {len(held)} held-out cases with CT ({len(ensemble)} ensemble package(s)):", flush=True)
    unc, stats = uncertainty_part(package, held, ensemble)
    results["uncertainty"] = unc
    print(f"{'mode':14s} {'passes':>6s} {'voxel ρ mean':>12s} {'pooled':>7s} {'case ρ':>7s} {'mean unc HU':>12s}")
    for mode, row in unc.items():
        if mode.startswith("_"):
            continue
        print(f"{mode:14s} {row['passes']:6d} {row['voxel_spearman_mean']:12.3f} {row['voxel_spearman_pooled']:7.3f} "
              f"{row['case_spearman']:7.3f} {np.mean(row['mean_uncertainty_hu']):12.1f}")
    mode = args.mode or max((m for m in UNCERTAINTY_MODES), key=lambda m: unc[m]["voxel_spearman_pooled"])
    print(f"chosen / calibrated mode: {mode}", flush=True)
    n_val = len(read_split(args.split).get("val", []))
    val_stats = stats[mode][:n_val]
    manifest = dict(package.manifest)
    manifest["trust"] = {**record, "uncertainty": calibration(mode, [m for m, _ in val_stats],
                                                              [p for _, p in val_stats],
                                                              unc[mode]["voxel_spearman"][:n_val])}
    write_manifest(target, manifest)
    package = load_model_package(target)
    results["calibration"] = package.trust["uncertainty"]  # type: ignore[index]
    print(f"calibration ({mode}, {n_val} validation cases): case limit "
          f"{results['calibration']['case_limit_hu']} HU, voxel level {results['calibration']['voxel_level_hu']} HU")
    if args.shifted:
        results["shifted"] = shifted_part(package, mode, args.seed, unc[mode], results["calibration"])


def shifted_part(package: ModelPackage, mode: str, seed: int, in_dist: dict[str, Any],
                 calibrated: dict[str, Any]) -> dict[str, Any]:
    """``mode`` on T2-like, bias-field and signal-void versions of a new phantom (its CT kept): case-wise
    correlation of mean uncertainty with MAE over these and the in-distribution cases, and the case flag."""
    predictor = make_predictor(package, "auto", "cpu", None)
    brain = generate_volumes(package.region, seed + 400, "small")
    ct = brain.image(brain.ct_hu)
    means, maes, rows = list(in_dist["mean_uncertainty_hu"]), list(in_dist["mae_hu"]), {}
    for kind, build in (("t2_like", constructed.t2_like), ("bias", constructed.strong_bias),
                        ("void", constructed.signal_void)):
        mr, mask = (brain.image(np.ascontiguousarray(a)) for a in build(brain))
        outputs, _ = member_hu(mr, mask, package, predictor, [Member(), *UNCERTAINTY_MODES[mode]])
        body = sitk.GetArrayViewFromImage(mask) > 0
        sct = finalise_sct(outputs[0], body).astype(np.float32)
        error = np.abs(sct - sitk.GetArrayViewFromImage(ct).astype(np.float32))[body]
        spread = np.std(np.stack(outputs), axis=0)[body]
        rows[kind] = {"mae_hu": round(float(error.mean()), 1), "mean_uncertainty_hu": round(float(spread.mean()), 1),
                      "voxel_spearman": round(spearman(spread, error), 3),
                      "flagged": bool(spread.mean() > calibrated["case_limit_hu"])}
        means.append(float(spread.mean()))
        maes.append(float(error.mean()))
        print(f"  shifted {kind}: MAE {rows[kind]['mae_hu']} HU, mean uncertainty {rows[kind]['mean_uncertainty_hu']} "
              f"HU, voxel ρ {rows[kind]['voxel_spearman']}, case flag {rows[kind]['flagged']}", flush=True)
    result = {"cases": rows, "case_spearman_with_in_dist": round(spearman(np.asarray(means), np.asarray(maes)), 3),
              "case_pearson_with_in_dist": round(float(np.corrcoef(means, maes)[0, 1]), 3)}
    print(f"case-wise over {len(means)} cases (in-distribution + shifted): Spearman "
          f"{result['case_spearman_with_in_dist']}, Pearson {result['case_pearson_with_in_dist']}", flush=True)
    return result


def _timing(results: dict[str, Any], package: ModelPackage, mode: str, seed: int) -> None:
    timing = timing_part(package, mode, seed)
    results["timing"] = timing
    print(f"\nreal-size case: {timing['case']}, {timing['size_xyz']} voxels, backend {timing['backend']}:\n"
          f"  plain {timing['plain_s']} s, with --uncertainty {mode} {timing['with_uncertainty_s']} s "
          f"(+{timing['added_s']} s, ×{timing['ratio']}); MAE {timing['mae_hu']} HU, mean uncertainty "
          f"{timing['mean_uncertainty_hu']} HU, voxel ρ {timing['voxel_spearman']}; OOD score "
          f"{timing['ood']['score']} (threshold {timing['ood']['threshold']}, flagged {timing['ood']['flagged']}"
          f": {timing['ood']['reasons'][:2]})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
