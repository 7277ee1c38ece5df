"""TensorRT 10.x engine for the model package, where TensorRT and an NVIDIA GPU exist (SPEC §8).

``tensorrt`` is imported only here and only when asked for; everything else in the export works without it. The
engine: explicit batch, one optimisation profile on input ``mr`` for batch 1…``max_batch`` (optimum at
``max_batch``: the algorithm fills its batches), FP16 with the normalisation layers (LayerNorm of the Swin blocks,
InstanceNorm of the encoder/decoder blocks) kept in FP32 — they overflow or lose precision first in half precision.
It is built from an export with native ONNX ``InstanceNormalization``: the per-axis decomposition of
:mod:`synthct.export.accurate_norm` helps ONNX Runtime's CPU kernels, but its reductions could not be pinned to FP32
here.
TensorRT 11 removed ``BuilderFlag.FP16``: this code targets 10.x and refuses other majors. An engine is tied to its
TensorRT version and GPU: both are recorded in the manifest entry. Parity is measured against ONNX Runtime fp32
(CPU) in HU.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from synthct.export.errors import ExportError
from synthct.export.onnx_export import INPUT_NAME, OUTPUT_NAME
from synthct.export.parity import ParityInputs, difference_hu

log = logging.getLogger("synthct.export")

PLAN_NAME = "model.plan"
SUPPORTED_MAJOR = 10
PRECISIONS = ("fp16", "fp32")
DEFAULT_TOLERANCE_HU = 5.0
"""Largest mean |TensorRT − ONNX Runtime fp32| allowed inside the body (data patches) and over random patches, HU."""
NOT_INSTALLED = ("TensorRT is not installed: pip install tensorrt-cu12 (TensorRT 10.x; the PyPI package downloads "
                 "from NVIDIA's index) on a machine with an NVIDIA GPU and a CUDA build of PyTorch, then rerun with "
                 "--trt. The ONNX model package works without TensorRT (drop --trt).")


class TensorRTUnavailable(ExportError):
    """TensorRT, its version, or a GPU is missing: the message says what to install or where to run."""


def check_version(version: str) -> None:
    """Accept TensorRT 10.x only (11 removed the FP16 builder flag; 8/9 lack the 10.x tensor API)."""
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        raise TensorRTUnavailable(f"cannot read the TensorRT version {version!r}") from None
    if major != SUPPORTED_MAJOR:
        hint = " (TensorRT 11 removed BuilderFlag.FP16)" if major > SUPPORTED_MAJOR else ""
        raise TensorRTUnavailable(f"TensorRT {version} is installed; this exporter targets TensorRT "
                                  f"{SUPPORTED_MAJOR}.x{hint}: pip install 'tensorrt-cu12>=10,<11'")


def import_tensorrt() -> ModuleType:
    """``tensorrt`` (10.x) or :class:`TensorRTUnavailable` with installation advice."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailable(NOT_INSTALLED) from exc
    check_version(str(getattr(trt, "__version__", "?")))
    return trt


def require_tensorrt() -> ModuleType:
    """TensorRT 10.x plus a CUDA GPU visible to PyTorch (used for the engine's parity run); fails early and clearly."""
    trt = import_tensorrt()
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailable(
            "TensorRT is installed but no CUDA GPU is visible to PyTorch (torch "
            f"{torch.__version__}, CUDA build: {torch.version.cuda is not None}): build engines on a machine with an "
            "NVIDIA GPU and a CUDA build of PyTorch")
    return trt


def profile_shapes(patch_size: Sequence[int], max_batch: int) -> tuple[tuple[int, ...], tuple[int, ...],
                                                                           tuple[int, ...]]:
    """(min, opt, max) shapes of input ``mr`` for the optimisation profile: batch 1, ``max_batch``, ``max_batch``."""
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ExportError(f"max batch must be a positive integer, got {max_batch!r}")
    patch = tuple(int(v) for v in patch_size)
    if len(patch) != 3 or any(v <= 0 for v in patch):
        raise ExportError(f"patch size must be 3 positive integers (z, y, x), got {patch_size!r}")
    return (1, 1, *patch), (max_batch, 1, *patch), (max_batch, 1, *patch)


def _keep_normalisation_fp32(trt: ModuleType, network: Any, config: Any) -> int:
    """Pin normalisation layers to FP32 (preferred precision constraint); returns how many were pinned."""
    flag = getattr(trt.BuilderFlag, "PREFER_PRECISION_CONSTRAINTS", None)
    layer_type = getattr(trt.LayerType, "NORMALIZATION", None)
    if flag is None or layer_type is None:
        log.warning("this TensorRT has no precision constraints: normalisation layers may run in FP16")
        return 0
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.type == layer_type:
            layer.precision = trt.float32
            for output in range(layer.num_outputs):
                layer.set_output_type(output, trt.float32)
            pinned += 1
    if pinned:
        config.set_flag(flag)
    return pinned


def build_engine(trt: ModuleType, onnx_path: Path, plan_path: Path, patch_size: Sequence[int], max_batch: int,
                 precision: str = "fp16", workspace_gib: float = 4.0) -> dict[str, Any]:
    """Parse ``onnx_path`` (external data beside it is found by TensorRT), build and write the serialised engine
    to ``plan_path``. Returns build facts for the manifest (version, profile, seconds, pinned FP32 layers)."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown TensorRT precision {precision!r} (expected one of {PRECISIONS})")
    shapes = profile_shapes(patch_size, max_batch)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if builder is None:
        raise TensorRTUnavailable("TensorRT could not create a builder: is an NVIDIA GPU visible?")
    network = builder.create_network(0)  # explicit batch: the only mode of TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{onnx_path}: TensorRT cannot parse the ONNX graph: {errors or 'no details'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    pinned = 0
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        pinned = _keep_normalisation_fp32(trt, network, config)
    elif hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32, not TF32 matmuls
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *shapes)
    config.add_optimization_profile(profile)
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if serialized is None:
        raise ExportError(f"{onnx_path}: TensorRT failed to build an engine (see the TensorRT log above)")
    plan_path.write_bytes(bytes(serialized))
    return {"tensorrt_version": str(trt.__version__), "precision": precision, "max_batch": int(max_batch),
            "profile": {"min": list(shapes[0]), "opt": list(shapes[1]), "max": list(shapes[2])},
            "fp32_normalisation_layers": pinned, "build_s": round(seconds, 2), "workspace_gib": workspace_gib}


class EngineRunner:
    """A deserialised engine on CUDA device 0 as a numpy predictor: (N, 1, z, y, x) float32 → same shape, run
    ``max_batch`` at a time with PyTorch CUDA tensors as buffers (host copies included, as in the algorithm)."""

    def __init__(self, trt: ModuleType, plan: bytes, max_batch: int) -> None:
        import torch

        self._torch = torch
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise ExportError("TensorRT cannot deserialise the engine (built for another GPU or version?)")
        self.context = self.engine.create_execution_context()
        self.max_batch = int(max_batch)
        to_torch = {np.dtype(np.float32): torch.float32, np.dtype(np.float16): torch.float16}
        self._dtypes = {name: to_torch[np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))]
                        for name in (INPUT_NAME, OUTPUT_NAME)}
        self._stream = torch.cuda.Stream()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        outputs = []
        with torch.cuda.stream(self._stream):
            for first in range(0, len(batch), self.max_batch):
                chunk = torch.from_numpy(np.ascontiguousarray(batch[first:first + self.max_batch], np.float32))
                chunk = chunk.cuda().to(self._dtypes[INPUT_NAME])
                self.context.set_input_shape(INPUT_NAME, tuple(chunk.shape))
                result = torch.empty(tuple(self.context.get_tensor_shape(OUTPUT_NAME)),
                                     dtype=self._dtypes[OUTPUT_NAME], device="cuda")
                self.context.set_tensor_address(INPUT_NAME, int(chunk.data_ptr()))
                self.context.set_tensor_address(OUTPUT_NAME, int(result.data_ptr()))
                if not self.context.execute_async_v3(self._stream.cuda_stream):
                    raise ExportError("TensorRT execute_async_v3 failed")
                self._stream.synchronize()
                outputs.append(result.float().cpu().numpy())
        return np.concatenate(outputs)


def run_engine(trt: ModuleType, plan: bytes, batch: np.ndarray, max_batch: int) -> np.ndarray:
    """Run a serialised engine once on ``batch`` (see :class:`EngineRunner`)."""
    return EngineRunner(trt, plan, max_batch)(batch)


def gpu_description() -> dict[str, Any]:
    """Name and compute capability of CUDA device 0 (engines only run on the GPU family they were built for)."""
    import torch

    properties = torch.cuda.get_device_properties(0)
    return {"gpu": str(properties.name), "compute_capability": f"{properties.major}.{properties.minor}"}


def engine_parity(inputs: ParityInputs, reference: np.ndarray, engine_output: np.ndarray,
                  tolerance_hu: float = DEFAULT_TOLERANCE_HU) -> dict[str, Any]:
    """TensorRT vs ONNX Runtime fp32 in HU: passes when outputs are finite and the mean |difference| is within
    ``tolerance_hu`` over the random patches and inside the body of the data patches."""
    n_random = len(inputs.random)
    random = difference_hu(reference[:n_random], engine_output[:n_random])
    data = difference_hu(reference[n_random:], engine_output[n_random:], inputs.data_masks)
    finite = bool(random["finite"] and data["finite"])
    means = [random["mean_abs_hu"], data.get("mean_abs_hu_in_mask", data["mean_abs_hu"])]
    passed = finite and all(m is not None and m <= tolerance_hu for m in means)
    return {"reference": "onnxruntime fp32 (CPU)", "tolerance_mean_hu": float(tolerance_hu), "finite": finite,
            "passed": bool(passed), "random": random, "data": data, "data_source": inputs.data_source}


def require_engine_parity(report: dict[str, Any], plan_path: Path) -> None:
    """Raise :class:`ExportError` unless the engine's parity report passed."""
    if report["passed"]:
        return
    if not report["finite"]:
        raise ExportError(f"{plan_path}: TensorRT outputs hold NaN/inf (FP16 overflow?): try --trt-precision fp32")
    raise ExportError(
        f"{plan_path}: TensorRT differs from ONNX Runtime fp32 by a mean of {report['random']['mean_abs_hu']:.2f} HU "
        f"(random) / {report['data'].get('mean_abs_hu_in_mask', report['data']['mean_abs_hu']):.2f} HU (body), "
        f"above {report['tolerance_mean_hu']} HU: try --trt-precision fp32 or raise --trt-tolerance-hu")
