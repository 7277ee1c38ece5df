"""Training throughput of the 3D Pix2Pix step (SwinUNETR generator + PatchGAN), on random in-memory patches.

    .venv/bin/python benchmarks/bench_train.py --device cpu --feature-size 12 --batch-size 2 --patch 64 --steps 5
    python benchmarks/bench_train.py --device cuda --feature-size 24 --batch-size 4 --amp bf16 --steps 30

Times full steps (generator + discriminator forward, eq. 2 losses, both backward passes, both AdamW updates)
after ``--warmup`` untimed steps, and one no-grad inference batch. Prints a table and a one-line JSON summary
(last line). Patches are normalised MR/CT made from a phantom case (synthct.phantom.generate_case) when it
is available, else smooth random volumes: throughput does not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np
import torch
from synthct.train.config import config_from_dict
from synthct.train.process import tune_cpu_allocator
from synthct.train.step import build_step_models, train_step
from timing import cuda_sync


def _volumes(patch: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Normalised MR and CT volumes at least one patch large: a phantom case if synthct.phantom can make one,
    else smooth random volumes (throughput does not depend on the values)."""
    try:
        import SimpleITK as sitk

        from synthct.intensity import normalise_ct, normalise_mr
        from synthct.phantom import generate_case

        mr_image, ct_image, mask_image = generate_case("brain", seed=0, size="small")
        mr = sitk.GetArrayFromImage(mr_image).astype(np.float32)
        ct = sitk.GetArrayFromImage(ct_image).astype(np.float32)
        mask = sitk.GetArrayFromImage(mask_image)
        if min(mr.shape) >= patch:
            return normalise_mr(mr, mask), normalise_ct(ct)
    except (ImportError, ValueError, TypeError):
        pass
    shape = (patch + 16,) * 3
    smooth = np.cumsum(np.cumsum(rng.standard_normal(shape), axis=0), axis=1).astype(np.float32)
    smooth = np.tanh(smooth / (np.abs(smooth).max() + 1e-6) * 3)
    return smooth, np.clip(-smooth * 0.5 - 0.3, -1, 1).astype(np.float32)


def _batch(mr: np.ndarray, ct: np.ndarray, batch: int, patch: int, rng: np.random.Generator,
           device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mrs, cts = [], []
    for _ in range(batch):
        start = [int(rng.integers(0, s - patch + 1)) for s in mr.shape]
        window = tuple(slice(s, s + patch) for s in start)
        mrs.append(mr[window][None])
        cts.append(ct[window][None])
    return torch.from_numpy(np.stack(mrs)).to(device), torch.from_numpy(np.stack(cts)).to(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--feature-size", type=int, default=12)
    parser.add_argument("--depths", default="2,2,2,2", help="SwinUNETR depths, comma-separated")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--patch", type=int, default=64, help="cubic patch edge (multiple of 32, ≥ 64)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--amp", default="off", choices=["off", "auto", "bf16", "fp16"])
    parser.add_argument("--no-gan", action="store_true", help="generator only (λ = 0: no discriminator)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA requested but not available", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cpu":
        tune_cpu_allocator()  # as the trainer does
    config = config_from_dict({
        "model": {"feature_size": args.feature_size, "depths": [int(d) for d in args.depths.split(",")]},
        "data": {"patch_size": [args.patch] * 3},
        "train": {"batch_size": args.batch_size, "amp": args.amp, "device": args.device},
        "loss": {"lambda_gan": 0.0 if args.no_gan else 0.01},
        "optim": {"lr_generator": 2e-4, "lr_discriminator": 2e-4},
    })
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    models = build_step_models(config, device)
    mr, ct = _volumes(args.patch, rng)
    use_gan = not args.no_gan
    times = []
    for index in range(args.warmup + args.steps):
        mr_batch, ct_batch = _batch(mr, ct, args.batch_size, args.patch, rng, device)
        cuda_sync(device)
        began = time.perf_counter()
        values = train_step(models, mr_batch, ct_batch, config, use_gan)
        cuda_sync(device)
        if index >= args.warmup:
            times.append(time.perf_counter() - began)
    models.generator.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=models.amp_dtype or torch.float32,
                                         enabled=models.amp_dtype is not None):
        mr_batch, _ = _batch(mr, ct, args.batch_size, args.patch, rng, device)
        models.generator(mr_batch)
        cuda_sync(device)
        began = time.perf_counter()
        models.generator(mr_batch)
        cuda_sync(device)
        inference = time.perf_counter() - began
    step_s = statistics.median(times)
    summary = {
        "bench": "train_step",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        or platform.machine(),
        "threads": torch.get_num_threads(),
        "feature_size": args.feature_size,
        "depths": config.model.depths,
        "batch_size": args.batch_size,
        "patch": args.patch,
        "amp": args.amp,
        "gan": use_gan,
        "steps": args.steps,
        "s_per_step_median": round(step_s, 4),
        "s_per_step_min": round(min(times), 4),
        "patches_per_s": round(args.batch_size / step_s, 3),
        "inference_patches_per_s": round(args.batch_size / inference, 3),
        "max_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda"
        else None,
        "params_generator_m": round(sum(p.numel() for p in models.generator.parameters()) / 1e6, 3),
        "last_losses": {k: round(v, 5) for k, v in values.items()},
        "torch": torch.__version__,
    }
    print(f"device {summary['device_name']} ({device}), {summary['threads']} threads; SwinUNETR feature_size "
          f"{args.feature_size}, depths {config.model.depths}, {summary['params_generator_m']} M params")
    print(f"batch {args.batch_size} × {args.patch}³, amp {args.amp}, GAN {'on' if use_gan else 'off'}")
    print(f"train step: {step_s:.3f} s median ({min(times):.3f} min) over {args.steps} steps → "
          f"{summary['patches_per_s']:.2f} patches/s")
    print(f"inference:  {summary['inference_patches_per_s']:.2f} patches/s (batch {args.batch_size}, no grad)")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
