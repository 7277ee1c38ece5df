"""The grand-challenge algorithm end to end with a tiny analytic ONNX model (no torch): I/O contract, pairing,
region handling, per-case errors, exit codes, model verification, backends and the ``synthct predict`` CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from synthct.algorithm.analytic import build_analytic_package, expected_hu
from synthct.algorithm.backends import BackendUnavailable, OnnxRuntimePredictor, make_predictor
from synthct.algorithm.cases import RegionError, canonical_region, pair_cases, region_from_case_id, resolve_region
from synthct.algorithm.container import run_container
from synthct.algorithm.inference import predict_sct
from train_helpers import HANG_GUARD_S

from synthct.cli import main as synthct_main
from synthct.model_package import ModelPackageError, file_entry, load_model_package, write_manifest

REPO = Path(__file__).resolve().parents[1]
BRAIN = {"scale": 1.5, "shift": 0.25}
PELVIS = {"scale": 0.5, "shift": -0.5}


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    build_analytic_package(root / "brain", "brain", **BRAIN)
    build_analytic_package(root / "pelvis", "pelvis", **PELVIS)
    return root


def make_pair(
    shape=(40, 70, 52), spacing=(1.0, 1.0, 2.5), origin=(-10.0, 5.0, 30.0), seed=0, box=None
) -> tuple[sitk.Image, sitk.Image, np.ndarray, np.ndarray]:
    """An MR (z, y, x) with a box-shaped body mask; returns (mr image, mask image, mr array, mask array)."""
    rng = np.random.default_rng(seed)
    mr = rng.uniform(0.0, 800.0, shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    z0, z1, y0, y1, x0, x1 = box or (3, shape[0] - 4, 8 + seed, shape[1] - 9, 5, shape[2] - 6 - seed)
    mask[z0:z1, y0:y1, x0:x1] = 1
    mr_image = sitk.GetImageFromArray(mr)
    mr_image.SetSpacing(spacing)
    mr_image.SetOrigin(origin)
    mr_image.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    mask_image = sitk.GetImageFromArray(mask)
    mask_image.CopyInformation(mr_image)
    return mr_image, mask_image, mr, mask


def write_case(root: Path, mr_name: str, mask_name: str | None, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    mr_image, mask_image, mr, mask = make_pair(**kwargs)
    (root / "images" / "mri").mkdir(parents=True, exist_ok=True)
    (root / "images" / "body").mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(mr_image, str(root / "images" / "mri" / mr_name))
    if mask_name:
        sitk.WriteImage(mask_image, str(root / "images" / "body" / mask_name))
    return mr, mask


def environment(input_dir: Path, output_dir: Path, models_dir: Path) -> dict[str, str]:
    return {**os.environ, "SYNTHCT_INPUT": str(input_dir), "SYNTHCT_OUTPUT": str(output_dir),
            "SYNTHCT_MODELS": str(models_dir), "SYNTHCT_PROGRESS": "0"}


def run_algorithm(input_dir: Path, output_dir: Path, models_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "synthct.algorithm"],
                          env=environment(input_dir, output_dir, models_dir),
                          cwd=REPO, capture_output=True, text=True, encoding="utf-8", timeout=HANG_GUARD_S, check=False)


def check_output(path: Path, mr: np.ndarray, mask: np.ndarray, reference: sitk.Image, params: dict) -> None:
    image = sitk.ReadImage(str(path))
    assert image.GetPixelID() == sitk.sitkInt16
    assert image.GetSize() == reference.GetSize()
    assert np.allclose(image.GetSpacing(), reference.GetSpacing())
    assert np.allclose(image.GetOrigin(), reference.GetOrigin())
    assert np.allclose(image.GetDirection(), reference.GetDirection())
    sct = sitk.GetArrayFromImage(image)
    assert np.all(sct[mask == 0] == -1000)
    expected = expected_hu(mr, mask, **params)
    assert np.abs(sct.astype(np.int32) - expected).max() <= 1  # rounding of tanh at .5 HU
    assert sct[mask > 0].std() > 10  # really the mapped MR, not a constant


# ---------------------------------------------------------------- container, end to end


def test_container_end_to_end_with_broken_cases(tmp_path: Path, models: Path) -> None:
    inp, out = tmp_path / "input", tmp_path / "output"
    good_nii = write_case(inp, "1BA002.nii.gz", "1BA002.nii.gz", seed=2)
    good_mha = write_case(inp, "1BA003.mha", "1BA003.mha", shape=(41, 77, 59), spacing=(0.9, 1.1, 3.0), seed=3)
    write_case(inp, "1BA001.mha", None, seed=1)  # no mask: automatic mask + warning; sort-order pairing would shift
    # every mask by one
    write_case(inp, "1BA004.mha", None, seed=4)
    bad_mask = make_pair(seed=4, spacing=(1.0, 1.0, 2.0))[1]
    sitk.WriteImage(bad_mask, str(inp / "images" / "body" / "1BA004.mha"))  # spacing differs from the MR
    mr_nan, mask_nan = make_pair(seed=5)[:2]
    nan_array = sitk.GetArrayFromImage(mr_nan)
    nan_array[10, 20, 20] = np.nan
    nan_image = sitk.GetImageFromArray(nan_array)
    nan_image.CopyInformation(mr_nan)
    sitk.WriteImage(nan_image, str(inp / "images" / "mri" / "1BA005.mha"))
    sitk.WriteImage(mask_nan, str(inp / "images" / "body" / "1BA005.mha"))
    (inp / "images" / "mri" / "1BA006.mha").write_bytes(b"not an image at all")
    sitk.WriteImage(make_pair(seed=6)[1], str(inp / "images" / "body" / "1BA006.mha"))
    write_case(inp, "1BA007.mha", "1BA007.mha", seed=7, box=(0, 0, 0, 0, 0, 0))  # empty mask
    flat = sitk.GetImageFromArray(np.ones((30, 30), np.float32))
    sitk.WriteImage(flat, str(inp / "images" / "mri" / "1BA008.mha"))
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((30, 30), np.uint8)), str(inp / "images" / "body" / "1BA008.mha"))
    (inp / "region.json").write_text('"Brain"', encoding="utf-8")
    before = sorted(p.relative_to(inp) for p in inp.rglob("*"))

    result = run_algorithm(inp, out, models)
    assert result.returncode == 1, result.stdout + result.stderr
    assert sorted(p.relative_to(inp) for p in inp.rglob("*")) == before  # /input untouched

    images = out / "images" / "synthetic-ct"
    assert sorted(p.name for p in images.iterdir()) == ["1BA001.mha", "1BA002.mha", "1BA003.mha"]
    reference_nii = sitk.ReadImage(str(inp / "images" / "mri" / "1BA002.nii.gz"))
    reference_mha = sitk.ReadImage(str(inp / "images" / "mri" / "1BA003.mha"))
    check_output(images / "1BA002.mha", *good_nii, reference_nii, BRAIN)
    check_output(images / "1BA003.mha", *good_mha, reference_mha, BRAIN)

    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert len(results) == 8
    by_mr = {Path(entry["inputs"][0]["filename"]).name: entry for entry in results}
    for name in ("1BA002.nii.gz", "1BA003.mha"):
        entry = by_mr[name]
        assert set(entry) == {"outputs", "inputs", "error_messages", "backend", "geometry", "model_source"}
        assert entry["model_source"] == {"source": "image", "folder": str(models), "regions": ["brain", "pelvis"]}
        assert entry["backend"]["description"].startswith("onnxruntime")  # the backend used, and why (issue 10)
        assert entry["backend"]["selection"].startswith("auto")
        assert entry["error_messages"] == []
        assert entry["outputs"] == [{"type": "metaio_image",
                                     "filename": str(images / (name.split(".")[0] + ".mha"))}]
        assert entry["inputs"][1] == {"type": "metaio_image", "filename": str(inp / "images" / "body" / name)}
        assert entry["inputs"][2] == {"type": "String", "filename": str(inp / "region.json")}
    fallback = by_mr["1BA001.mha"]
    assert fallback["error_messages"] == [] and len(fallback["outputs"]) == 1
    assert len(fallback["warnings"]) == 1 and "no body mask" in fallback["warnings"][0]
    assert "automatic body mask" in fallback["warnings"][0]
    expected_errors = {
        "1BA004.mha": "spacing",
        "1BA005.mha": "NaN",
        "1BA006.mha": "cannot be read",
        "1BA007.mha": "empty",
        "1BA008.mha": "3-D",
    }
    for name, fragment in expected_errors.items():
        entry = by_mr[name]
        assert entry["outputs"] == []
        assert len(entry["error_messages"]) == 1 and fragment in entry["error_messages"][0], entry
    assert "1BA004" in by_mr["1BA004.mha"]["error_messages"][0]  # names the file


def test_region_from_case_id_when_region_json_is_absent(tmp_path: Path, models: Path) -> None:
    inp, out = tmp_path / "input", tmp_path / "output"
    pelvis_case = write_case(inp, "1PA001.mha", "1PA001.mha", seed=1)
    write_case(inp, "scan9.mha", "scan9.mha", seed=2)
    result = run_algorithm(inp, out, models)
    assert result.returncode == 1, result.stdout + result.stderr
    reference = sitk.ReadImage(str(inp / "images" / "mri" / "1PA001.mha"))
    check_output(out / "images" / "synthetic-ct" / "1PA001.mha", *pelvis_case, reference, PELVIS)
    entries = json.loads((out / "results.json").read_text(encoding="utf-8"))
    results = {Path(e["inputs"][0]["filename"]).name: e for e in entries}
    assert results["1PA001.mha"]["error_messages"] == []
    assert "region.json" in results["scan9.mha"]["error_messages"][0]
    assert not (out / "images" / "synthetic-ct" / "scan9.mha").exists()


def test_single_model_and_uuid_names(tmp_path: Path, models: Path) -> None:
    """grand-challenge style: one MR and one mask with unrelated names; one model installed; no region.json."""
    inp, out = tmp_path / "input", tmp_path / "output"
    mr, mask = write_case(inp, "4f1c-uuid-mr.mha", None, seed=3)
    sitk.WriteImage(make_pair(seed=3)[1], str(inp / "images" / "body" / "9e2a-uuid-mask.mha"))
    assert run_container(environment(inp, out, models / "brain")) == 0
    reference = sitk.ReadImage(str(inp / "images" / "mri" / "4f1c-uuid-mr.mha"))
    check_output(out / "images" / "synthetic-ct" / "4f1c-uuid-mr.mha", mr, mask, reference, BRAIN)


def test_single_model_refuses_a_case_id_of_another_region(tmp_path: Path, models: Path) -> None:
    inp, out = tmp_path / "input", tmp_path / "output"
    write_case(inp, "1PA001.mha", "1PA001.mha", seed=1)
    write_case(inp, "1BA001.mha", "1BA001.mha", seed=2)
    assert run_container(environment(inp, out, models / "brain")) == 1
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert "pelvis" in results[1]["error_messages"][0] and results[0]["error_messages"] == []


@pytest.mark.parametrize(("content", "fragment"), [('"Knee"', "unknown region"), ("{not json", "JSON"),
                                                    ('{"region": "Brain"}', "JSON string"),
                                                    ('"Head and Neck"', "no model installed")])
def test_bad_or_unserved_region_json_fails_every_case(tmp_path: Path, models: Path, content: str,
                                                      fragment: str) -> None:
    inp, out = tmp_path / "input", tmp_path / "output"
    write_case(inp, "1BA001.mha", "1BA001.mha")
    (inp / "region.json").write_text(content, encoding="utf-8")
    assert run_container(environment(inp, out, models)) == 1
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert len(results) == 1 and results[0]["outputs"] == [] and fragment in results[0]["error_messages"][0]
    assert not (out / "images" / "synthetic-ct" / "1BA001.mha").exists()


def tampered_copies(models: Path, tmp_path: Path) -> dict[str, Path]:
    copies = {}
    onnx_changed = tmp_path / "onnx_changed" / "brain"
    shutil.copytree(models / "brain", onnx_changed)
    with open(onnx_changed / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    copies["onnx_changed"] = onnx_changed.parent
    hash_edited = tmp_path / "hash_edited" / "brain"
    shutil.copytree(models / "brain", hash_edited)
    manifest = json.loads((hash_edited / "model.json").read_text(encoding="utf-8"))
    manifest["onnx"]["sha256"] = "0" * 64
    (hash_edited / "model.json").write_text(json.dumps(manifest), encoding="utf-8")
    copies["hash_edited"] = hash_edited.parent
    broken_json = tmp_path / "broken_json" / "brain"
    shutil.copytree(models / "brain", broken_json)
    (broken_json / "model.json").write_text("{", encoding="utf-8")
    copies["broken_json"] = broken_json.parent
    return copies


def test_tampered_model_packages_are_refused(tmp_path: Path, models: Path) -> None:
    inp = tmp_path / "input"
    write_case(inp, "1BA001.mha", "1BA001.mha")
    for kind, models_dir in tampered_copies(models, tmp_path).items():
        out = tmp_path / f"out_{kind}"
        assert run_container(environment(inp, out, models_dir)) == 1, kind
        message = json.loads((out / "results.json").read_text(encoding="utf-8"))[0]["error_messages"][0]
        assert ("sha256" if kind != "broken_json" else "JSON") in message, (kind, message)
        assert not (out / "images" / "synthetic-ct" / "1BA001.mha").exists()


def test_no_input_images_is_fatal(tmp_path: Path, models: Path) -> None:
    out = tmp_path / "output"
    assert run_container(environment(tmp_path / "empty", out, models)) == 2
    assert json.loads((out / "results.json").read_text(encoding="utf-8")) == []


def test_bad_environment_is_fatal(tmp_path: Path, models: Path) -> None:
    inp, out = tmp_path / "input", tmp_path / "output"
    write_case(inp, "1BA001.mha", "1BA001.mha")
    for name, value in (("SYNTHCT_BATCH_SIZE", "zero"), ("SYNTHCT_BATCH_SIZE", "0"), ("SYNTHCT_BACKEND", "torch")):
        assert run_container({**environment(inp, out, models), name: value}) == 2
        assert json.loads((out / "results.json").read_text(encoding="utf-8")) == []


def test_algorithm_imports_no_torch() -> None:
    code = ("import sys, synthct.algorithm.container, synthct.algorithm.cli, synthct.algorithm.backends, "
            "synthct.algorithm.runner, synthct.algorithm.inference, synthct.sliding_window; "
            "bad = [m for m in ('torch', 'monai') if m in sys.modules]; sys.exit(str(bad) if bad else 0)")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


# ---------------------------------------------------------------- local CLI


def test_synthct_predict_files_and_folders(tmp_path: Path, models: Path) -> None:
    inp = tmp_path / "input"
    mr, mask = write_case(inp, "caseA.nii.gz", "caseA.nii.gz", seed=4)
    mri, body = inp / "images" / "mri", inp / "images" / "body"
    code = synthct_main(["predict", "--mr", str(mri / "caseA.nii.gz"), "--mask", str(body / "caseA.nii.gz"),
                         "--model", str(models / "brain"), "--out", str(tmp_path / "out1"), "--no-progress",
                         "--batch-size", "3", "--device", "cpu"])
    assert code == 0
    reference = sitk.ReadImage(str(mri / "caseA.nii.gz"))
    check_output(tmp_path / "out1" / "caseA.mha", mr, mask, reference, BRAIN)

    code = synthct_main(["predict", "--mr", str(mri), "--mask", str(body), "--model", str(models),
                         "--region", "Pelvis", "--out", str(tmp_path / "out2"), "--no-progress"])
    assert code == 0
    check_output(tmp_path / "out2" / "caseA.mha", mr, mask, reference, PELVIS)
    results = json.loads((tmp_path / "out2" / "results.json").read_text(encoding="utf-8"))
    assert results[0]["outputs"][0]["filename"] == str(tmp_path / "out2" / "caseA.mha")

    assert synthct_main(["predict", "--mr", str(mri), "--mask", str(body), "--model", str(models),
                         "--region", "Knee", "--out", str(tmp_path / "out3")]) == 2


# ---------------------------------------------------------------- pieces


def test_region_names_and_case_ids() -> None:
    assert canonical_region("Head and Neck") == canonical_region("head & neck") == canonical_region("HN") == "hn"
    assert canonical_region(" Brain ") == "brain" and canonical_region("PELVIS") == "pelvis"
    assert canonical_region("Thorax") == "th" and canonical_region("abdomen") == "ab"
    with pytest.raises(RegionError):
        canonical_region("knee")
    assert region_from_case_id("1BA001") == "brain" and region_from_case_id("2PC012") == "pelvis"
    assert region_from_case_id("1HNA001") == "hn" and region_from_case_id("1ABC042") == "ab"
    assert region_from_case_id("case1") is None and region_from_case_id("3BA001") is None
    assert resolve_region("xyz", "pelvis", ["brain"]) == "pelvis"
    with pytest.raises(RegionError, match=r"region\.json"):
        resolve_region("xyz", None, ["brain", "pelvis"])


def test_pairing_is_by_case_id(tmp_path: Path) -> None:
    mrs = [tmp_path / n for n in ("b.mha", "a.nii.gz", "c.mha", "c.nii")]
    masks = [tmp_path / n for n in ("a.mha", "b.nii.gz", "c.mha", "z.mha")]
    cases = {case.case_id: case for case in pair_cases(mrs, masks)}
    assert sorted(cases) == ["a", "b", "c"]
    assert cases["a"].mask == tmp_path / "a.mha" and cases["a"].problem is None
    assert cases["b"].mask == tmp_path / "b.nii.gz"
    assert "several MR files" in (cases["c"].problem or "")


def test_onnxruntime_predictor_splits_fixed_batches(tmp_path: Path) -> None:
    package = load_model_package(build_analytic_package(tmp_path / "fixed", fixed_batch=2, patch_size=(32, 32, 32)))
    predictor = OnnxRuntimePredictor(package, device="cpu", threads=1)
    assert predictor.max_batch == 2 and "CPU" in predictor.description
    batch = np.random.default_rng(0).uniform(-1, 1, (5, 1, 32, 32, 32)).astype(np.float32)
    out = predictor(batch)
    assert out.shape == batch.shape
    np.testing.assert_allclose(out, np.tanh(1.5 * batch + 0.25), atol=1e-6)

    dynamic = load_model_package(build_analytic_package(tmp_path / "dynamic", patch_size=(32, 32, 32)))
    for cpu_batch in (1, 2, 8):
        out = OnnxRuntimePredictor(dynamic, device="cpu", threads=1, cpu_batch=cpu_batch)(batch)
        np.testing.assert_allclose(out, np.tanh(1.5 * batch + 0.25), atol=1e-6)


def test_backend_selection_without_gpu_or_tensorrt(tmp_path: Path, models: Path) -> None:
    package_dir = tmp_path / "with_engine"
    shutil.copytree(models / "brain", package_dir)
    (package_dir / "model.plan").write_bytes(b"pretend engine")
    manifest = json.loads((package_dir / "model.json").read_text(encoding="utf-8"))
    manifest["tensorrt"] = {**file_entry(package_dir / "model.plan"), "precision": "fp16", "max_batch": 4,
                            "tensorrt_version": "10.9.0"}
    write_manifest(package_dir, manifest)
    package = load_model_package(package_dir)
    pytest.importorskip("onnxruntime")
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(BackendUnavailable, match="tensorrt"):
            make_predictor(package, backend="tensorrt")
    assert make_predictor(package, backend="auto").description.startswith("onnxruntime")
    with pytest.raises(BackendUnavailable, match="GPU only"):
        make_predictor(package, backend="tensorrt", device="cpu")
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(BackendUnavailable, match="cuda"):
            make_predictor(package, backend="onnxruntime", device="cuda")


def test_model_file_swapped_after_verification_is_not_loaded(tmp_path: Path, models: Path) -> None:
    package_dir = tmp_path / "swap"
    shutil.copytree(models / "brain", package_dir)
    package = load_model_package(package_dir)
    shutil.copy(models / "pelvis" / "model.onnx", package_dir / "model.onnx")
    with pytest.raises(ModelPackageError, match="sha256"):
        OnnxRuntimePredictor(package, device="cpu")


def test_predict_sct_in_process(models: Path) -> None:
    package = load_model_package(models / "brain")
    predictor = make_predictor(package, device="cpu")
    mr_image, mask_image, mr, mask = make_pair(shape=(20, 30, 70), seed=1)  # z and y smaller than the patch
    sct = predict_sct(mr_image, mask_image, package, predictor, batch_size=2, progress=False)
    check_output_image = sitk.GetArrayFromImage(sct)
    assert check_output_image.dtype == np.int16
    assert np.abs(check_output_image.astype(np.int32) - expected_hu(mr, mask, **BRAIN)).max() <= 1
