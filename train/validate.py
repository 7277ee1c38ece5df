"""Full-volume validation, scored exactly as the containers would score it.

Generator → numpy predictor → synthct.sliding_window.sliding_window_predict (64³, 50 % overlap, gaussian blend,
windows without body skipped) → synthct.intensity.denormalise_ct → finalise_sct (int16, −1000 HU outside the
mask) → synthct.metrics.compute_metrics against the CT in HU.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from synthct.train.config import Config
from synthct.train.data import ValidationVolume

from synthct.intensity import denormalise_ct, finalise_sct
from synthct.metrics import aggregate, compute_metrics
from synthct.sliding_window import sliding_window_predict, window_starts

Predictor = Callable[[np.ndarray], np.ndarray]


@dataclass
class ValidationResult:
    """Per-case metrics, their means, and (for image logging) the first case's sCT in HU."""

    per_case: dict[str, dict[str, float]]
    mean: dict[str, float]
    aggregates: dict[str, dict[str, float | int | None]]
    seconds: float
    first_sct_hu: np.ndarray | None = field(default=None, repr=False)


def autocast_context(device: torch.device, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for the device and dtype, or a no-op context when AMP is off."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def make_predictor(generator: torch.nn.Module, device: torch.device,
                   amp_dtype: torch.dtype | None = None) -> Predictor:
    """The generator as a numpy predictor: (B, 1, z, y, x) float32 normalised MR → same shape float32 in [-1, 1]."""

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad(), autocast_context(device, amp_dtype):
            output = generator(torch.from_numpy(np.ascontiguousarray(batch)).to(device))
        return output.float().cpu().numpy()

    return predict


def predict_volume(volume: ValidationVolume, predictor: Predictor, config: Config) -> np.ndarray:
    """sCT (z, y, x) int16 HU of one case, as the algorithm container would write it."""
    validation = config.validation
    normalised = sliding_window_predict(
        volume.mr, predictor, patch_size=tuple(config.data.patch_size), overlap=validation.overlap,
        mask=volume.mask, batch_size=validation.batch_size, mode=validation.blend,
        sigma_scale=validation.sigma_scale, pad_value=volume.mr_background,
    )
    return finalise_sct(denormalise_ct(normalised), volume.mask)


def count_windows(volumes: Sequence[ValidationVolume], config: Config) -> int:
    """Windows a validation computes at most (windows without body voxels are skipped, so this is an upper bound)."""
    return sum(len(window_starts(v.mr.shape, config.data.patch_size, config.validation.overlap)) for v in volumes)


def validate(generator: torch.nn.Module, volumes: Sequence[ValidationVolume], config: Config,
             device: torch.device, amp_dtype: torch.dtype | None = None) -> ValidationResult:
    """Predict every validation volume and score it; the generator is put in eval mode and restored."""
    started = time.monotonic()
    was_training = generator.training
    generator.eval()
    predictor = make_predictor(generator, device, amp_dtype)
    per_case: dict[str, dict[str, float]] = {}
    first_sct: np.ndarray | None = None
    try:
        for volume in volumes:
            sct_hu = predict_volume(volume, predictor, config)
            if first_sct is None:
                first_sct = sct_hu
            metrics = compute_metrics(volume.ct_hu, sct_hu.astype(np.float32), volume.mask,
                                      variant=config.validation.metrics_variant)
            per_case[volume.case_id] = {key: float(value) for key, value in metrics.items()}
            volume.release()  # one case's pages resident at a time: memory does not grow with the case count
    finally:
        generator.train(was_training)
    keys = list(next(iter(per_case.values())).keys()) if per_case else []
    aggregates = {key: aggregate(case[key] for case in per_case.values()) for key in keys}
    mean = {key: _mean_of(aggregates[key], key) for key in keys}
    return ValidationResult(per_case, mean, aggregates, time.monotonic() - started, first_sct)


def _mean_of(summary: dict[str, float | int | None], key: str) -> float:
    """The mean of one metric's :func:`aggregate` summary; every case has every metric, so it is never None."""
    mean = summary["mean"]
    if mean is None:
        raise ValueError(f"validation metric {key!r} has no value in any case")
    return float(mean)


def slice_grid(mr_normalised: np.ndarray, sct_hu: np.ndarray, ct_hu: np.ndarray,
               window_hu: tuple[float, float] = (-1000.0, 1500.0)) -> np.ndarray:
    """An image (3, H, 3·W) in [0, 1] of the middle axial slice: MR | sCT | CT (CTs windowed to ``window_hu``)."""
    z = mr_normalised.shape[0] // 2
    low, high = window_hu
    mr = (np.clip(mr_normalised[z], -1.0, 1.0) + 1.0) / 2.0
    sct = np.clip((sct_hu[z].astype(np.float32) - low) / (high - low), 0.0, 1.0)
    ct = np.clip((ct_hu[z].astype(np.float32) - low) / (high - low), 0.0, 1.0)
    row = np.concatenate([mr, sct, ct], axis=1).astype(np.float32)
    return np.repeat(row[None], 3, axis=0)
