"""Parity of an exported model with PyTorch eager, reported in HU.

Inputs are normalised MR patches (N, 1, pz, py, px) float32: uniform random noise in [-1, 1], and "real-data"
patches centred on body voxels of a case — from a dataset (``--data`` or the checkpoint's ``data.root``), else a
generated phantom (:func:`synthct.phantom.generate_case`), else a smooth random body. Output differences are
converted to HU with the CT scale (1 normalised unit = 2012 HU, :mod:`synthct.intensity`). Every export fails when
the largest absolute difference exceeds the tolerance (0.5 HU by default) or any output is NaN/inf.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from synthct.export.errors import ExportError

from synthct.intensity import HU_MAX, HU_MIN, MrRule, apply_mr_statistics, mr_statistics, normalised_background

if TYPE_CHECKING:  # torch only where the export runs
    import torch

log = logging.getLogger("synthct.export")

HU_PER_UNIT = (HU_MAX - HU_MIN) / 2.0
"""HU per unit of normalised CT (2012)."""
DEFAULT_TOLERANCE_HU = 0.5
"""Largest |ONNX Runtime − PyTorch| allowed, HU."""
Predict = Callable[[np.ndarray], np.ndarray]


@dataclass
class ParityInputs:
    """Patches to compare on. ``random``: (R, 1, *patch) in [-1, 1]; ``data``: (D, 1, *patch) normalised MR with
    ``data_masks`` (D, 1, *patch) bool body masks; ``data_source`` says where the data patches came from."""

    random: np.ndarray
    data: np.ndarray
    data_masks: np.ndarray
    data_source: str

    def all(self) -> np.ndarray:
        """Random then data patches, one batch."""
        return np.concatenate([self.random, self.data]).astype(np.float32, copy=False)


def random_patches(patch_size: Sequence[int], count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` patches of uniform noise in [-1, 1], (count, 1, *patch) float32."""
    return rng.uniform(-1.0, 1.0, (count, 1, *patch_size)).astype(np.float32)


def crop_patches(mr_normalised: np.ndarray, mask: np.ndarray, patch_size: Sequence[int], count: int,
                 rng: np.random.Generator, pad_value: float = -1.0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` windows of ``patch_size`` centred (as far as the borders allow) on random body voxels of a
    (z, y, x) volume padded to at least the patch with ``pad_value`` (the case's normalised MR 0, air:
    :func:`synthct.intensity.normalised_background`). Returns (patches, masks), (count, 1, *patch)."""
    patch = np.asarray(patch_size, dtype=int)
    pad = [(max(p - s, 0) // 2, max(p - s, 0) - max(p - s, 0) // 2) for s, p in zip(mask.shape, patch, strict=True)]
    volume = np.pad(mr_normalised.astype(np.float32, copy=False), pad, constant_values=np.float32(pad_value))
    body = np.pad(mask > 0, pad, constant_values=False)
    inside = np.argwhere(body)
    if inside.size == 0:
        raise ExportError("the body mask of the parity case is empty")
    patches, masks = [], []
    for centre in inside[rng.integers(0, len(inside), count)]:
        start = np.clip(centre - patch // 2, 0, np.asarray(volume.shape) - patch)
        window = tuple(slice(int(s), int(s + p)) for s, p in zip(start, patch, strict=True))
        patches.append(volume[window][None])
        masks.append(body[window][None])
    return np.stack(patches).astype(np.float32), np.stack(masks)


def smooth_body(patch_size: Sequence[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random "MR" (positive, textured) in an ellipsoid body, (z, y, x) 1.5 × the patch: the fallback."""
    from scipy.ndimage import gaussian_filter

    shape = tuple(int(p * 1.5) for p in patch_size)
    grid = np.indices(shape, dtype=np.float32)
    radius = sum(((g - (n - 1) / 2) / (0.45 * n)) ** 2 for g, n in zip(grid, shape, strict=True))
    mask = (radius < 1.0).astype(np.uint8)
    field = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=4.0)
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-6)
    mr = np.where(mask > 0, 200.0 + 800.0 * field + rng.normal(0.0, 20.0, shape), 0.0)
    return np.clip(mr, 0.0, None).astype(np.float32), mask


def _dataset_volumes(root: Path, region: str, count: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    from synthct.dataset import DatasetError, find_cases, load_case

    try:
        cases = find_cases(root, region=region, require_ct=False)[: max(count, 1)]
        loaded = [load_case(case) for case in cases]
    except (DatasetError, ValueError, OSError) as exc:
        raise ExportError(f"{root}: cannot read parity cases for region {region!r}: {exc}") from exc
    return [(f"{case.case_id}", case.mr, case.mask) for case in loaded]


def _phantom_volume(region: str, seed: int) -> tuple[str, np.ndarray, np.ndarray] | None:
    try:
        import SimpleITK as sitk

        from synthct.phantom import REGIONS as PHANTOM_REGIONS
        from synthct.phantom import generate_case
    except ImportError as exc:
        log.info("phantom generator not available (%s): parity uses a smooth random body", exc)
        return None
    phantom_region = region if region in PHANTOM_REGIONS else "brain"
    mr, _ct, mask = generate_case(phantom_region, seed, "small")
    return (f"phantom {phantom_region} seed {seed}", sitk.GetArrayFromImage(mr).astype(np.float32),
            sitk.GetArrayFromImage(mask).astype(np.uint8))


def data_patches(patch_size: Sequence[int], count: int, region: str, mr_rule: MrRule, mr_percentile: float,
                 rng: np.random.Generator, data_dir: str | os.PathLike[str] | None = None,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """``count`` normalised MR patches with their masks from ``data_dir`` (a dataset folder), else a phantom,
    else a smooth random body; MR normalised with the model's rule. Returns (patches, masks, source)."""
    if count <= 0:
        empty = np.zeros((0, 1, *patch_size), np.float32)
        return empty, empty.astype(bool), "none"
    if data_dir is not None:
        volumes = _dataset_volumes(Path(data_dir), region, count)
        source = f"dataset {Path(data_dir)} ({', '.join(v[0] for v in volumes)})"
    else:
        phantom = _phantom_volume(region, seed)
        volumes = [phantom] if phantom else [("smooth random body", *smooth_body(patch_size, rng))]
        source = volumes[0][0]
    patches, masks = [], []
    for index in range(count):
        name, mr, mask = volumes[index % len(volumes)]
        try:
            statistics = mr_statistics(mr, mask, mr_rule, mr_percentile)
        except ValueError as exc:
            raise ExportError(f"parity case {name}: {exc}") from exc
        patch, patch_mask = crop_patches(apply_mr_statistics(mr, statistics), mask, patch_size, 1, rng,
                                         normalised_background(statistics))
        patches.append(patch)
        masks.append(patch_mask)
    return np.concatenate(patches), np.concatenate(masks), source


def make_inputs(patch_size: Sequence[int], region: str, mr_rule: MrRule, mr_percentile: float, n_random: int = 2,
                n_data: int = 2, data_dir: str | os.PathLike[str] | None = None, seed: int = 0) -> ParityInputs:
    """The parity patches (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    random = random_patches(patch_size, n_random, rng)
    data, masks, source = data_patches(patch_size, n_data, region, mr_rule, mr_percentile, rng, data_dir, seed)
    return ParityInputs(random, data, masks, source)


def torch_predictor(generator: torch.nn.Module, chunk: int = 2) -> Predict:
    """PyTorch eager fp32 on the CPU as a numpy predictor (batches run ``chunk`` patches at a time)."""
    import torch

    def predict(batch: np.ndarray) -> np.ndarray:
        outputs = []
        with torch.no_grad():
            for first in range(0, len(batch), chunk):
                outputs.append(generator(torch.from_numpy(np.ascontiguousarray(batch[first:first + chunk]))).numpy())
        return np.concatenate(outputs).astype(np.float32, copy=False)

    return predict


def ort_session(path: str | os.PathLike[str], threads: int | None = None, optimisation: str = "all") -> Any:
    """A CPU ONNX Runtime session configured as the algorithm's (all online optimisations, no CPU arena)."""
    import onnxruntime as ort

    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[optimisation]
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ExportError(f"{path}: ONNX Runtime cannot load the model ({exc})") from exc


def ort_predictor(session: Any, chunk: int = 2, input_name: str = "mr", output_name: str = "sct") -> Predict:
    """An ONNX Runtime session as a numpy predictor (``chunk`` patches per run: checks the dynamic batch too)."""

    def predict(batch: np.ndarray) -> np.ndarray:
        outputs = [session.run([output_name], {input_name: np.ascontiguousarray(batch[i:i + chunk])})[0]
                   for i in range(0, len(batch), chunk)]
        return np.concatenate(outputs).astype(np.float32, copy=False)

    return predict


def difference_hu(reference: np.ndarray, candidate: np.ndarray, mask: np.ndarray | None = None) -> dict[str, Any]:
    """|candidate − reference| in HU (normalised difference × 2012): max, mean, 99th percentile over the patches,
    and the mean inside ``mask`` when given. Non-finite outputs give ``finite: False`` and infinite figures as None."""
    if reference.shape != candidate.shape:
        raise ExportError(f"parity: output shape {candidate.shape} differs from the reference's {reference.shape}")
    finite = bool(np.isfinite(reference).all() and np.isfinite(candidate).all())
    if reference.size == 0:
        return {"patches": 0, "finite": True, "max_abs_hu": 0.0, "mean_abs_hu": 0.0, "p99_abs_hu": 0.0}
    if not finite:
        return {"patches": int(reference.shape[0]), "finite": False, "max_abs_hu": None, "mean_abs_hu": None,
                "p99_abs_hu": None}
    diff = np.abs(candidate.astype(np.float64) - reference.astype(np.float64)) * HU_PER_UNIT
    report: dict[str, Any] = {"patches": int(reference.shape[0]), "finite": True, "max_abs_hu": float(diff.max()),
                              "mean_abs_hu": float(diff.mean()), "p99_abs_hu": float(np.percentile(diff, 99))}
    if mask is not None and mask.any():
        report["mean_abs_hu_in_mask"] = float(diff[mask].mean())
        report["max_abs_hu_in_mask"] = float(diff[mask].max())
    return report


def compare(inputs: ParityInputs, reference: np.ndarray, candidate: np.ndarray,
            tolerance_hu: float = DEFAULT_TOLERANCE_HU) -> dict[str, Any]:
    """Parity report of ``candidate`` against ``reference`` outputs of ``inputs.all()``, split random/data."""
    n_random = len(inputs.random)
    random = difference_hu(reference[:n_random], candidate[:n_random])
    data = difference_hu(reference[n_random:], candidate[n_random:], inputs.data_masks)
    finite = random["finite"] and data["finite"]
    worst = max(random["max_abs_hu"] or 0.0, data["max_abs_hu"] or 0.0) if finite else None
    return {"tolerance_hu": float(tolerance_hu), "max_abs_hu": worst, "finite": finite,
            "passed": bool(finite and worst is not None and worst <= tolerance_hu),
            "random": random, "data": data, "data_source": inputs.data_source}


def require_parity(report: dict[str, Any], what: str) -> None:
    """Raise :class:`ExportError` unless ``report`` passed."""
    if report["passed"]:
        return
    if not report["finite"]:
        raise ExportError(f"{what}: parity failed: NaN or infinite outputs")
    raise ExportError(f"{what}: parity failed: max |difference| {report['max_abs_hu']:.3f} HU > tolerance "
                      f"{report['tolerance_hu']} HU (random patches {report['random']['max_abs_hu']:.3f}, "
                      f"data patches {report['data']['max_abs_hu']:.3f} HU)")
