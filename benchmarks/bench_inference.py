"""Benchmark: one case's inference through every CPU path, side by side, in one run.

    python benchmarks/bench_inference.py --model models/brain --checkpoint runs/fs24/best.pt
    python benchmarks/bench_inference.py                       # tiny analytic ONNX model: plumbing cost only

Paths (each in a fresh process, so its peak RSS is its own; same case, same machine, one after the other):

- ``monai``: MONAI ``sliding_window_inference`` (64³, the package's overlap, gaussian, ``sw_batch_size`` 4, every
  window) with the checkpoint's generator in PyTorch eager fp32 — the fp32 reference sCT (needs ``--checkpoint``);
- ``ort-before``: the algorithm's path as it was before issue 10 — ONNX Runtime CPU, arena off, one window per call;
- ``onnxruntime``: ONNX Runtime tuned (arena on, threads from the CPU affinity / cgroup quota);
- ``openvino``, ``openvino-bf16``: OpenVINO on the package's ONNX, f32 and with the bf16 precision hint;
- the row marked ``default`` is the backend ``--backend auto`` chooses for this package on this machine.

Cases: a real-size brain phantom (:func:`synthct.phantom.generate_case`, size ``synthrad``, cropped to the body box
+ 8 voxels like a SynthRAD brain) with its CT, and a pelvis-size phantom (512×512×160 at 1×1×2.5 mm) run through the
default path only, for its peak RSS. Every path reads the .mha files, normalises, runs the window engine (the
algorithm's paths skip windows without body) and writes the int16 sCT; the parent compares each sCT with the fp32
reference inside the mask (mean / max |Δ| HU) and with the CT (MAE, HU). Prints the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PATHS = ("monai", "ort-before", "onnxruntime", "openvino", "openvino-bf16", "onnxruntime-fp16")
DEFAULT_PATHS = PATHS[:5]


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmHWM: peak RSS since exec; VmRSS: now)."""
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0  # KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_case(region: str, folder: Path, seed: int, crop_margin: int | None) -> dict[str, Path]:
    """A ``synthrad``-size phantom (MR, CT, mask) as .mha files, optionally cropped to the body box + margin."""
    import SimpleITK as sitk

    from synthct.phantom import generate_case

    images = dict(zip(("mr", "ct", "mask"), generate_case(region, seed, "synthrad"), strict=True))
    if crop_margin is not None:
        mask = sitk.GetArrayViewFromImage(images["mask"]) > 0
        box = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
        low = [max(int(b[0]) - crop_margin, 0) for b in box]  # z, y, x
        high = [min(int(b[-1]) + 1 + crop_margin, n) for b, n in zip(box, mask.shape, strict=True)]
        index, size = low[::-1], [h - lo for lo, h in zip(low, high, strict=True)][::-1]  # x, y, z for ITK
        images = {name: sitk.RegionOfInterest(image, size, index) for name, image in images.items()}
    paths = {}
    for name, image in images.items():
        paths[name] = folder / f"{region}_{name}.mha"
        sitk.WriteImage(image, str(paths[name]), True)
    return paths


def _monai_predict(args: argparse.Namespace, mr_image, mask_image):  # type: ignore[no-untyped-def]
    import SimpleITK as sitk
    import torch
    from monai.inferers import sliding_window_inference
    from synthct.algorithm.cpu import usable_cpus
    from synthct.export.source import build_generator_for_export, read_checkpoint

    from synthct.intensity import denormalise_ct, finalise_sct, normalise_mr
    from synthct.io import array_to_image
    from synthct.model_package import load_model_package

    torch.set_num_threads(args.threads or usable_cpus())
    package = load_model_package(args.model)
    generator = build_generator_for_export(read_checkpoint(args.checkpoint))
    mask = sitk.GetArrayViewFromImage(mask_image) > 0
    normalised = normalise_mr(sitk.GetArrayViewFromImage(mr_image), mask, package.mr_rule,  # type: ignore[arg-type]
                              package.mr_percentile)
    started = time.perf_counter()
    with torch.no_grad():
        output = sliding_window_inference(torch.from_numpy(np.ascontiguousarray(normalised))[None, None],
                                          package.patch_size, 4, generator, overlap=package.overlap,
                                          mode="gaussian", sigma_scale=0.125, padding_mode="constant", cval=-1.0)
    predict_s = time.perf_counter() - started
    sct = array_to_image(finalise_sct(denormalise_ct(output[0, 0].numpy()), mask), mr_image)
    return sct, predict_s, f"MONAI sliding_window_inference + PyTorch {torch.__version__} eager fp32 (CPU)"


def run_child(args: argparse.Namespace) -> None:
    """Child process: one path on one case; prints one JSON line."""
    import SimpleITK as sitk

    from synthct.io import read_image, write_image
    from synthct.model_package import load_model_package
    from synthct.sliding_window import plan_windows

    started = time.perf_counter()
    mr_image, mask_image = read_image(args.mr), read_image(args.mask)
    package = load_model_package(args.model)
    mask = sitk.GetArrayViewFromImage(mask_image)
    plan = plan_windows(mask.shape, package.patch_size, package.overlap, mask)
    if args.child == "monai":
        sct, predict_s, description = _monai_predict(args, mr_image, mask_image)
        windows = plan.n_windows
        selection = "baseline"
    else:
        from synthct.algorithm.backends import make_predictor
        from synthct.algorithm.inference import check_inputs, predict_sct

        if args.child == "ort-before":
            os.environ["SYNTHCT_ORT_ARENA"] = "0"
        backend = {"ort-before": "onnxruntime"}.get(args.child, args.child)
        predictor = make_predictor(package, backend, args.device, args.threads)  # type: ignore[arg-type]
        description, selection = predictor.description, predictor.selection
        check_inputs(mr_image, mask_image)
        predict_started = time.perf_counter()
        sct = predict_sct(mr_image, mask_image, package, predictor, batch_size=args.batch_size, progress=False)
        predict_s = time.perf_counter() - predict_started
        windows = len(plan.computed)
    write_image(sct, Path(args.out))
    print(json.dumps({"path": args.child, "description": description, "selection": selection,
                      "size_xyz": list(mr_image.GetSize()), "windows": windows, "windows_total": plan.n_windows,
                      "predict_s": predict_s, "total_s": time.perf_counter() - started,
                      "windows_per_s": windows / predict_s, "peak_rss_mb": _status_mb("VmHWM")}))


def _child(path: str, files: dict[str, Path], out: Path, args: argparse.Namespace, model: Path) -> dict:
    command = [sys.executable, __file__, "--child", path, "--model", str(model), "--mr", str(files["mr"]),
               "--mask", str(files["mask"]), "--out", str(out), "--batch-size", str(args.batch_size),
               "--device", args.device]
    if args.checkpoint:
        command += ["--checkpoint", str(args.checkpoint)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", check=False)
    if done.returncode != 0:
        return {"path": path, "error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _compare(result: dict, reference: Path | None, files: dict[str, Path]) -> None:
    import SimpleITK as sitk

    from synthct.io import read_image
    from synthct.metrics import mae

    mask = sitk.GetArrayFromImage(read_image(files["mask"])) > 0
    sct = sitk.GetArrayFromImage(read_image(result["sct"])).astype(np.float32)
    if "ct" in files:
        result["mae_hu"] = mae(sitk.GetArrayFromImage(read_image(files["ct"])).astype(np.float32), sct, mask)
    if reference is not None:
        expected = sitk.GetArrayFromImage(read_image(reference)).astype(np.float32)
        delta = np.abs(sct[mask] - expected[mask])
        result["mean_abs_hu"], result["max_abs_hu"] = float(delta.mean()), float(delta.max())


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text(encoding="utf-8").split()[:3])
    except OSError:
        return "?"


def _print(case: str, results: list[dict], default: str | None) -> None:
    baseline = next((r for r in results if r["path"] == "monai" and "error" not in r), None)
    print(f"{'path':14s} {'backend':58s} {'s':>7s} {'win/s':>6s} {'×MONAI':>6s} {'RSS MB':>7s} "
          f"{'mean|Δ|':>7s} {'max|Δ|':>7s} {'MAE':>7s}")
    for r in results:
        if "error" in r:
            print(f"{r['path']:14s} FAILED: {r['error']}")
            continue
        speedup = f"{baseline['predict_s'] / r['predict_s']:.1f}" if baseline else "-"
        mark = " ← default" if r["path"] == default else ""
        print(f"{r['path']:14s} {r['description'][:58]:58s} {r['predict_s']:7.1f} {r['windows_per_s']:6.2f} "
              f"{speedup:>6s} {r['peak_rss_mb']:7.0f} {r.get('mean_abs_hu', float('nan')):7.2f} "
              f"{r.get('max_abs_hu', float('nan')):7.1f} {r.get('mae_hu', float('nan')):7.2f}{mark}")
    print(f"({case}: seconds = windows + blending, excluding read/write; windows computed / total: "
          + ", ".join(f"{r['path']} {r.get('windows', '?')}/{r.get('windows_total', '?')}" for r in results[:1])
          + "; Δ and MAE in HU inside the body mask; Δ against " + ("MONAI + PyTorch fp32" if baseline else
                                                                      "ONNX Runtime fp32") + ")")


def _picture(case: str, results: list[dict], default: str | None, files: dict[str, Path], path: Path) -> None:
    """Seconds per path (bars, ×MONAI written on them) and, on the middle axial slice, the default path's sCT and its
    |Δ HU| against the fp32 reference inside the body mask."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    from synthct.io import read_image

    ok = [r for r in results if "error" not in r]
    baseline = next((r for r in ok if r["path"] == "monai"), None)
    by_path = {r["path"]: r for r in ok}
    reference = baseline or by_path.get("onnxruntime") or by_path.get("ort-before")  # as main() compares
    chosen = next((r for r in ok if r["path"] == default), None)
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.6), gridspec_kw={"width_ratios": [1.5, 1, 1]})
    names = [r["path"] for r in ok][::-1]
    seconds = [r["predict_s"] for r in ok][::-1]
    bars = axes[0].barh(names, seconds, color=["tab:orange" if n == default else "tab:blue" for n in names])
    for bar, r in zip(bars, ok[::-1], strict=True):
        digits = 0 if r["predict_s"] >= 10 else 1
        speedup = f", {baseline['predict_s'] / r['predict_s']:.1f}×" if baseline else ""
        label = f" {r['predict_s']:.{digits}f} s{speedup}"
        axes[0].text(bar.get_width(), bar.get_y() + bar.get_height() / 2, label, va="center", fontsize=9)
    axes[0].set_xlabel("seconds (windows + blending)")
    axes[0].set_xlim(0, max(seconds) * 1.3)
    axes[0].set_title(f"{case}: {ok[0].get('windows', '?')} windows (load at the end {_load()})")
    if chosen is not None and reference is not None:
        mask = sitk.GetArrayFromImage(read_image(files["mask"])) > 0
        z = int(np.flatnonzero(mask.any(axis=(1, 2))).mean())
        sct = sitk.GetArrayFromImage(read_image(chosen["sct"]))[z].astype(np.float32)
        expected = sitk.GetArrayFromImage(read_image(reference["sct"]))[z].astype(np.float32)
        axes[1].imshow(sct, cmap="gray", vmin=-1000, vmax=1500)
        axes[1].set_title(f"{default} sCT, slice z={z} (HU −1000…1500)")
        delta = np.where(mask[z], np.abs(sct - expected), np.nan)
        shown = axes[2].imshow(delta, cmap="magma", vmin=0, vmax=20)
        axes[2].set_title(f"|Δ| vs {reference['path']} fp32 (mean {chosen.get('mean_abs_hu', float('nan')):.2f} HU)")
        figure.colorbar(shown, ax=axes[2], label="HU", fraction=0.046)
        for axis in axes[1:]:
            axis.set_axis_off()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.png")
    figure.savefig(partial, dpi=110)
    plt.close(figure)
    os.replace(partial, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="model package folder (default: analytic model)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="the package's checkpoint (for the MONAI path)")
    parser.add_argument("--paths", default=",".join(DEFAULT_PATHS),
                        help=f"comma-separated subset of {', '.join(PATHS)}")
    parser.add_argument("--cases", default="brain,pelvis", help="brain (all paths), pelvis (default path only)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", choices=("cpu", "auto", "cuda"), default="cpu",
                        help="device of the algorithm's paths (cuda: with --paths onnxruntime,onnxruntime-fp16)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--picture", type=Path, default=None,
                        help="also draw the brain case here (PNG): seconds per path, the default sCT and its |Δ|")
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--mr", help=argparse.SUPPRESS)
    parser.add_argument("--mask", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return 0

    from synthct.algorithm.cpu import cpu_flags, usable_cpus

    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if "monai" in paths and args.checkpoint is None:
        paths.remove("monai")
        print("no --checkpoint: MONAI + PyTorch path skipped")
    print(f"machine: {os.cpu_count()} CPUs, {usable_cpus()} usable, bf16 flags "
          f"{sorted(f for f in cpu_flags() if 'bf16' in f)}; load average at start {_load()}")
    everything: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="synthct_bench_") as tmp:
        folder = Path(tmp)
        model = args.model
        if model is None:
            from synthct.algorithm.analytic import build_analytic_package

            model = build_analytic_package(folder / "analytic", "brain")
            print("model: analytic tanh(a·x+b) ONNX (plumbing cost; a real network adds its per-window time)")
        else:
            print(f"model: {model}")
        from synthct.algorithm.backends import make_predictor

        from synthct.model_package import load_model_package

        default = make_predictor(load_model_package(model), "auto", args.device, args.threads)
        default_path = getattr(default, "name", "onnxruntime")
        print(f"default (auto) backend here: {default.description} — {default.selection}")
        del default
        for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
            started = time.perf_counter()
            files = write_case(case, folder, args.seed, 8 if case == "brain" else None)
            print(f"\n{case}: phantom written in {time.perf_counter() - started:.0f} s; load average {_load()}")
            results = []
            for path in paths if case == "brain" else [default_path]:
                out = folder / f"{case}_{path}.mha"
                result = _child(path, files, out, args, model)
                result["sct"] = str(out)
                result["load_after"] = _load()
                results.append(result)
                print(f"  {path}: {result.get('predict_s', float('nan')):.1f} s (load {result['load_after']})",
                      flush=True)
            ok = {r["path"]: r for r in results if "error" not in r}
            reference = ok.get("monai") or ok.get("onnxruntime") or ok.get("ort-before")
            for result in ok.values():
                _compare(result, Path(reference["sct"]) if reference else None, files)
            _print(case, results, default_path)
            if args.picture is not None and case == "brain":
                _picture(case, results, default_path, files, args.picture)
                print(f"picture: {args.picture}")
            everything[case] = results
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1), encoding="utf-8")
    print(f"load average at end {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
