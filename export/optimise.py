"""Offline graph optimisation of the exported ONNX, kept only when it measures faster or smaller.

Candidates (both emit standard ONNX operators only, so the graph stays portable to the CUDA and TensorRT
execution providers and to TensorRT's parser):

- ``ort-basic``: ONNX Runtime's offline ``ORT_ENABLE_BASIC`` pass (constant folding, redundant-node removal,
  Conv+Add/Mul fusions). ``EXTENDED`` adds ``com.microsoft`` fused operators and ``ALL`` CPU-specific layouts
  (NCHWc): those graphs are tied to one execution provider and hardware, so they are not offered.
- ``onnxslim``: onnxslim's folding and pattern fusion (single-file models only).

Every candidate must pass the same parity check as the plain export. Then file size and speed are measured with
the session the algorithm uses (CPU, online ``ORT_ENABLE_ALL``; batch 1; the fastest of ``repeats`` interleaved
runs after a warm-up). A candidate is kept when it is smaller, or at least ``MIN_SPEEDUP`` faster per patch; the
best kept one becomes the package's model. On SwinUNETR neither usually qualifies: ONNX Runtime applies the same
folding when the session starts, and folding the window-shift masks makes the file larger (feature_size 24:
73 MB plain, 96 MB ort-basic, 158 MB onnxslim, per-patch time within noise).
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from synthct.export.errors import ExportError
from synthct.export.onnx_export import check_graph

log = logging.getLogger("synthct.export")

CANDIDATES = ("ort-basic", "onnxslim")
MIN_SPEEDUP = 0.05
"""A candidate no smaller than the plain model must be at least this much (5 %) faster per patch."""


@dataclass
class Measurement:
    """Size in bytes (graph + external data), session creation and per-patch seconds (min over repeats)."""

    size_bytes: int
    session_s: float
    patch_s: float
    patch_s_all: list[float] = field(default_factory=list)


def files_size(model: Path, external_data: Path | None) -> int:
    """Bytes of a model file plus its external data file."""
    return model.stat().st_size + (external_data.stat().st_size if external_data else 0)


def ort_offline(source: Path, target: Path, external_data: bool, level: str = "basic") -> Path | None:
    """Write ONNX Runtime's offline-optimised graph of ``source`` to ``target``; returns the external data path."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}[level]
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    data_path = None
    if external_data:
        data_path = target.parent / f"{target.name}.data"
        data_path.unlink(missing_ok=True)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", data_path.name)
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"])
    if not target.is_file():
        raise ExportError(f"{source}: ONNX Runtime did not write the optimised model {target}")
    return data_path


def onnxslim_model(source: Path, target: Path) -> None:
    """Write onnxslim's version of ``source`` (single file) to ``target``; its summary table is not printed."""
    import onnx
    import onnxslim

    with contextlib.redirect_stdout(io.StringIO()):
        slimmed = onnxslim.slim(str(source))
    if slimmed is None:
        raise ExportError(f"{source}: onnxslim returned no model")
    onnx.save_model(slimmed, str(target))


def measure(models: Sequence[Path], patch_size: Sequence[int], repeats: int = 3, threads: int | None = None,
            session_factory: Callable[..., Any] | None = None) -> list[Measurement]:
    """Time ``models`` on the same random batch-1 patch, interleaving the runs so that load from other processes
    hits all models alike. Also returns each file's size (external data ``<file>.data`` included)."""
    from synthct.export.parity import ort_session

    factory = session_factory or ort_session
    patch = np.random.default_rng(0).uniform(-1.0, 1.0, (1, 1, *patch_size)).astype(np.float32)
    sessions, session_s = [], []
    for model in models:
        started = time.perf_counter()
        session = factory(model, threads)
        session_s.append(time.perf_counter() - started)
        session.run(None, {"mr": patch})  # warm-up
        sessions.append(session)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(max(repeats, 1)):
        for index, session in enumerate(sessions):
            started = time.perf_counter()
            session.run(None, {"mr": patch})
            times[index].append(time.perf_counter() - started)
    results = []
    for model, created, runs in zip(models, session_s, times, strict=True):
        data = model.parent / f"{model.name}.data"
        results.append(Measurement(files_size(model, data if data.is_file() else None), created, min(runs), runs))
    return results


@dataclass
class Candidate:
    """One optimised graph: its files, parity report, measurement, and whether it was kept (and why)."""

    name: str
    model: Path
    external_data: Path | None
    parity: dict[str, Any] | None = None
    measurement: Measurement | None = None
    kept: bool = False
    reason: str = ""

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary for the manifest."""
        return {"file": self.model.name, "parity_max_abs_hu": (self.parity or {}).get("max_abs_hu"),
                "measurement": asdict(self.measurement) if self.measurement else None, "kept": self.kept,
                "reason": self.reason}


def make_candidates(source: Path, external_data: bool, names: Sequence[str] = CANDIDATES) -> list[Candidate]:
    """Write each candidate next to ``source`` as ``<stem>.<name>.onnx``; a failing optimiser is logged, skipped."""
    candidates = []
    for name in names:
        target = source.with_name(f"{source.stem}.{name}.onnx")
        try:
            if name == "ort-basic":
                data = ort_offline(source, target, external_data, "basic")
            elif name == "onnxslim":
                if external_data:
                    log.info("onnxslim skipped: it is only used on single-file models")
                    continue
                onnxslim_model(source, target)
                data = None
            else:
                raise ExportError(f"unknown optimisation {name!r} (expected one of {CANDIDATES})")
            check_graph(target, _patch_from(source))
        except ExportError:
            raise
        except Exception as exc:  # an optimiser failing is not fatal: the plain model stays
            log.warning("optimisation %s failed (%s: %s): skipped", name, type(exc).__name__, exc)
            continue
        candidates.append(Candidate(name, target, data))
    return candidates


def _patch_from(model: Path) -> list[int]:
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    return [int(d.dim_value) for d in graph.input[0].type.tensor_type.shape.dim[2:]]


def choose(plain: Measurement, candidates: Sequence[Candidate]) -> Candidate | None:
    """Mark each candidate kept or not (with the reason) and return the best kept one (fastest), or None."""
    best: Candidate | None = None
    best_s: float | None = None  # the best candidate's seconds per patch
    for candidate in candidates:
        measured = candidate.measurement
        if candidate.parity is None or not candidate.parity["passed"]:
            candidate.reason = "parity failed"
            continue
        if measured is None:
            candidate.reason = "not measured"
            continue
        smaller = measured.size_bytes < plain.size_bytes
        faster = measured.patch_s <= plain.patch_s * (1.0 - MIN_SPEEDUP)
        candidate.kept = smaller or faster
        candidate.reason = (f"{measured.size_bytes / 1e6:.1f} MB vs {plain.size_bytes / 1e6:.1f} MB, "
                            f"{measured.patch_s:.3f} s vs {plain.patch_s:.3f} s per patch: "
                            + ("kept" if candidate.kept else f"neither smaller nor ≥ {MIN_SPEEDUP:.0%} faster"))
        if candidate.kept and (best_s is None or measured.patch_s < best_s):
            best, best_s = candidate, measured.patch_s
    return best


def remove(candidate: Candidate) -> None:
    """Delete a candidate's files."""
    for path in (candidate.model, candidate.external_data):
        if path is not None:
            Path(path).unlink(missing_ok=True)

