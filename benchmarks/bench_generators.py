"""Model-only throughput of both recipes' generators (issue 19's GPU figure): patches (and megavoxels) per second at
one batch size, inference (no grad) and a training pass (forward + L1 backward, no optimiser), each generator at its
own config's patch size and memory format.

    python benchmarks/bench_generators.py --device cuda --batch-size 8 --amp bf16          # SynthRAD-scale configs
    .venv/bin/python benchmarks/bench_generators.py --device cpu --batch-size 2 --amp off \\
        --configs cpu_smoke resenc_cpu_smoke --repeats 3                                   # this CPU, small configs

``--configs`` takes bundled config names or YAML files (default ``paper resenc``: the GPU configs). Prints one row
per generator and a JSON summary (last line; ``--json`` writes it too). Times exclude ``--warmup`` untimed calls;
CUDA timings synchronise the device. Inputs are random normalised MR patches: throughput does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from synthct.train.config import load_config
from synthct.train.step import build_step_models, prepare_inputs

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recipes_report as report
from timing import cuda_sync, timed

AMP_CHOICES = ("off", "bf16", "fp16")


def measure(config_name: str, device: torch.device, batch_size: int, amp: str, warmup: int,
            repeats: int) -> dict[str, Any]:
    """Inference and training-pass patches/s of the generator of one config (its ``data.patch_size``)."""
    config = load_config(config_name, [f"train.amp={amp}"])
    models = build_step_models(config, device)  # the generator as training sets it up (memory format included)
    generator = models.generator
    patch = tuple(config.data.patch_size)
    voxels = patch[0] * patch[1] * patch[2]
    (mr,) = prepare_inputs(models, torch.rand((batch_size, 1, *patch)) * 2 - 1)

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=models.amp_dtype, enabled=models.amp_dtype is not None)

    def infer() -> None:
        with torch.no_grad(), autocast():
            generator(mr)

    def train_pass() -> None:
        generator.zero_grad(set_to_none=True)
        with autocast():
            loss = (generator(mr).float() - mr.float()).abs().mean()
        loss.backward()

    def sync() -> None:
        cuda_sync(device)

    generator.eval()
    inference_s = timed(infer, repeats, sync, warmup)["median_s"]
    generator.train()
    train_s = timed(train_pass, repeats, sync, warmup)["median_s"]
    return {"config": config_name, "architecture": config.model.architecture, "patch": list(patch),
            "params_m": round(sum(p.numel() for p in generator.parameters()) / 1e6, 2),
            "inference_patches_per_s": round(batch_size / inference_s, 2),
            "train_patches_per_s": round(batch_size / train_s, 2),
            "inference_megavoxels_per_s": round(batch_size * voxels / inference_s / 1e6, 2),
            "train_megavoxels_per_s": round(batch_size * voxels / train_s / 1e6, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["paper", "resenc"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--amp", default="bf16", choices=AMP_CHOICES)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu" and args.amp == "fp16":
        parser.error("--amp fp16 needs a CUDA device")
    load_start = report.load()
    rows = []
    for name in args.configs:
        row = measure(name, device, args.batch_size, args.amp, args.warmup, args.repeats)
        rows.append(row)
        print(f"{name:>20}  {row['architecture']:<12} patch {row['patch']}  {row['params_m']:7.2f} M params  "
              f"inference {row['inference_patches_per_s']:9.2f} patches/s  train pass "
              f"{row['train_patches_per_s']:9.2f} patches/s ({row['inference_megavoxels_per_s']:.2f} / "
              f"{row['train_megavoxels_per_s']:.2f} Mvoxel/s)", flush=True)
    host = report.machine()
    if device.type == "cuda":
        host["gpu"] = torch.cuda.get_device_name(device)
    summary = {"device": str(device), "machine": host, "load_average_start": load_start,
               "load_average_end": report.load(), "threads": torch.get_num_threads(), "batch_size": args.batch_size,
               "amp": args.amp, "torch": torch.__version__, "rows": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        temporary = args.json.with_suffix(args.json.suffix + ".tmp")
        temporary.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        temporary.replace(args.json)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
