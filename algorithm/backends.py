"""Runtime backends: a model package's network as a numpy callable (B, 1, pz, py, px) float32 → same shape.

ONNX Runtime (CPU, or CUDA with ``onnxruntime-gpu``) always works; TensorRT 10.x is used only where the package
carries an engine and ``tensorrt`` + ``cuda-python`` + a GPU exist. Every model file is read once into memory and
its sha256 checked against the (already verified) manifest before it is handed to a runtime, so a file swapped
after verification is never executed. No torch here.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from synthct.model_package import ModelPackage, ModelPackageError

Device = Literal["auto", "cpu", "cuda"]
Backend = Literal["auto", "onnxruntime", "tensorrt"]

log = logging.getLogger(__name__)


class BackendUnavailable(RuntimeError):
    """The requested backend or device cannot run here; the message says what is missing."""


class Predictor(Protocol):
    """A network over batches of normalised MR patches; ``description`` names backend and device actually used."""

    description: str
    max_batch: int | None

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def read_verified(path: Path, sha256: str) -> bytes:
    """The bytes of ``path``, refused unless their sha256 equals the manifest's ``sha256``."""
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ModelPackageError(f"{path}: sha256 {actual[:16]}… does not match the manifest's {sha256[:16]}…")
    return data


def _run_in_chunks(batch: np.ndarray, max_batch: int | None, fixed: bool, run: Any) -> np.ndarray:
    """Apply ``run`` on slices of at most ``max_batch`` items (padded to exactly ``max_batch`` when ``fixed``)."""
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if batch.ndim != 5 or batch.shape[1] != 1:
        raise ValueError(f"expected a batch (B, 1, z, y, x), got shape {batch.shape}")
    size = max_batch or batch.shape[0]
    outputs = []
    for first in range(0, batch.shape[0], size):
        chunk = batch[first : first + size]
        count = chunk.shape[0]
        if fixed and count < size:
            chunk = np.concatenate([chunk, np.zeros((size - count, *chunk.shape[1:]), np.float32)])
        outputs.append(np.asarray(run(chunk), dtype=np.float32)[:count])
    return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)


class OnnxRuntimePredictor:
    """ONNX Runtime session over the package's ``model.onnx``; CUDA execution provider when asked or available.

    ``device="auto"`` uses CUDA if this onnxruntime build offers it and it really starts (checked with
    ``session.get_providers()``: ``onnxruntime-gpu`` lists CUDA even on a machine without a GPU), else CPU.
    ``device="cuda"`` fails with :class:`BackendUnavailable` instead of falling back.
    """

    def __init__(
        self, package: ModelPackage, device: Device = "auto", threads: int | None = None, cpu_batch: int = 1
    ) -> None:
        import onnxruntime as ort

        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"unknown device {device!r} (expected auto, cpu or cuda)")
        available = ort.get_available_providers()
        want_cuda = device == "cuda" or (device == "auto" and "CUDAExecutionProvider" in available)
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise BackendUnavailable(
                f"device 'cuda' requested but this onnxruntime ({ort.__version__}) has no CUDA execution provider "
                f"(available: {available}); install onnxruntime-gpu instead of onnxruntime"
            )
        if want_cuda and hasattr(ort, "preload_dlls"):
            try:  # CUDA/cuDNN from the pip nvidia-* wheels (onnxruntime-gpu[cuda,cudnn])
                ort.preload_dlls()
            except Exception as exc:  # a missing library shows up below as a CPU-only session
                log.debug("onnxruntime.preload_dlls failed: %s", exc)

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # No CPU arena: it keeps the high-water mark of every batch shape and grows across calls (SwinUNETR 64³,
        # batch 4: 3.5 GB after two calls vs 2 GB without it) — too much for a 4 GB container.
        options.enable_cpu_mem_arena = False
        if threads:
            options.intra_op_num_threads = int(threads)
        providers: list[Any] = ["CPUExecutionProvider"]
        if want_cuda:
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": 0}))

        onnx_entry = package.manifest["onnx"]
        if onnx_entry.get("external_data"):
            # weights beside the graph: ORT must open the files itself; both hashes were verified on load
            read_verified(package.onnx_path, onnx_entry["sha256"])
            model: bytes | str = str(package.onnx_path)
        else:
            model = read_verified(package.onnx_path, onnx_entry["sha256"])
        try:
            self.session = ort.InferenceSession(model, sess_options=options, providers=providers)
        except Exception as exc:
            if not want_cuda or device == "cuda":
                raise BackendUnavailable(f"{package.onnx_path}: ONNX Runtime cannot load the model ({exc})") from exc
            log.warning("ONNX Runtime CUDA session failed (%s); using the CPU", exc)
            self.session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        del model
        used = self.session.get_providers()
        self.on_cuda = "CUDAExecutionProvider" in used
        if device == "cuda" and not self.on_cuda:
            raise BackendUnavailable(
                f"device 'cuda' requested but ONNX Runtime could not start its CUDA provider (session uses {used}); "
                "is a GPU visible and are the CUDA 12 / cuDNN 9 libraries installed?"
            )
        if want_cuda and not self.on_cuda:
            log.warning("CUDA execution provider listed but not usable here (session uses %s): running on CPU", used)

        self.input_name, self.output_name = package.input_name, package.output_name
        inputs = {node.name: node for node in self.session.get_inputs()}
        outputs = {node.name for node in self.session.get_outputs()}
        if self.input_name not in inputs or self.output_name not in outputs:
            raise ModelPackageError(
                f"{package.onnx_path}: graph has inputs {sorted(inputs)} and outputs {sorted(outputs)}, the manifest "
                f"names {self.input_name!r} → {self.output_name!r}"
            )
        shape = inputs[self.input_name].shape
        expected_spatial = [1, *package.patch_size]
        if len(shape) != 5 or any(isinstance(d, int) and d != e for d, e in zip(shape[1:], expected_spatial,
                                                                                strict=True)):
            raise ModelPackageError(
                f"{package.onnx_path}: input {self.input_name!r} has shape {shape}, expected (N, {expected_spatial})"
            )
        self.fixed_batch = isinstance(shape[0], int)
        self.max_batch: int | None = int(shape[0]) if self.fixed_batch else None
        # On the CPU a batch is no faster than its windows one by one, but its activations (≈ 0.4 GB per 64³
        # window for SwinUNETR feature_size 24) add up: run at most ``cpu_batch`` windows per call there.
        self._chunk = self.max_batch if self.fixed_batch else (None if self.on_cuda else max(int(cpu_batch), 1))
        provider = "CUDA" if self.on_cuda else "CPU"
        self.description = f"onnxruntime {ort.__version__} ({provider})"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        def run(chunk: np.ndarray) -> np.ndarray:
            return self.session.run([self.output_name], {self.input_name: chunk})[0]

        return _run_in_chunks(batch, self._chunk, self.fixed_batch, run)


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python ≥ 12.6
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]  # older cuda-python
        except ImportError as exc:
            raise BackendUnavailable(
                "the TensorRT backend needs `cuda-python` (pip install cuda-python) for GPU memory"
            ) from exc
    return cudart


def _cuda_check(result: Any, what: str, cudart: Any) -> Any:
    """cuda-python returns ``(error, *values)``: raise on error, return the value(s)."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if error != cudart.cudaError_t.cudaSuccess:
        raise BackendUnavailable(f"CUDA call {what} failed: {error}")
    return values[0] if len(values) == 1 else values


class TensorRTPredictor:
    """A TensorRT 10.x engine (``model.plan``) from the package, on CUDA device 0, via ``cuda-python``.

    Raises :class:`BackendUnavailable` when ``tensorrt``, ``cuda-python`` or a GPU is missing, when the package has
    no engine, or when the engine was built by another TensorRT version or for another GPU.
    """

    def __init__(self, package: ModelPackage) -> None:
        entry = package.manifest.get("tensorrt")
        if not entry:
            raise BackendUnavailable(f"{package.directory}: the model package has no TensorRT engine")
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BackendUnavailable("the TensorRT backend needs the `tensorrt` package (10.x)") from exc
        version = str(trt.__version__)
        if version.split(".")[0] != "10":
            raise BackendUnavailable(f"TensorRT {version} installed; this backend targets TensorRT 10.x")
        built_with = str(entry.get("tensorrt_version") or "")
        if built_with and built_with.split(".")[:2] != version.split(".")[:2]:
            raise BackendUnavailable(
                f"engine built with TensorRT {built_with}, runtime is {version}: engines do not move across versions"
            )
        cudart = _import_cudart()
        self._cudart = cudart
        count = _cuda_check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount", cudart)
        if not count:
            raise BackendUnavailable("no CUDA GPU visible")

        assert package.tensorrt_path is not None
        plan = read_verified(package.tensorrt_path, entry["sha256"])
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        del plan
        if self._engine is None:
            raise BackendUnavailable(
                f"{package.tensorrt_path}: TensorRT cannot load this engine (built for another GPU or version?)"
            )
        self._context = self._engine.create_execution_context()
        self.input_name, self.output_name = package.input_name, package.output_name
        names = {self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)}
        if {self.input_name, self.output_name} - names:
            raise ModelPackageError(f"{package.tensorrt_path}: engine tensors {sorted(names)} lack "
                                    f"{self.input_name!r} or {self.output_name!r}")
        profile_max = tuple(self._engine.get_tensor_profile_shape(self.input_name, 0)[2])
        self.max_batch = min(int(profile_max[0]), int(entry.get("max_batch") or profile_max[0]))
        self._patch = package.patch_size
        self._in_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self.input_name)))
        self._out_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self.output_name)))
        voxels = self.max_batch * int(np.prod(self._patch))
        self._stream = _cuda_check(cudart.cudaStreamCreate(), "cudaStreamCreate", cudart)
        self._d_in = _cuda_check(cudart.cudaMalloc(voxels * self._in_dtype.itemsize), "cudaMalloc", cudart)
        self._d_out = _cuda_check(cudart.cudaMalloc(voxels * self._out_dtype.itemsize), "cudaMalloc", cudart)
        self.description = f"tensorrt {version} ({entry.get('precision', '?')}, CUDA)"

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        host_in = np.ascontiguousarray(chunk, dtype=self._in_dtype)
        self._context.set_input_shape(self.input_name, host_in.shape)
        self._context.set_tensor_address(self.input_name, int(self._d_in))
        self._context.set_tensor_address(self.output_name, int(self._d_out))
        host_out = np.empty(tuple(self._context.get_tensor_shape(self.output_name)), dtype=self._out_dtype)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _cuda_check(cudart.cudaMemcpyAsync(self._d_in, host_in.ctypes.data, host_in.nbytes, h2d, self._stream),
                    "cudaMemcpyAsync", cudart)
        if not self._context.execute_async_v3(int(self._stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        _cuda_check(cudart.cudaMemcpyAsync(host_out.ctypes.data, self._d_out, host_out.nbytes, d2h, self._stream),
                    "cudaMemcpyAsync", cudart)
        _cuda_check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize", cudart)
        return host_out.astype(np.float32, copy=False)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return _run_in_chunks(batch, self.max_batch, False, self._run)

    def close(self) -> None:
        """Free the GPU buffers and the stream (also on garbage collection)."""
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        for name in ("_d_in", "_d_out"):
            pointer = getattr(self, name, None)
            if pointer is not None:
                cudart.cudaFree(pointer)
                setattr(self, name, None)
        if getattr(self, "_stream", None) is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: nothing left to free
            self.close()


def tensorrt_usable(package: ModelPackage) -> str | None:
    """``None`` if the TensorRT backend could be tried for ``package``, else why not (cheap checks only)."""
    if not package.manifest.get("tensorrt"):
        return "the model package has no TensorRT engine"
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed"
    return None


def make_predictor(
    package: ModelPackage, backend: Backend = "auto", device: Device = "auto", threads: int | None = None
) -> Predictor:
    """The predictor for ``package``.

    ``backend="auto"``: TensorRT if the package has an engine and TensorRT, cuda-python and a GPU work (unless
    ``device="cpu"``), else ONNX Runtime on CUDA if usable, else ONNX Runtime on the CPU.
    """
    if backend not in ("auto", "onnxruntime", "tensorrt"):
        raise ValueError(f"unknown backend {backend!r} (expected auto, onnxruntime or tensorrt)")
    if backend == "tensorrt":
        if device == "cpu":
            raise BackendUnavailable("the TensorRT backend runs on a GPU only (device 'cpu' requested)")
        return TensorRTPredictor(package)
    if backend == "auto" and device != "cpu":
        reason = tensorrt_usable(package)
        if reason is None:
            try:
                return TensorRTPredictor(package)
            except BackendUnavailable as exc:
                log.warning("TensorRT backend not usable (%s); using ONNX Runtime", exc)
        else:
            log.debug("TensorRT backend skipped: %s", reason)
    return OnnxRuntimePredictor(package, device=device, threads=threads)
