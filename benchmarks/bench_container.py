"""Benchmark: the images' sizes, and the algorithm image's peak memory and wall time on a real-size brain phantom.

    python benchmarks/bench_container.py                       # fs24 SwinUNETR package (random weights, exported here)
    python benchmarks/bench_container.py --model models/       # your exported package(s) instead
    python benchmarks/bench_container.py --analytic            # tiny analytic model: plumbing only, fast
    python benchmarks/bench_container.py --gpu-image           # + the default onnxruntime-gpu image (~3 GB pip)
    python benchmarks/bench_container.py --sizes-only          # image sizes, no job

Needs Docker and the python:3.11-slim* base images (``bash ../shared/tools/docker-stand-in-base``). Builds from a clean
context (Dockerfiles + synthct/ algorithm/ evaluation/ + the model package, no ground truth) with ``--network host``;
the algorithm image under test uses the CPU build of ONNX Runtime (``ORT_PACKAGE=onnxruntime==1.26.0``). The job runs
as the platform runs it: ``--network none --memory 4g --cap-drop ALL --pids-limit 256``, /input read-only, on
``synthct phantom --size synthrad`` brain case 0 (256×256×192 voxels at 1 mm). Peak memory is read inside the
container after the job from its cgroup (v2 ``memory.peak``, v1 ``memory.max_usage_in_bytes``: what the 4 GB limit
counts, page cache included), next to the job process's own peak RSS. Prints one line per figure and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CPU_ORT = "onnxruntime==1.26.0"
PLATFORM_FLAGS = ("--network", "none", "--cap-drop", "ALL", "--pids-limit", "256")
# Runs the job inside the container, then reports the cgroup's peak and the job's peak RSS on the last line.
MEASURE = r"""
import json, resource, subprocess, sys, time
from pathlib import Path
def number(path):
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
started = time.perf_counter()
code = subprocess.call([sys.executable, "-m", "synthct.algorithm"])
print("BENCH " + json.dumps({
    "exit_code": code, "job_s": time.perf_counter() - started,
    "cgroup_peak_bytes": number("/sys/fs/cgroup/memory.peak")
                         or number("/sys/fs/cgroup/memory/memory.max_usage_in_bytes"),
    "cgroup_limit_bytes": number("/sys/fs/cgroup/memory.max")
                          or number("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
    "job_peak_rss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
sys.exit(code)
"""


def docker(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, encoding="utf-8", errors="replace",
                          timeout=timeout, check=False)


def build(context: Path, tag: str, *extra: str) -> dict[str, Any]:
    """Build ``tag``; returns its size and the build's seconds (layers may come from Docker's cache)."""
    started = time.perf_counter()
    done = docker("build", "--network", "host", "-t", tag, *extra, str(context))
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"docker build {tag} failed:\n" + "\n".join((done.stdout + done.stderr).splitlines()[-30:]))
    size = int(docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
    return {"tag": tag, "size_bytes": size, "build_s": seconds}


def export_fs24(out: Path, checkpoint_path: Path) -> Path:
    """A feature_size-24 SwinUNETR (the paper's default config, random weights) exported as ``synthct export`` does."""
    import torch
    from synthct.export.package import ExportOptions, export_package
    from synthct.train.checkpoint import save_checkpoint, versions
    from synthct.train.config import config_from_dict
    from synthct.train.models import build_generator

    config = config_from_dict({"region": "brain"}).to_dict()
    torch.manual_seed(0)
    generator = build_generator(config["model"])
    checkpoint = save_checkpoint(checkpoint_path, {
        "format": "synthct-checkpoint", "format_version": 1, "config": config, "generator": generator.state_dict(),
        "discriminator": {}, "optimizer_g": {}, "optimizer_d": {}, "scaler": {}, "epoch": 0, "step": 0, "rng": {},
        "metrics": {}, "versions": versions(),
    })
    export_package(checkpoint, out, ExportOptions(measure_repeats=1, parity_random=1, parity_data=1))
    return out


def make_context(root: Path, models: Path | None, analytic: bool) -> tuple[Path, str]:
    """The build context; returns (folder, a description of the model package)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    root.mkdir(parents=True)
    for name in ("Dockerfile", ".dockerignore"):
        shutil.copy2(REPO / name, root / name)
    for package in ("synthct", "algorithm", "evaluation"):
        shutil.copytree(REPO / package, root / package, ignore=ignore)
    if models is not None:
        manifest = models / "model.json"
        region = json.loads(manifest.read_text(encoding="utf-8"))["region"] if manifest.exists() else None
        shutil.copytree(models, root / "models" / region if region else root / "models")
        return root, f"package(s) from {models}"
    if analytic:
        from synthct.algorithm.analytic import build_analytic_package

        build_analytic_package(root / "models" / "brain", "brain")
        return root, "analytic tanh(a·x+b) ONNX (plumbing only)"
    started = time.perf_counter()
    export_fs24(root / "models" / "brain", root.parent / "fs24.pt")  # the checkpoint stays out of the context
    return root, f"SwinUNETR feature_size 24, random weights, exported here in {time.perf_counter() - started:.0f} s"


def write_input(folder: Path) -> tuple[tuple[int, ...], int]:
    """``synthct phantom --size synthrad`` brain case 0 as a grand-challenge /input tree; returns its size (x, y, z)
    and the number of 64³ windows with body (what the network computes)."""
    import SimpleITK as sitk

    from synthct.phantom.generate import generate_case
    from synthct.sliding_window import plan_windows

    mr, _, mask = generate_case("brain", 0, "synthrad")
    windows = len(plan_windows(mask.GetSize()[::-1], (64, 64, 64), 0.5, sitk.GetArrayViewFromImage(mask)).computed)
    for image, sub in ((mr, "mri"), (mask, "body")):
        (folder / "images" / sub).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(folder / "images" / sub / "1BA001.mha"), True)
    (folder / "region.json").write_text('"Brain"', encoding="utf-8")
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return mr.GetSize(), windows


def run_job(image: str, input_dir: Path, output_dir: Path, memory: str) -> dict[str, Any]:
    output_dir.mkdir()
    output_dir.chmod(0o777)
    started = time.perf_counter()
    done = docker("run", "--rm", *PLATFORM_FLAGS, "--memory", memory, "-e", "SYNTHCT_PROGRESS=0",
                  "-v", f"{input_dir}:/input:ro", "-v", f"{output_dir}:/output", "--entrypoint", "python", image,
                  "-c", MEASURE)
    wall = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"job failed (exit {done.returncode}; 137 = killed, e.g. out of memory):\n"
                           + "\n".join((done.stdout + done.stderr).splitlines()[-30:]))
    result = json.loads(lines[-1][len("BENCH "):])
    results = json.loads((output_dir / "results.json").read_text(encoding="utf-8"))
    result.update(docker_run_s=wall, error_messages=[m for e in results for m in e["error_messages"]])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="model package folder, or a folder of <region>/")
    parser.add_argument("--analytic", action="store_true", help="the tiny analytic model instead of fs24")
    parser.add_argument("--gpu-image", action="store_true", help="also build the default onnxruntime-gpu image")
    parser.add_argument("--memory", default="4g", help="docker run --memory (default 4g)")
    parser.add_argument("--sizes-only", action="store_true", help="build and measure the images, run no job")
    args = parser.parse_args()
    summary: dict[str, Any] = {"bench": "container", "images": {}}
    with tempfile.TemporaryDirectory(prefix="bench_container.") as folder:
        work = Path(folder)
        context, model = make_context(work / "context", args.model, args.analytic)
        summary["model"] = model
        print(f"model: {model}")
        images = summary["images"]
        images["algorithm_cpu"] = build(context, "synthct-algorithm:bench-cpu", "--build-arg", f"ORT_PACKAGE={CPU_ORT}")
        if args.gpu_image:
            images["algorithm_gpu"] = build(context, "synthct-algorithm:bench-gpu")
        images["evaluation"] = build(context, "synthct-evaluation:bench", "-f", str(context / "evaluation" /
                                                                                     "Dockerfile"))
        for name, entry in images.items():
            print(f"image {name:14s} {entry['tag']:30s} {entry['size_bytes'] / 1e9:.2f} GB "
                  f"(build {entry['build_s']:.0f} s)")
        if args.sizes_only:
            print(json.dumps(summary))
            return 0
        input_dir = work / "input"
        size, windows = write_input(input_dir)
        job = run_job(images["algorithm_cpu"]["tag"], input_dir, work / "output", args.memory)
        summary["job"] = {"case_size_xyz": list(size), "windows": windows, "memory_limit": args.memory, **job}
        print(f"algorithm job (CPU image, --memory {args.memory}, brain {size[0]}×{size[1]}×{size[2]}): exit "
              f"{job['exit_code']}, cgroup peak {job['cgroup_peak_bytes'] / 2**30:.2f} GiB (limit "
              f"{(job['cgroup_limit_bytes'] or 0) / 2**30:.2f} GiB), job peak RSS "
              f"{job['job_peak_rss_bytes'] / 2**30:.2f} GiB, job {job['job_s']:.1f} s ({windows} windows), docker run "
              f"{job['docker_run_s']:.1f} s")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
