"""Where training time goes: the loader alone, the model step alone, and ``synthct train`` end to end, one config.

    # CPU (this project's machines)
    .venv/bin/python benchmarks/bench_train_pipeline.py --config configs/tiny.yaml --device cpu --size small \
        --cases 6 --batch-size 2 --workers 1 --steps 6 --warmup 2
    # GPU target (issue 9): paper config, batch 8, bf16, GAN on, SynthRAD-size phantoms
    python benchmarks/bench_train_pipeline.py --config configs/paper.yaml --device cuda --size synthrad \
        --cases 12 --batch-size 8 --amp bf16 --workers 12 --steps 60 --warmup 20 [--set train.compile=default]

Generates ``--cases`` brain phantoms (kept in ``--work``), prepares their cache (``synthct data prepare``), then
measures, for the same resolved config:

1. loader only: batches from the run's loader (memory maps, persistent workers, augmentation where the config puts
   it; with augmentation on the device it is applied here too), no model — patches/s; both augmentation placements
   are timed;
2. model only: ``train_step`` on batches already on the device — patches/s;
3. end to end: ``synthct train`` in a subprocess (``--nproc`` ranks through torchrun), patches/s over all ranks from
   its log between the warm-up step and the last, validation off; its per-rank peak RSS (from the run log) and the
   peak RSS of the whole process tree's largest process.

Prints the three rates, their ratios and the peak RSS figures, then one JSON line (last).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthct.train.augment import apply_batch_affine  # noqa: E402
from synthct.train.config import load_config  # noqa: E402
from synthct.train.data import augment_on_device, make_epoch_loader, mapped_train_volume  # noqa: E402
from synthct.train.process import peak_rss_mb, tune_cpu_allocator  # noqa: E402
from synthct.train.step import build_step_models, prepare_inputs, train_step  # noqa: E402
from timing import cuda_sync  # noqa: E402

from synthct.cache import prepare_cache, settings_for_patch  # noqa: E402


def _phantoms(work: Path, count: int, size: str) -> Path:
    data = work / f"brain_{size}_{count}"
    folder = data / "Task1" / "brain"
    if not folder.is_dir() or len(list(folder.iterdir())) < count:
        shutil.rmtree(data, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "synthct", "phantom", "--out", str(data), "--region", "brain",
                        "--cases", str(count), "--size", size, "--no-progress"], check=True, cwd=REPO, env=_env())
    return data


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _loader_rate(volumes: list, config, device: torch.device, on_device: bool, batches: int, warmup: int) -> float:
    """Patches/s of the run's loader (with augmentation), no model."""
    loader = make_epoch_loader(volumes, config, seed=0, rank=0, start_epoch=0, start_step=0,
                               steps_per_epoch=batches + warmup, crops=on_device,
                               pin_memory=device.type == "cuda" and config.data.pin_memory)
    iterator = iter(loader)
    began = 0.0
    for index in range(warmup + batches):
        if index == warmup:
            cuda_sync(device)
            began = time.perf_counter()
        batch = next(iterator)
        if on_device:
            batch = apply_batch_affine({k: v.to(device, non_blocking=True) for k, v in batch.items()},
                                       config.data.patch_size)
        else:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    cuda_sync(device)
    elapsed = time.perf_counter() - began
    del iterator, loader
    return batches * config.train.batch_size / elapsed


def _model_rate(config, device: torch.device, steps: int, warmup: int) -> tuple[float, float]:
    """(patches/s of train_step on batches already on the device, seconds of the warm-up steps)."""
    torch.manual_seed(0)
    models = build_step_models(config, device)
    patch = config.data.patch_size
    generator = torch.Generator().manual_seed(0)
    mr = torch.rand(config.train.batch_size, 1, *patch, generator=generator) * 2 - 1
    ct = torch.tanh(-0.8 * mr + 0.1)
    mr, ct = prepare_inputs(models, mr, ct)
    use_gan = config.loss.lambda_gan > 0
    began = time.perf_counter()
    for _ in range(warmup):
        train_step(models, mr, ct, config, use_gan)
    cuda_sync(device)
    warm_s = time.perf_counter() - began
    began = time.perf_counter()
    for _ in range(steps):
        train_step(models, mr, ct, config, use_gan)
    cuda_sync(device)
    return steps * config.train.batch_size / (time.perf_counter() - began), warm_s


def _end_to_end(args: argparse.Namespace, data: Path, overrides: list[str], world: int) -> dict[str, float]:
    run = args.work / "run_e2e"
    shutil.rmtree(run, ignore_errors=True)
    total = args.warmup + args.steps
    train_args = ["--config", str(args.config), "--data", str(data), "--region", "brain", "--out", str(run),
                  *[item for o in overrides for item in ("--set", o)],
                  "--set", f"train.max_steps={total}", "--set", "train.epochs=100000",
                  "--set", "validation.every_epochs=0", "--set", "validation.at_end=false",
                  "--set", "logging.log_every_steps=1", "--set", "logging.progress=false",
                  "--set", "logging.tensorboard=false"]
    if world > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(world),
                   "-m", "synthct", "train", *train_args]
    else:
        command = [sys.executable, "-m", "synthct", "train", *train_args]
    began = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status):
        print(stderr.decode("utf-8", "replace")[-3000:], file=sys.stderr)
        raise SystemExit("end-to-end run failed")
    records = [json.loads(line) for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    steps = {r["step"]: r["elapsed_s"] for r in records if r["kind"] == "train"}
    end = next(r for r in records if r["kind"] == "end")
    first, last = args.warmup, total
    rate = (last - first) * args.batch_size * world / (steps[last] - steps[first])
    return {"patches_per_s": rate, "wall_s": wall, "peak_rss_mb_rank0": float(end["peak_rss_mb_rank0"]),
            "peak_rss_mb_max_rank": float(end["peak_rss_mb_max_rank"]),
            "peak_rss_mb_largest_process": usage.ru_maxrss / 1024.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "tiny.yaml")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="small", choices=["small", "medium", "synthrad"])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--amp", default="off", choices=["off", "auto", "bf16", "fp16"])
    parser.add_argument("--workers", type=int, default=1, help="loader processes per rank")
    parser.add_argument("--steps", type=int, default=6, help="timed steps / batches")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps / batches first (compile: many)")
    parser.add_argument("--nproc", type=int, default=1, help="ranks of the end-to-end run (torchrun)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--work", type=Path, default=Path("/tmp/synthct_bench_pipeline"))
    parser.add_argument("--skip-e2e", action="store_true")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA requested but not available", file=sys.stderr)
        return 2
    overrides = [*args.overrides, f"train.batch_size={args.batch_size}", f"train.amp={args.amp}",
                 f"train.device={args.device}", f"data.num_workers={args.workers}",
                 "data.augment.enabled=true"]
    config = load_config(args.config, overrides)
    if config.train.num_threads:  # the three parts run with the same torch threads
        torch.set_num_threads(config.train.num_threads)
    if device.type == "cpu":
        tune_cpu_allocator()
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True

    began = time.perf_counter()
    data = _phantoms(args.work, args.cases, args.size)
    phantom_s = time.perf_counter() - began
    rule = config.data.mr_normalisation
    began = time.perf_counter()
    index = prepare_cache(data, settings_for_patch("brain", config.data.patch_size, rule.rule, rule.percentile),
                          workers=min(4, os.cpu_count() or 1), progress=False, report=lambda _m: None)
    prepare_s = time.perf_counter() - began
    volumes = [mapped_train_volume(case) for case in index.cases.values()]
    print(f"{args.cases} {args.size} brain phantoms ({phantom_s:.0f} s if generated), cache ready in "
          f"{prepare_s:.1f} s", flush=True)

    chosen = augment_on_device(config, device)
    loader = {}
    for where, on_device in (("loader", False), ("device", True)):
        loader[where] = _loader_rate(volumes, config, device, on_device, args.steps * 2, args.warmup)
        print(f"loader only, augmentation in the {where:<6}: {loader[where]:9.2f} patches/s", flush=True)
    loader_rate = loader["device" if chosen else "loader"]
    model_rate, warm_s = _model_rate(config, device, args.steps, args.warmup)
    print(f"model only (train_step, batch {args.batch_size}):       {model_rate:9.2f} patches/s "
          f"(warm-up {warm_s:.1f} s)", flush=True)
    e2e: dict[str, float] = {}
    if not args.skip_e2e:
        e2e = _end_to_end(args, data, overrides, args.nproc)
        print(f"end to end (synthct train, {args.nproc} rank(s)):      {e2e['patches_per_s']:9.2f} patches/s "
              f"({e2e['wall_s']:.0f} s wall)", flush=True)
        print(f"ratios: end-to-end / model-only {e2e['patches_per_s'] / (model_rate * args.nproc):.2f}, "
              f"loader / model-only {loader_rate / model_rate:.2f}")
        print(f"peak RSS per rank: rank 0 {e2e['peak_rss_mb_rank0']:.0f} MB, largest rank "
              f"{e2e['peak_rss_mb_max_rank']:.0f} MB, largest process {e2e['peak_rss_mb_largest_process']:.0f} MB")
    summary = {
        "bench": "train_pipeline", "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
        (platform.processor() or platform.machine()), "cpus": os.cpu_count(), "config": str(args.config),
        "overrides": overrides, "size": args.size, "cases": args.cases, "batch_size": args.batch_size,
        "amp": args.amp, "workers": args.workers, "augment_where": "device" if chosen else "loader",
        "compile": config.train.compile, "threads": torch.get_num_threads(),
        "loader_patches_per_s": {k: round(v, 3) for k, v in loader.items()},
        "model_patches_per_s": round(model_rate, 3), "model_warmup_s": round(warm_s, 1),
        "e2e_patches_per_s": round(e2e["patches_per_s"], 3) if e2e else None,
        "ratio_e2e_over_model": round(e2e["patches_per_s"] / (model_rate * args.nproc), 3) if e2e else None,
        "ratio_loader_over_model": round(loader_rate / model_rate, 3),
        "peak_rss_mb": {k: round(v, 1) for k, v in e2e.items() if k.startswith("peak")},
        "bench_process_peak_rss_mb": round(peak_rss_mb(), 1), "prepare_s": round(prepare_s, 1),
        "volumes_mean_shape": [int(v) for v in np.mean([c.shape for c in index.cases.values()], axis=0)],
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
