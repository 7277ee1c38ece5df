"""Runtime backends: CPU facts (affinity, cgroup quota, memory limit), the ONNX Runtime memory setting, the automatic
choice (CPU features, accuracy records), the OpenVINO version guard and the CUDA options — no GPU needed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthct.algorithm import backends, cpu
from synthct.algorithm.analytic import build_analytic_package
from synthct.algorithm.backends import (
    BackendUnavailable,
    OnnxRuntimePredictor,
    accuracy_problem,
    candidate_backends,
    cpu_arena_enabled,
    cuda_provider_options,
    make_predictor,
    openvino_version_problem,
)

from synthct.model_package import ModelPackageError, load_model_package, write_manifest

PASSED = {"passed": True, "worst": {"mean_abs_hu_in_mask": 0.5, "mae_change_hu": 0.1, "max_abs_hu_in_mask": 9.0}}
FAILED = {"passed": False, "failure": "mean_abs_hu_in_mask 4.2 > 3.0"}
NOT_MEASURED = {"passed": None, "reason": "not measured here: no GPU"}
ALL_INSTALLED = {"openvino": True, "tensorrt": False}


@pytest.fixture(scope="module")
def analytic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_analytic_package(tmp_path_factory.mktemp("pkg") / "brain", "brain", patch_size=(32, 32, 32))


def _with_records(source: Path, target: Path, records: dict[str, dict] | None, fp16: bool = False) -> Path:
    shutil.copytree(source, target)
    manifest = json.loads((target / "model.json").read_text(encoding="utf-8"))
    if records is not None:
        manifest["backend_accuracy"] = {"bound": {"mae_change_hu": 1.0, "mean_abs_hu_in_mask": 3.0},
                                        "results": records}
    if fp16:
        shutil.copy(target / "model.onnx", target / "model_fp16.onnx")
        manifest["onnx_fp16"] = {"file": "model_fp16.onnx", "sha256": manifest["onnx"]["sha256"]}
    write_manifest(target, manifest)
    return target


# ------------------------------------------------------------------------------------------------ CPU facts


def test_usable_cpus_follow_affinity_and_cgroup_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    assert cpu.usable_cpus(tmp_path) == 8  # no cgroup files: affinity
    (tmp_path / "cpu.max").write_text("max 100000\n", encoding="utf-8")
    assert cpu.usable_cpus(tmp_path) == 8
    (tmp_path / "cpu.max").write_text("150000 100000\n", encoding="utf-8")  # docker --cpus=1.5
    assert cpu.cgroup_cpu_quota(tmp_path) == pytest.approx(1.5) and cpu.usable_cpus(tmp_path) == 2
    (tmp_path / "cpu.max").write_text("50000 100000\n", encoding="utf-8")
    assert cpu.usable_cpus(tmp_path) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})  # taskset -c 3 under a 4-CPU quota
    (tmp_path / "cpu.max").write_text("400000 100000\n", encoding="utf-8")
    assert cpu.usable_cpus(tmp_path) == 1

    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000", encoding="utf-8")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000", encoding="utf-8")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert cpu.usable_cpus(v1) == 2
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1", encoding="utf-8")
    assert cpu.usable_cpus(v1) == 16


def test_memory_limit_and_cpu_flags(tmp_path: Path) -> None:
    assert cpu.memory_limit_bytes(tmp_path) is None
    (tmp_path / "memory.max").write_text("max\n", encoding="utf-8")
    assert cpu.memory_limit_bytes(tmp_path) is None
    (tmp_path / "memory.max").write_text(str(4 << 30), encoding="utf-8")
    assert cpu.memory_limit_bytes(tmp_path) == 4 << 30
    info = tmp_path / "cpuinfo"
    info.write_text("vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx512f avx512_bf16\n", encoding="utf-8")
    flags = cpu.cpu_flags.__wrapped__(str(info))
    assert "avx512_bf16" in flags and cpu.supports_bf16(flags)
    assert not cpu.supports_bf16(frozenset({"avx512f", "avx2"}))
    assert cpu.supports_bf16(frozenset({"amx_bf16"}))
    assert cpu.cpu_vendor(str(info)) == "AuthenticAMD" and cpu.cpu_vendor(str(tmp_path / "none")) == ""


# -------------------------------------------------------------------------------- ONNX Runtime memory setting


def test_cpu_arena_follows_the_container_memory_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNTHCT_ORT_ARENA", raising=False)
    assert cpu_arena_enabled(None) and cpu_arena_enabled(4 << 30)  # docker --memory=4g: arena on
    assert not cpu_arena_enabled(2 << 30)
    monkeypatch.setenv("SYNTHCT_ORT_ARENA", "0")
    assert not cpu_arena_enabled(None)
    monkeypatch.setenv("SYNTHCT_ORT_ARENA", "1")
    assert cpu_arena_enabled(1 << 30)


def test_onnxruntime_cpu_session_is_tuned(analytic: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNTHCT_ORT_ARENA", raising=False)
    package = load_model_package(analytic)
    monkeypatch.setattr(backends, "usable_cpus", lambda: 3)
    monkeypatch.setattr(backends, "memory_limit_bytes", lambda: 4 << 30)
    predictor = OnnxRuntimePredictor(package, device="cpu")
    assert predictor.threads == 3 and predictor.cpu_arena and predictor._chunk == 1
    assert "3 threads, arena on" in predictor.description
    monkeypatch.setattr(backends, "memory_limit_bytes", lambda: 2 << 30)
    small = OnnxRuntimePredictor(package, device="cpu", threads=1)
    assert small.threads == 1 and not small.cpu_arena and "arena off" in small.description
    batch = np.random.default_rng(0).uniform(-1, 1, (3, 1, 32, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(predictor(batch), small(batch), atol=0)


def test_cuda_options_and_fp16_guard(analytic: Path, tmp_path: Path) -> None:
    assert cuda_provider_options() == {"device_id": "0", "cudnn_conv_algo_search": "EXHAUSTIVE",
                                       "enable_cuda_graph": "0"}
    assert cuda_provider_options("HEURISTIC", True)["enable_cuda_graph"] == "1"
    with pytest.raises(ValueError, match="cudnn_conv_algo_search"):
        cuda_provider_options("FASTEST")
    package = load_model_package(analytic)
    with pytest.raises(BackendUnavailable, match="no fp16"):
        OnnxRuntimePredictor(package, device="auto", fp16=True)
    with_fp16 = load_model_package(_with_records(analytic, tmp_path / "fp16", None, fp16=True))
    with pytest.raises(BackendUnavailable, match="CUDA"):
        OnnxRuntimePredictor(with_fp16, device="cpu", fp16=True)
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(BackendUnavailable, match="CUDA"):
            make_predictor(with_fp16, "onnxruntime-fp16")


# ------------------------------------------------------------------------------------------ automatic choice


def test_accuracy_not_measured_or_failed_means_fp32(analytic: Path, tmp_path: Path) -> None:
    bare = load_model_package(analytic)
    for bf16 in (True, False):
        chosen, skipped = candidate_backends(bare, "cpu", bf16=bf16, cuda=False, installed=ALL_INSTALLED)
        assert chosen == ["onnxruntime"]
        assert "not measured" in skipped["openvino"]
    assert accuracy_problem(bare, "onnxruntime") is None

    mixed = load_model_package(_with_records(analytic, tmp_path / "mixed", {
        "openvino": PASSED, "openvino-bf16": FAILED, "onnxruntime-fp16": NOT_MEASURED}))
    chosen, skipped = candidate_backends(mixed, "cpu", bf16=True, cuda=False, installed=ALL_INSTALLED)
    assert chosen == ["openvino", "onnxruntime"] and "outside the accuracy bound" in skipped["openvino-bf16"]


def test_cpu_features_decide_bf16(analytic: Path, tmp_path: Path) -> None:
    package = load_model_package(_with_records(analytic, tmp_path / "ok", {"openvino": PASSED,
                                                                          "openvino-bf16": PASSED}))
    chosen, _ = candidate_backends(package, "auto", bf16=True, cuda=False, installed=ALL_INSTALLED)
    assert chosen == ["openvino-bf16", "openvino", "onnxruntime"]
    chosen, skipped = candidate_backends(package, "auto", bf16=False, cuda=False, installed=ALL_INSTALLED)
    assert chosen == ["openvino", "onnxruntime"] and "no native bf16" in skipped["openvino-bf16"]
    chosen, skipped = candidate_backends(package, "cpu", bf16=True, cuda=False,
                                         installed={"openvino": False, "tensorrt": False})
    assert chosen == ["onnxruntime"] and "not installed" in skipped["openvino"]


def test_gpu_order_needs_an_fp16_record(analytic: Path, tmp_path: Path) -> None:
    unmeasured = load_model_package(_with_records(analytic, tmp_path / "u", {"onnxruntime-fp16": NOT_MEASURED},
                                                  fp16=True))
    chosen, skipped = candidate_backends(unmeasured, "auto", bf16=True, cuda=True, installed=ALL_INSTALLED)
    assert chosen == ["onnxruntime"] and "not measured" in skipped["onnxruntime-fp16"]
    assert "not installed" in skipped["tensorrt"]
    measured = load_model_package(_with_records(analytic, tmp_path / "m", {"onnxruntime-fp16": PASSED}, fp16=True))
    chosen, _ = candidate_backends(measured, "auto", bf16=True, cuda=True, installed=ALL_INSTALLED)
    assert chosen == ["onnxruntime-fp16", "onnxruntime"]
    chosen, _ = candidate_backends(measured, "cpu", bf16=True, cuda=True, installed=ALL_INSTALLED)
    assert chosen == ["onnxruntime"]  # device cpu: the CPU order, no OpenVINO record


def test_auto_falls_back_and_says_why(analytic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = load_model_package(_with_records(analytic, tmp_path / "p", {"openvino": PASSED}))
    monkeypatch.setattr(backends, "candidate_backends", lambda *a, **k: (["openvino", "onnxruntime"], {
        "openvino-bf16": "this CPU has no native bf16"}))

    def broken(*args: object, **kwargs: object) -> None:
        raise BackendUnavailable("OpenVINO cannot compile the model (test)")

    monkeypatch.setattr(backends, "OpenVinoPredictor", broken)
    predictor = make_predictor(package, "auto", "cpu", threads=1)
    assert predictor.description.startswith("onnxruntime")
    assert "openvino: OpenVINO cannot compile" in predictor.selection and "no native bf16" in predictor.selection
    with pytest.raises(ValueError, match="unknown backend"):
        make_predictor(package, "torch")  # type: ignore[arg-type]


def test_openvino_version_guard() -> None:
    for version in ("2025.3.0", "2025.4.1", "2026.0.0", "2026.1.0"):
        assert "35943" in (openvino_version_problem(version, "AuthenticAMD") or "")
        assert openvino_version_problem(version, "GenuineIntel") is None
    for version in ("2025.2.0", "2026.2.0", "2026.4.1"):
        assert openvino_version_problem(version, "AuthenticAMD") is None


def test_manifest_accuracy_section_is_validated(analytic: Path, tmp_path: Path) -> None:
    target = tmp_path / "bad"
    shutil.copytree(analytic, target)
    manifest = json.loads((target / "model.json").read_text(encoding="utf-8"))
    manifest["backend_accuracy"] = {"results": ["openvino"]}
    (target / "model.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ModelPackageError, match="backend_accuracy"):
        load_model_package(target)
    manifest["backend_accuracy"] = {"results": {}}
    manifest["onnx_fp16"] = {"file": "model_fp16.onnx", "sha256": "0" * 64}
    (target / "model.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ModelPackageError, match="onnx_fp16"):
        load_model_package(target)


# --------------------------------------------------------------------------------------------- OpenVINO


def test_openvino_matches_onnxruntime_on_the_analytic_model(analytic: Path) -> None:
    pytest.importorskip("openvino")
    package = load_model_package(analytic)
    batch = np.random.default_rng(1).uniform(-1, 1, (3, 1, 32, 32, 32)).astype(np.float32)
    reference = OnnxRuntimePredictor(package, device="cpu", threads=1)(batch)
    f32 = make_predictor(package, "openvino", "cpu", threads=1)
    assert f32.description.startswith("openvino ") and f32.selection == "openvino requested"
    np.testing.assert_allclose(f32(batch), reference, atol=2e-6)
    if cpu.supports_bf16():
        bf16 = make_predictor(package, "openvino-bf16", "cpu", threads=1)
        assert np.abs(bf16(batch) - reference).mean() * 2012 <= 3.0
    else:
        with pytest.raises(BackendUnavailable, match="bf16"):
            make_predictor(package, "openvino-bf16", "cpu")
    with pytest.raises(BackendUnavailable, match="CPU only"):
        make_predictor(package, "openvino", "cuda")


SIGNAL_AFTER_TWO_PREDICTORS = """
import gc, signal, subprocess, sys
from synthct.algorithm.backends import OpenVinoPredictor
from synthct.model_package import load_model_package

package = load_model_package(sys.argv[1])
first = OpenVinoPredictor(package, threads=1)
second = OpenVinoPredictor(package, threads=1)
del first  # released before the one made after it
gc.collect()
del second
gc.collect()
signal.signal(signal.SIGCHLD, lambda *args: None)  # a Python handler: delivered on the alternate signal stack
for _ in range(3):
    subprocess.run([sys.executable, "-c", "pass"], check=True)
print("signals handled")
"""


def test_openvino_predictors_leave_a_valid_signal_stack(analytic: Path, tmp_path: Path) -> None:
    """Two predictors released in creation order, then signals with a Python handler: the process lives on.

    With one ``ov.Core`` per predictor, OpenVINO's CPU plugins left the thread's alternate signal stack pointing at
    unmapped memory and the child died of SIGSEGV at the first SIGCHLD (exit -11; see ``backends.openvino_core``).
    Run in a child process, which is what such a crash kills."""
    pytest.importorskip("openvino")
    script = tmp_path / "signals.py"
    script.write_text(SIGNAL_AFTER_TWO_PREDICTORS, encoding="utf-8")
    result = subprocess.run([sys.executable, str(script), str(analytic)], capture_output=True, text=True,
                            encoding="utf-8", timeout=600)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert result.stdout.strip() == "signals handled"
    from synthct.telemetry import import_openvino

    ov = import_openvino()
    assert backends.openvino_core(ov) is backends.openvino_core(ov)


def test_accuracy_cases_are_the_runs_validation_cases(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from synthct.export.backend_accuracy import judge, validation_ids

    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["1BA001"], "val": ["1BA005", "1BA007"]}), encoding="utf-8")
    assert validation_ids({"data": {"split": str(split)}}) == ["1BA005", "1BA007"]
    assert validation_ids({"data": {"split": str(tmp_path / "missing.json")}}) == []
    ok = {"mae_change_hu": 0.6, "mean_abs_hu_in_mask": 2.4, "max_abs_hu_in_mask": 31.0}
    assert judge([ok])["passed"]
    verdict = judge([ok, {**ok, "mean_abs_hu_in_mask": 3.2}])
    assert not verdict["passed"] and "mean_abs_hu_in_mask 3.200 > 3.0" in verdict["failure"]
    assert not judge([{**ok, "mae_change_hu": 1.5}])["passed"]
    assert not judge([{**ok, "mae_change_hu": float("nan")}])["passed"]
