"""Runtime backends: a model package's network as a numpy callable (B, 1, pz, py, px) float32 → same shape.

- ``onnxruntime``: ONNX Runtime fp32 (CPU, or CUDA with ``onnxruntime-gpu``) — the reference; always allowed.
- ``onnxruntime-fp16``: ONNX Runtime CUDA on the package's fp16 graph (``onnx_fp16``; GPU only).
- ``openvino`` / ``openvino-bf16``: OpenVINO on the CPU reading the package's ONNX, f32 or with the bf16
  inference-precision hint (only where the CPU has native bf16: ``avx512_bf16`` / ``amx_bf16``).
- ``tensorrt``: a TensorRT 10.x engine the package carries, where ``tensorrt`` + ``cuda-python`` + a GPU exist.

``backend="auto"`` takes the first usable of a fixed preference order (:func:`candidate_backends`): a backend
other than the fp32 reference is used by default only when the package's ``model.json`` records its measured
deviation from the fp32 sCT on validation phantoms as within the accuracy bound (written at export time). The choice
and every skipped backend are logged; ``predictor.selection`` says why the backend was chosen.

Every model file is read once into memory and its sha256 checked against the (already verified) manifest before it
is handed to a runtime, so a file swapped after verification is never executed. No torch here.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from synthct.algorithm.cpu import cpu_vendor, memory_limit_bytes, supports_bf16, usable_cpus

from synthct.model_package import ModelPackage, ModelPackageError

Device = Literal["auto", "cpu", "cuda"]
Backend = Literal["auto", "onnxruntime", "onnxruntime-fp16", "openvino", "openvino-bf16", "tensorrt"]
DEVICES: tuple[Device, ...] = ("auto", "cpu", "cuda")
BACKENDS: tuple[Backend, ...] = ("auto", "onnxruntime", "onnxruntime-fp16", "openvino", "openvino-bf16", "tensorrt")
REFERENCE_BACKEND = "onnxruntime"
CPU_PREFERENCE = ("openvino-bf16", "openvino", "onnxruntime")
"""Fastest first, as measured by benchmarks/bench_inference.py on a quiet 2-core AMD EPYC (Zen 4), fs24 package,
real-size brain phantom (run 3): OpenVINO bf16 56 s, OpenVINO f32 89 s, ONNX Runtime tuned 106 s (MONAI + PyTorch
285 s). On the same machine shared with other work (run 2) OpenVINO f32 fell behind ONNX Runtime (197 vs 127 s); the
order follows the quiet figures, the container's situation."""
GPU_PREFERENCE = ("tensorrt", "onnxruntime-fp16", "onnxruntime")
CUDNN_CONV_ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
ARENA_MIN_MEMORY_BYTES = 3 << 30
"""Below this cgroup memory limit the ONNX Runtime CPU arena is switched off (measured peak with it: see README)."""
OPENVINO_AMD_CRASH = ((2025, 3), (2026, 1))
"""OpenVINO versions (inclusive) whose ``compile_model`` dies with SIGFPE on AMD EPYC (openvino issue 35943)."""

log = logging.getLogger(__name__)


class BackendUnavailable(RuntimeError):
    """The requested backend or device cannot run here; the message says what is missing."""


class Predictor(Protocol):
    """A network over batches of normalised MR patches; ``description`` names backend and device actually used,
    ``selection`` why it was chosen."""

    description: str
    selection: str

    @property
    def max_batch(self) -> int | None:
        """Most patches per call (None: any)."""

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def read_verified(path: Path, sha256: str) -> bytes:
    """The bytes of ``path``, refused unless their sha256 equals the manifest's ``sha256``."""
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ModelPackageError(f"{path}: sha256 {actual[:16]}… does not match the manifest's {sha256[:16]}…")
    return data


def _run_in_chunks(batch: np.ndarray, max_batch: int | None, fixed: bool,
                   run: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
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


def cpu_arena_enabled(memory_limit: int | None) -> bool:
    """ONNX Runtime CPU arena on unless the cgroup memory limit is below :data:`ARENA_MIN_MEMORY_BYTES`.

    With one window per call the arena holds one window's activations (its high-water mark never grows across
    calls) and saves the allocations of every call (≈ 20 % per window, issue 10); larger batches made it hold
    3.5 GB. ``SYNTHCT_ORT_ARENA=0/1`` overrides.
    """
    forced = os.environ.get("SYNTHCT_ORT_ARENA", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return memory_limit is None or memory_limit >= ARENA_MIN_MEMORY_BYTES


def cuda_provider_options(conv_algo_search: str = "EXHAUSTIVE", cuda_graph: bool = False) -> dict[str, str]:
    """ONNX Runtime CUDA execution-provider options (``cudnn_conv_algo_search``, ``enable_cuda_graph``)."""
    if conv_algo_search not in CUDNN_CONV_ALGO_SEARCH:
        raise ValueError(f"cudnn_conv_algo_search must be one of {CUDNN_CONV_ALGO_SEARCH}, got {conv_algo_search!r}")
    return {"device_id": "0", "cudnn_conv_algo_search": conv_algo_search,
            "enable_cuda_graph": "1" if cuda_graph else "0"}


class OnnxRuntimePredictor:
    """ONNX Runtime session over the package's ``model.onnx`` (or its fp16 graph); CUDA when asked or available.

    ``device="auto"`` uses CUDA if this onnxruntime build offers it and it really starts (checked with
    ``session.get_providers()``: ``onnxruntime-gpu`` lists CUDA even on a machine without a GPU), else CPU.
    ``device="cuda"`` fails with :class:`BackendUnavailable` instead of falling back; so does ``fp16=True``
    (the fp16 graph is for the GPU only).

    CPU: threads default to :func:`synthct.algorithm.cpu.usable_cpus` (affinity and cgroup quota, not the host's cores),
    one window per call, CPU arena per :func:`cpu_arena_enabled`. CUDA: IO binding (outputs stay on the device until
    copied once), ``cudnn_conv_algo_search`` and, with ``cuda_graph_batch``, a CUDA graph captured for that fixed
    batch (inputs/outputs in preallocated device buffers; the last chunk is padded).
    """

    def __init__(
        self, package: ModelPackage, device: Device = "auto", threads: int | None = None, cpu_batch: int = 1,
        fp16: bool = False, conv_algo_search: str = "EXHAUSTIVE", cuda_graph_batch: int | None = None,
    ) -> None:
        import onnxruntime as ort

        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"unknown device {device!r} (expected auto, cpu or cuda)")
        if fp16 and device == "cpu":
            raise BackendUnavailable("the fp16 ONNX graph runs on CUDA only (device 'cpu' requested)")
        entry_name = "onnx_fp16" if fp16 else "onnx"
        onnx_entry = package.manifest.get(entry_name)
        if not onnx_entry:
            raise BackendUnavailable(f"{package.directory}: the model package has no fp16 ONNX graph")
        available = ort.get_available_providers()
        want_cuda = device == "cuda" or fp16 or (device == "auto" and "CUDAExecutionProvider" in available)
        if (device == "cuda" or fp16) and "CUDAExecutionProvider" not in available:
            raise BackendUnavailable(
                f"{'fp16 graph' if fp16 else 'device cuda'} requested but this onnxruntime ({ort.__version__}) has no "
                f"CUDA execution provider (available: {available}); install onnxruntime-gpu instead of onnxruntime"
            )
        if want_cuda and hasattr(ort, "preload_dlls"):
            try:  # CUDA/cuDNN from the pip nvidia-* wheels (onnxruntime-gpu[cuda,cudnn])
                ort.preload_dlls()
            except Exception as exc:  # a missing library shows up below as a CPU-only session
                log.debug("onnxruntime.preload_dlls failed: %s", exc)

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.threads = int(threads) if threads else usable_cpus()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        self.cpu_arena = cpu_arena_enabled(memory_limit_bytes())
        options.enable_cpu_mem_arena = self.cpu_arena
        providers: list[Any] = ["CPUExecutionProvider"]
        self.cuda_graph_batch = int(cuda_graph_batch) if cuda_graph_batch else None
        if want_cuda:
            providers.insert(0, ("CUDAExecutionProvider",
                                 cuda_provider_options(conv_algo_search, self.cuda_graph_batch is not None)))

        path = package.directory / onnx_entry["file"]
        if onnx_entry.get("external_data"):
            # weights beside the graph: ORT must open the files itself; both hashes were verified on load
            read_verified(path, onnx_entry["sha256"])
            model: bytes | str = str(path)
        else:
            model = read_verified(path, onnx_entry["sha256"])
        try:
            self.session = ort.InferenceSession(model, sess_options=options, providers=providers)
        except Exception as exc:
            if not want_cuda or device == "cuda" or fp16:
                raise BackendUnavailable(f"{path}: ONNX Runtime cannot load the model ({exc})") from exc
            log.warning("ONNX Runtime CUDA session failed (%s); using the CPU", exc)
            self.session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        del model
        used = self.session.get_providers()
        self.on_cuda = "CUDAExecutionProvider" in used
        if (device == "cuda" or fp16) and not self.on_cuda:
            raise BackendUnavailable(
                f"CUDA requested but ONNX Runtime could not start its CUDA provider (session uses {used}); "
                "is a GPU visible and are the CUDA 12 / cuDNN 9 libraries installed?"
            )
        if want_cuda and not self.on_cuda:
            log.warning("CUDA execution provider listed but not usable here (session uses %s): running on CPU", used)

        self.input_name, self.output_name = package.input_name, package.output_name
        inputs = {node.name: node for node in self.session.get_inputs()}
        outputs = {node.name for node in self.session.get_outputs()}
        if self.input_name not in inputs or self.output_name not in outputs:
            raise ModelPackageError(
                f"{path}: graph has inputs {sorted(inputs)} and outputs {sorted(outputs)}, the manifest "
                f"names {self.input_name!r} → {self.output_name!r}"
            )
        shape = inputs[self.input_name].shape
        expected_spatial = [1, *package.patch_size]
        if len(shape) != 5 or any(isinstance(d, int) and d != e for d, e in zip(shape[1:], expected_spatial,
                                                                                strict=True)):
            raise ModelPackageError(
                f"{path}: input {self.input_name!r} has shape {shape}, expected (N, {expected_spatial})"
            )
        self.fixed_batch = isinstance(shape[0], int) or (self.on_cuda and self.cuda_graph_batch is not None)
        fixed = int(shape[0]) if isinstance(shape[0], int) else self.cuda_graph_batch
        self.max_batch: int | None = fixed if self.fixed_batch else None
        # On the CPU a batch is no faster than its windows one by one, but its activations (≈ 0.4 GB per 64³
        # window for SwinUNETR feature_size 24) add up: run at most ``cpu_batch`` windows per call there.
        self._chunk = self.max_batch if self.fixed_batch else (None if self.on_cuda else max(int(cpu_batch), 1))
        self._patch = package.patch_size
        self._graph_buffers: tuple[Any, Any, Any] | None = None
        provider = "CUDA" if self.on_cuda else f"CPU, {self.threads} threads, arena {'on' if self.cpu_arena else 'off'}"
        self.name = "onnxruntime-fp16" if fp16 else "onnxruntime"
        self.description = f"{self.name} {ort.__version__} ({provider})"
        self.selection = "requested"

    def _run_cuda(self, chunk: np.ndarray) -> np.ndarray:
        """IO binding: host input copied once, output kept on the device until one copy back (CUDA graph: fixed
        device buffers updated in place, as the captured graph replays on the same addresses)."""
        import onnxruntime as ort

        if self.cuda_graph_batch is None:
            binding = self.session.io_binding()
            binding.bind_cpu_input(self.input_name, chunk)
            binding.bind_output(self.output_name, "cuda")
            self.session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[0]
        if self._graph_buffers is None:
            shape = (self.cuda_graph_batch, 1, *self._patch)
            device_in = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, "cuda", 0)
            device_out = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, "cuda", 0)
            binding = self.session.io_binding()
            binding.bind_ortvalue_input(self.input_name, device_in)
            binding.bind_ortvalue_output(self.output_name, device_out)
            self._graph_buffers = (device_in, device_out, binding)
        device_in, device_out, binding = self._graph_buffers
        device_in.update_inplace(np.ascontiguousarray(chunk, dtype=np.float32))
        self.session.run_with_iobinding(binding)
        return device_out.numpy()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        def run(chunk: np.ndarray) -> np.ndarray:
            if self.on_cuda:
                return self._run_cuda(chunk)
            return self.session.run([self.output_name], {self.input_name: chunk})[0]

        return _run_in_chunks(batch, self._chunk, self.fixed_batch, run)


def openvino_version_problem(version: str, vendor: str) -> str | None:
    """Why this OpenVINO ``version`` must not compile models on this CPU ``vendor`` (issue 35943), or None."""
    try:
        year, release = (int(part) for part in version.split(".")[:2])
    except ValueError:
        return None
    (low, high) = OPENVINO_AMD_CRASH
    if vendor == "AuthenticAMD" and low <= (year, release) <= high:
        return (f"OpenVINO {version} crashes in compile_model on AMD EPYC (SIGFPE, openvinotoolkit/openvino issue "
                "35943, versions 2025.3–2026.1): install another version (algorithm/requirements.txt pins one)")
    return None


_OPENVINO_CORE: list[Any] = []
_OPENVINO_CORE_LOCK = threading.Lock()


def openvino_core(ov: Any) -> Any:
    """The process's one ``ov.Core``, made on first use and kept until exit; every OpenVINO predictor compiles on it.

    Each ``ov.Core`` loads its own CPU plugin, and on Linux that plugin's constructor gives the calling thread a new
    alternate signal stack (``sigaltstack``, sized for AMX state) while its destructor unmaps that stack, restoring
    the one it found only if its own is still current. Two plugins released in the order they were made (A, B; A
    freed, then B) therefore leave the thread's alternate stack pointing at A's unmapped memory, and the next signal
    handled there (Python installs its handlers — SIGINT, SIGTERM, SIGCHLD, SIGALRM — with ``SA_ONSTACK``) kills the
    process with SIGSEGV or writes its frame into whatever has been mapped there since (OpenVINO 2026.4; this suite
    crashed so, in the pytest process, after a DataLoader's SIGCHLD handler and two predictors). One Core that is
    never released makes one plugin, and its stack stays valid (tests/test_backends.py).
    """
    with _OPENVINO_CORE_LOCK:
        if not _OPENVINO_CORE:
            _OPENVINO_CORE.append(ov.Core())
        return _OPENVINO_CORE[0]


class OpenVinoPredictor:
    """OpenVINO on the CPU, reading the package's ONNX (sha256-verified bytes) directly; ``precision`` f32 or bf16.

    The model is reshaped to a static batch of 1 (the CPU plugin's fastest form for a fixed 64³ window) and compiled
    with the LATENCY hint, one inference request, :func:`synthct.algorithm.cpu.usable_cpus` threads. ``bf16`` asks for
    the
    bf16 inference-precision hint and is refused on a CPU without native bf16 (``avx512_bf16`` / ``amx_bf16``), where
    OpenVINO would silently stay in f32 or emulate.
    """

    def __init__(self, package: ModelPackage, precision: str = "f32", threads: int | None = None) -> None:
        if precision not in ("f32", "bf16"):
            raise ValueError(f"OpenVINO precision must be 'f32' or 'bf16', got {precision!r}")
        try:
            from synthct.telemetry import import_openvino

            ov = import_openvino()  # its usage telemetry declined: nothing written under $HOME
        except ImportError as exc:
            raise BackendUnavailable("the OpenVINO backend needs the `openvino` package") from exc
        version = str(ov.__version__).split("-")[0]
        problem = openvino_version_problem(version, cpu_vendor())
        if problem:
            raise BackendUnavailable(problem)
        if precision == "bf16" and not supports_bf16():
            raise BackendUnavailable("this CPU has no native bf16 (avx512_bf16 / amx_bf16): OpenVINO bf16 not used")
        onnx_entry = package.manifest["onnx"]
        if onnx_entry.get("external_data"):
            read_verified(package.onnx_path, onnx_entry["sha256"])
            source: Any = str(package.onnx_path)  # weights beside the graph, both verified on load
        else:
            import io

            source = io.BytesIO(read_verified(package.onnx_path, onnx_entry["sha256"]))
        core = openvino_core(ov)
        try:
            model = core.read_model(source)
            input_port = next(p for p in model.inputs if package.input_name in p.get_names())
            model.reshape({input_port: [1, 1, *package.patch_size]})
            self.threads = int(threads) if threads else usable_cpus()
            config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": self.threads,
                      "INFERENCE_PRECISION_HINT": precision, "NUM_STREAMS": 1}
            self._compiled = core.compile_model(model, "CPU", config)
        except StopIteration as exc:
            raise ModelPackageError(f"{package.onnx_path}: no input named {package.input_name!r}") from exc
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise BackendUnavailable(f"{package.onnx_path}: OpenVINO cannot compile the model ({exc})") from exc
        del source, model
        actual = str(self._compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
        if not any(name in actual for name in {"f32": ("f32", "float32"), "bf16": ("bf16", "bfloat16")}[precision]):
            raise BackendUnavailable(f"OpenVINO compiled with precision {actual}, not the requested {precision}")
        self._request = self._compiled.create_infer_request()
        self._output = self._compiled.output(package.output_name)
        self.max_batch: int | None = 1
        self.name = "openvino-bf16" if precision == "bf16" else "openvino"
        self.description = f"{self.name} {version} (CPU, {precision}, {self.threads} threads)"
        self.selection = "requested"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        def run(chunk: np.ndarray) -> np.ndarray:
            result = self._request.infer({0: chunk})
            return np.array(result[self._output], dtype=np.float32, copy=True)

        return _run_in_chunks(batch, 1, False, run)


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python ≥ 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
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
        self.name = "tensorrt"
        self.description = f"tensorrt {version} ({entry.get('precision', '?')}, CUDA)"
        self.selection = "requested"

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


def accuracy_problem(package: ModelPackage, backend: str) -> str | None:
    """None if ``model.json`` records ``backend``'s deviation from the fp32 sCT as measured and within the bound,
    else why it may not be used by default. The fp32 reference needs no record."""
    if backend == REFERENCE_BACKEND:
        return None
    record = (package.manifest.get("backend_accuracy") or {}).get("results", {}).get(backend)
    if not record or record.get("passed") is None:
        return f"{backend}: accuracy not measured for this model package (export it with backend accuracy checks)"
    if not record["passed"]:
        return f"{backend}: measured outside the accuracy bound ({record.get('failure', 'see model.json')})"
    return None


def cuda_listed() -> bool:
    """Whether this onnxruntime build lists the CUDA execution provider (it may still fail to start)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def candidate_backends(
    package: ModelPackage, device: Device = "auto", bf16: bool | None = None, cuda: bool | None = None,
    installed: dict[str, bool] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The backends ``auto`` tries, in order, and why each other one is skipped.

    ``bf16`` (native bf16 CPU), ``cuda`` (CUDA provider listed) and ``installed`` (module name → importable) default
    to this machine's. The fp32 ``onnxruntime`` reference is always last, so the list is never empty.
    """
    bf16 = supports_bf16() if bf16 is None else bf16
    on_gpu = device != "cpu" and (cuda_listed() if cuda is None else cuda)
    have = installed if installed is not None else {
        name: importlib.util.find_spec(name) is not None for name in ("openvino", "tensorrt")}
    order = GPU_PREFERENCE if on_gpu else CPU_PREFERENCE
    chosen: list[str] = []
    skipped: dict[str, str] = {}
    for name in order:
        reason: str | None = None
        if name == "tensorrt":
            reason = tensorrt_usable(package) if have.get("tensorrt") else "tensorrt is not installed"
            if reason is None and not package.manifest.get("tensorrt"):
                reason = "the model package has no TensorRT engine"
        elif name == "onnxruntime-fp16":
            reason = None if package.manifest.get("onnx_fp16") else "the model package has no fp16 graph"
        elif name.startswith("openvino"):
            if not have.get("openvino"):
                reason = "openvino is not installed"
            elif name == "openvino-bf16" and not bf16:
                reason = "this CPU has no native bf16 (avx512_bf16 / amx_bf16)"
        if reason is None and name != "tensorrt":  # an engine is checked against ORT at build time (parity)
            reason = accuracy_problem(package, name)
        if reason is None:
            chosen.append(name)
        else:
            skipped[name] = reason
    if REFERENCE_BACKEND not in chosen:
        chosen.append(REFERENCE_BACKEND)
    return chosen, skipped


def _build(package: ModelPackage, name: str, device: Device, threads: int | None) -> Predictor:
    if name == "tensorrt":
        if device == "cpu":
            raise BackendUnavailable("the TensorRT backend runs on a GPU only (device 'cpu' requested)")
        return TensorRTPredictor(package)
    if name == "onnxruntime-fp16":
        return OnnxRuntimePredictor(package, device=device, threads=threads, fp16=True)
    if name in ("openvino", "openvino-bf16"):
        if device == "cuda":
            raise BackendUnavailable(f"the {name} backend runs on the CPU only (device 'cuda' requested)")
        return OpenVinoPredictor(package, "bf16" if name.endswith("bf16") else "f32", threads)
    return OnnxRuntimePredictor(package, device=device, threads=threads)


def make_predictor(
    package: ModelPackage, backend: Backend = "auto", device: Device = "auto", threads: int | None = None
) -> Predictor:
    """The predictor for ``package``: ``backend`` as asked (an explicit choice is not checked against the accuracy
    record: it is the override), or with ``"auto"`` the first of :func:`candidate_backends` that starts.

    The result's ``selection`` says why it was chosen (also logged), ``description`` what runs.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (expected one of {', '.join(BACKENDS)})")
    if backend != "auto":
        predictor = _build(package, backend, device, threads)
        predictor.selection = f"{backend} requested"
        log.info("backend %s (requested)", predictor.description)
        return predictor
    candidates, skipped = candidate_backends(package, device)
    for name, reason in skipped.items():
        log.info("backend %s skipped: %s", name, reason)
    failures: list[str] = []
    for name in candidates:
        try:
            predictor = _build(package, name, device, threads)
        except BackendUnavailable as exc:
            if name == candidates[-1]:
                raise
            failures.append(f"{name}: {exc}")
            log.warning("backend %s not usable (%s); trying the next", name, exc)
            continue
        notes = "; ".join([*(f"{k} skipped: {v}" for k, v in skipped.items()), *failures])
        predictor.selection = f"auto: first usable of {candidates}" + (f" ({notes})" if notes else "")
        log.info("backend %s chosen automatically", predictor.description)
        return predictor
    raise AssertionError("unreachable: the reference backend either starts or raises")  # pragma: no cover
