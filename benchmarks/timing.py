"""Timing helpers of the benchmarks (imported by the scripts beside it; not part of the package)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def cuda_sync(device: Any) -> None:
    """Wait for the GPU's queued work when ``device`` (a ``torch.device``) is a CUDA device; nothing on the CPU."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def timed(run: Callable[[], Any], repeats: int, sync: Callable[[], None] | None = None,
          warmup: int = 1) -> dict[str, float]:
    """Median and min seconds of ``repeats`` calls after ``warmup`` untimed ones (``sync`` waits for the GPU)."""
    for _ in range(warmup):
        run()
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        if sync:
            sync()
        times.append(time.perf_counter() - started)
    return {"median_s": statistics.median(times), "min_s": min(times)}
