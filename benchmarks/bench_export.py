"""Benchmark: seconds per 64³ patch of the generator in PyTorch eager and in the exported ONNX graph.

    python benchmarks/bench_export.py                          # CPU: PyTorch eager fp32, ONNX Runtime plain/optimised
    python benchmarks/bench_export.py --device cuda            # + PyTorch CUDA, ONNX Runtime CUDA EP, TensorRT
    python benchmarks/bench_export.py --checkpoint runs/x/best.pt   # a trained generator instead of random weights

The network is SwinUNETR at feature_size 24 (the paper's default) with random weights unless --checkpoint is given;
it is exported exactly as ``synthct export`` does (dynamo exporter, axis-wise instance norms, fixed patch, dynamic
batch). ONNX Runtime sessions are configured like the algorithm's (online ORT_ENABLE_ALL, no CPU arena). Every
figure is the median of --repeats timed runs after one warm-up (min in brackets); ONNX Runtime variants run
interleaved so that load from other processes hits them alike. What cannot run here (no GPU, no onnxruntime-gpu,
no TensorRT) is skipped with the reason. The last line is a one-line JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import timed


def interleaved(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, dict[str, float]]:
    """Like :func:`timed` for several CPU runners, alternating between them on every repeat."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: {"median_s": statistics.median(v), "min_s": min(v)} for name, v in times.items()}


def max_abs_hu(reference: np.ndarray, output: np.ndarray) -> float:
    from synthct.export.parity import HU_PER_UNIT

    return float(np.abs(output.astype(np.float64) - reference).max() * HU_PER_UNIT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="trained checkpoint (default: random weights)")
    parser.add_argument("--feature-size", type=int, default=24)
    parser.add_argument("--batch", type=int, default=1, help="patches per call (default 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch and ONNX Runtime")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: also time the GPU paths")
    parser.add_argument("--max-batch", type=int, default=4, help="TensorRT profile's largest batch")
    parser.add_argument("--compare-instance-norm", action="store_true",
                        help="also export and time the graph with ONNX InstanceNormalization (≈ 30 s more)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    import torch
    from synthct.export.onnx_export import export_onnx
    from synthct.export.optimise import ort_offline
    from synthct.export.parity import ort_session

    if args.threads:
        torch.set_num_threads(args.threads)
    cpu_threads = torch.get_num_threads()
    if args.checkpoint:
        from synthct.export.source import build_generator_for_export, read_checkpoint

        generator = build_generator_for_export(read_checkpoint(args.checkpoint))
        label = str(args.checkpoint)
    else:
        from synthct.train.models import build_generator

        torch.manual_seed(0)
        generator = build_generator({"feature_size": args.feature_size}).eval()
        label = f"random weights, feature_size {args.feature_size}"
    patch = np.random.default_rng(0).uniform(-1, 1, (args.batch, 1, 64, 64, 64)).astype(np.float32)
    per_patch = float(args.batch)
    results: dict[str, Any] = {"bench": "export", "model": label, "batch": args.batch, "cpu_threads": cpu_threads,
                               "os_cpus": os.cpu_count(), "timings_s_per_patch": {}, "max_abs_hu_vs_torch": {},
                               "skipped": {}}
    timings, errors, skipped = results["timings_s_per_patch"], results["max_abs_hu_vs_torch"], results["skipped"]
    print(f"bench_export: {label}, batch {args.batch}, {cpu_threads} torch threads on {os.cpu_count()} CPUs "
          "(a shared machine: other processes add noise)")

    from synthct.export.parity import make_inputs

    body = make_inputs((64, 64, 64), "brain", "max", 99.5, n_random=0, n_data=1, seed=0)
    results["body_patch_source"] = body.data_source
    with torch.no_grad():
        reference = generator(torch.from_numpy(patch)).double().numpy()
        body_reference = generator(torch.from_numpy(body.data)).double().numpy()
    body_errors: dict[str, float] = results.setdefault("max_abs_hu_vs_torch_body_patch", {})
    with tempfile.TemporaryDirectory(prefix="bench_export.") as folder:
        work = Path(folder)
        started = time.perf_counter()
        plain = export_onnx(_swapped(generator), work / "model.onnx", (64, 64, 64))
        print(f"export (dynamo): {time.perf_counter() - started:.1f} s, {plain.model.stat().st_size / 1e6:.1f} MB")
        optimised = work / "model.ort-basic.onnx"
        ort_offline(plain.model, optimised, external_data=False)
        paths = {"onnxruntime_cpu": plain.model, "onnxruntime_cpu_optimised": optimised}
        if args.compare_instance_norm:
            paths["onnxruntime_cpu_onnx_instancenorm"] = export_onnx(generator, work / "in.onnx", (64, 64, 64)).model
        sessions = {name: ort_session(path, args.threads) for name, path in paths.items()}
        for name, session in sessions.items():
            errors[name] = max_abs_hu(reference, session.run(["sct"], {"mr": patch})[0])
            body_errors[name] = max_abs_hu(body_reference, session.run(["sct"], {"mr": body.data})[0])

        def torch_cpu() -> None:
            with torch.no_grad():
                generator(torch.from_numpy(patch))

        timings["torch_cpu_fp32"] = timed(torch_cpu, args.repeats)
        timings.update(interleaved({name: (lambda s=session: s.run(["sct"], {"mr": patch}))
                                    for name, session in sessions.items()}, args.repeats))
        if args.device == "cuda":
            _gpu(args, generator, patch, reference, paths["onnxruntime_cpu"], work, results)
    for entry in timings.values():
        entry["median_s"] /= per_patch
        entry["min_s"] /= per_patch
    torch_s = timings["torch_cpu_fp32"]["median_s"]
    results["ratios_torch_cpu_over"] = {name: round(torch_s / value["median_s"], 2)
                                        for name, value in timings.items() if name != "torch_cpu_fp32"}
    for name, value in timings.items():
        error = f", max |Δ| vs torch {errors[name]:.4f} HU (random patch)" if name in errors else ""
        if name in body_errors:
            error += f", {body_errors[name]:.4f} HU (body patch)"
        print(f"{name:36s} {value['median_s']:.3f} s/patch (min {value['min_s']:.3f}){error}")
    for name, ratio in results["ratios_torch_cpu_over"].items():
        print(f"torch_cpu_fp32 / {name}: {ratio:.2f}×")
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    print(json.dumps(results, default=float))
    return 0


def _swapped(generator: Any) -> Any:
    import copy

    from synthct.export.accurate_norm import swap_instance_norms

    clone = copy.deepcopy(generator)
    swap_instance_norms(clone)
    return clone


def _gpu(args: argparse.Namespace, generator: Any, patch: np.ndarray, reference: np.ndarray, onnx_path: Path,
         work: Path, results: dict[str, Any]) -> None:
    """PyTorch CUDA (fp32, fp16 autocast), ONNX Runtime CUDA EP, TensorRT: each skipped with a reason if missing."""
    import torch

    timings, errors, skipped = results["timings_s_per_patch"], results["max_abs_hu_vs_torch"], results["skipped"]
    if not torch.cuda.is_available():
        skipped["torch_cuda"] = f"torch {torch.__version__} sees no CUDA GPU"
    else:
        results["gpu"] = torch.cuda.get_device_name(0)
        model = generator.cuda()
        batch = torch.from_numpy(patch).cuda()
        for name, dtype in (("torch_cuda_fp32", None), ("torch_cuda_fp16_autocast", torch.float16)):
            def run(dtype: Any = dtype) -> Any:
                with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                    return model(batch)
            errors[name] = max_abs_hu(reference, run().float().cpu().numpy())
            timings[name] = timed(run, args.repeats, torch.cuda.synchronize)
        generator.cpu()
        torch.cuda.empty_cache()

    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        skipped["onnxruntime_cuda"] = (f"onnxruntime {ort.__version__} has no CUDA provider "
                                       f"({ort.get_available_providers()}): install onnxruntime-gpu instead")
    else:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(onnx_path), options, providers=["CUDAExecutionProvider",
                                                                           "CPUExecutionProvider"])
        if "CUDAExecutionProvider" not in session.get_providers():
            used = session.get_providers()
            skipped["onnxruntime_cuda"] = f"CUDA provider listed but not started (session uses {used})"
        else:
            errors["onnxruntime_cuda"] = max_abs_hu(reference, session.run(["sct"], {"mr": patch})[0])
            timings["onnxruntime_cuda"] = timed(lambda: session.run(["sct"], {"mr": patch}), args.repeats)

    try:
        from synthct.export.tensorrt_build import EngineRunner, build_engine, require_tensorrt

        trt = require_tensorrt()
    except Exception as exc:  # TensorRTUnavailable, or a broken install
        skipped["tensorrt"] = str(exc)
        return
    for precision in ("fp16", "fp32"):
        name = f"tensorrt_{precision}"
        try:
            plan = work / f"model.{precision}.plan"
            facts = build_engine(trt, onnx_path, plan, (64, 64, 64), max(args.max_batch, args.batch), precision)
            runner = EngineRunner(trt, plan.read_bytes(), max(args.max_batch, args.batch))
        except Exception as exc:
            skipped[name] = f"{type(exc).__name__}: {exc}"
            continue
        results[f"{name}_build_s"] = facts["build_s"]
        errors[name] = max_abs_hu(reference, runner(patch))
        timings[name] = timed(lambda runner=runner: runner(patch), args.repeats)


if __name__ == "__main__":
    sys.exit(main())
