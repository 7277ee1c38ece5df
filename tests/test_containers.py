"""The two images built and run (marker ``container``): the algorithm image as the grand-challenge job and in
``predict`` mode, the evaluation image on a ``predictions.json`` — each compared with the same code run locally.

Needs a Docker daemon and the ``python:3.11-slim*`` base images; no container registry is needed:
``bash ../shared/tools/docker-stand-in-base`` (as root) provides both, then ``make container-test``. Without them
these tests are skipped with that message. Images are built from a clean build context (the Dockerfiles, the
packages they copy, a tiny analytic model package and phantom ground truth in a temporary folder), so a clean
checkout is enough; Docker's layer cache keeps rebuilds fast (the pip layers are reused).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from synthct.algorithm.analytic import build_analytic_package
from synthct.algorithm.model_archive import extract_tarball, write_tarball

from synthct.cli import main as synthct_main
from synthct.phantom.generate import generate_case

pytestmark = [pytest.mark.container, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parents[1]
ENABLE = ("enable them with `bash ../shared/tools/docker-stand-in-base` (as root: installs Docker, starts dockerd, "
          "builds local python:3.11-slim* base images), then `make container-test`")
BASE_IMAGES = ("python:3.11-slim-bookworm", "python:3.11-slim")
# The test image uses the CPU build of ONNX Runtime: the default onnxruntime-gpu[cuda,cudnn] pulls ~3 GB of NVIDIA
# wheels, which would make every fresh CI build slow; the GPU build is measured by benchmarks/bench_container.py.
ORT_PACKAGE = "onnxruntime==1.26.0"
ALGORITHM_TAG = "synthct-algorithm:test-cpu"
EVALUATION_TAG = "synthct-evaluation:test"
# The platform's limits (SynthRAD's test script plus a process limit); /input is mounted read-only.
PLATFORM_FLAGS = ("--network", "none", "--memory", "4g", "--cap-drop", "ALL", "--pids-limit", "256")
GC_CASE = "1BA001"
GT_CASES = ("1BA001", "1BA002")


def _docker(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, encoding="utf-8", errors="replace",
                          timeout=timeout, check=False)


def _docker_problem() -> str | None:
    """Why the container tests cannot run here, or None."""
    if shutil.which("docker") is None:
        return "no `docker` command"
    try:
        info = _docker("info", "--format", "{{.ServerVersion}}", timeout=60)
    except subprocess.TimeoutExpired:
        return "`docker info` timed out"
    if info.returncode != 0:
        lines = info.stderr.strip().splitlines()
        return f"no Docker daemon reachable ({lines[-1] if lines else f'docker info: exit {info.returncode}'})"
    missing = [name for name in BASE_IMAGES if _docker("image", "inspect", name, timeout=60).returncode != 0]
    if missing:
        return f"base image(s) {', '.join(missing)} not present (no container registry is reachable here)"
    return None


def _tail(done: subprocess.CompletedProcess[str], lines: int = 40) -> str:
    return "\n".join((done.stdout + "\n" + done.stderr).strip().splitlines()[-lines:])


def _open_up(folder: Path, mode: int) -> Path:
    """Give the container's non-root user access: folders ``mode``, files a+r (pytest's tmp folders are 0700)."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(mode if path.is_dir() else 0o644)
    return folder


def _run(image: str, *args: str, mounts: dict[Path, str], user: str | None = None,
         entrypoint: str | None = None) -> subprocess.CompletedProcess[str]:
    """``docker run`` under the platform's limits; ``mounts`` = host folder → "/path[:ro]"."""
    command = ["run", "--rm", *PLATFORM_FLAGS]
    for host, target in mounts.items():
        command += ["-v", f"{host}:{target}"]
    if user:
        command += ["--user", user]
    if entrypoint:
        command += ["--entrypoint", entrypoint]
    return _docker(*command, image, *args)


def _build(context: Path, tag: str, *extra: str) -> None:
    done = _docker("build", "--network", "host", "-t", tag, *extra, str(context), timeout=3000)
    assert done.returncode == 0, f"docker build {tag} failed:\n{_tail(done, 60)}"


def _write(image: sitk.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)
    return path


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _assert_same_geometry(image: sitk.Image, reference: sitk.Image) -> None:
    assert image.GetSize() == reference.GetSize()
    np.testing.assert_allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6)


def _hu_tolerance(image: str) -> int:
    """0 HU when the image's ONNX Runtime is the local one, else 1 HU (kernels may round differently)."""
    import onnxruntime

    done = _run(image, "-c", "import onnxruntime; print(onnxruntime.__version__)", mounts={}, entrypoint="python")
    assert done.returncode == 0, _tail(done)
    return 0 if done.stdout.strip() == onnxruntime.__version__ else 1


# ---------------------------------------------------------------- fixtures: build context, images


@pytest.fixture(scope="module")
def docker_ready() -> None:
    problem = _docker_problem()
    if problem:
        pytest.skip(f"container tests skipped: {problem}; {ENABLE}")


@pytest.fixture(scope="module")
def phantoms() -> dict[str, tuple[sitk.Image, sitk.Image, sitk.Image]]:
    """Small brain phantoms ``case id → (mr, ct, mask)`` (96×128×104 voxels at 1 mm)."""
    return {case_id: generate_case("brain", seed, "small") for seed, case_id in enumerate(GT_CASES)}


@pytest.fixture(scope="module")
def context(docker_ready: None, tmp_path_factory: pytest.TempPathFactory,
            phantoms: dict[str, tuple[sitk.Image, sitk.Image, sitk.Image]]) -> Path:
    """A clean build context: the Dockerfiles and what they copy, ``models/brain`` (analytic), ``gt/{ct,mask}``."""
    root = tmp_path_factory.mktemp("context")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in ("Dockerfile", ".dockerignore"):
        shutil.copy2(REPO / name, root / name)
    for package in ("synthct", "algorithm", "evaluation"):
        shutil.copytree(REPO / package, root / package, ignore=ignore)
    build_analytic_package(root / "models" / "brain", "brain")
    for case_id, (_, ct, mask) in phantoms.items():
        _write(ct, root / "gt" / "ct" / f"{case_id}.mha")
        _write(mask, root / "gt" / "mask" / f"{case_id}.mha")
    return root


@pytest.fixture(scope="module")
def models_dir(context: Path) -> Path:
    """The model packages baked into the algorithm image, for the local runs."""
    return context / "models"


@pytest.fixture(scope="module")
def algorithm_image(context: Path) -> str:
    _build(context, ALGORITHM_TAG, "--build-arg", f"ORT_PACKAGE={ORT_PACKAGE}")
    return ALGORITHM_TAG


@pytest.fixture(scope="module")
def evaluation_image(context: Path) -> str:
    _build(context, EVALUATION_TAG, "-f", str(context / "evaluation" / "Dockerfile"),
           "--build-arg", "GROUND_TRUTH=gt")
    return EVALUATION_TAG


# ---------------------------------------------------------------- the algorithm image


def test_algorithm_image_usage(algorithm_image: str) -> None:
    done = _run(algorithm_image, "--help", mounts={})
    assert done.returncode == 0, _tail(done)
    assert "predict" in done.stdout and "/input" in done.stdout
    done = _run(algorithm_image, "predict", "--help", mounts={})
    assert done.returncode == 0, _tail(done)
    words = " ".join(done.stdout.split())  # argparse wraps the help to the terminal width
    assert "--mr" in words and "(default: $SYNTHCT_MODELS = /opt/app/models)" in words
    done = _run(algorithm_image, "predcit", mounts={})
    assert done.returncode == 2 and "unknown command 'predcit'" in done.stderr
    done = _run(algorithm_image, "-c", "import os; print(os.getuid())", mounts={}, entrypoint="python")
    assert done.stdout.strip() == "10001", "the image must run as its non-root user"


def test_algorithm_image_grand_challenge_job_equals_local_predict(
    algorithm_image: str, models_dir: Path, phantoms: dict[str, Any], tmp_path: Path
) -> None:
    mr, _, mask = phantoms[GC_CASE]
    input_dir = tmp_path / "input"
    mr_path = _write(mr, input_dir / "images" / "mri" / f"{GC_CASE}.mha")
    mask_path = _write(mask, input_dir / "images" / "body" / f"{GC_CASE}.mha")
    (input_dir / "region.json").write_text('"Brain"', encoding="utf-8")
    output_dir = tmp_path / "output"
    output_dir.mkdir()
    _open_up(input_dir, 0o755)
    _open_up(output_dir, 0o777)

    done = _run(algorithm_image, mounts={input_dir: "/input:ro", output_dir: "/output"})
    assert done.returncode == 0, _tail(done)
    results = json.loads((output_dir / "results.json").read_text(encoding="utf-8"))
    assert isinstance(results, list) and len(results) == 1
    entry = results[0]
    assert entry["error_messages"] == []
    assert entry["outputs"] == [{"type": "metaio_image", "filename": f"/output/images/synthetic-ct/{GC_CASE}.mha"}]
    assert {"type": "metaio_image", "filename": f"/input/images/mri/{GC_CASE}.mha"} in entry["inputs"]
    in_image = sitk.ReadImage(str(output_dir / "images" / "synthetic-ct" / f"{GC_CASE}.mha"))

    local_dir = tmp_path / "local"
    assert synthct_main(["predict", "--mr", str(mr_path), "--mask", str(mask_path), "--model", str(models_dir),
                         "--out", str(local_dir), "--no-progress"]) == 0
    local_image = sitk.ReadImage(str(local_dir / f"{GC_CASE}.mha"))
    assert in_image.GetPixelID() == local_image.GetPixelID() == sitk.sitkInt16
    _assert_same_geometry(in_image, mr)
    _assert_same_geometry(local_image, mr)
    container_hu = sitk.GetArrayFromImage(in_image).astype(np.int32)
    local_hu = sitk.GetArrayFromImage(local_image).astype(np.int32)
    body = sitk.GetArrayViewFromImage(mask) > 0
    assert np.all(container_hu[~body] == -1000) and np.ptp(container_hu[body]) > 500, "sCT is not a real prediction"
    assert np.abs(container_hu - local_hu).max() <= _hu_tolerance(algorithm_image)


def test_algorithm_image_without_platform_mask_uses_the_automatic_mask_with_a_warning(
    algorithm_image: str, models_dir: Path, phantoms: dict[str, Any], tmp_path: Path
) -> None:
    case_id = GT_CASES[1]
    input_dir, output_dir = tmp_path / "input", tmp_path / "output"
    mr_path = _write(phantoms[case_id][0], input_dir / "images" / "mri" / f"{case_id}.mha")
    (input_dir / "images" / "body").mkdir()
    output_dir.mkdir()
    _open_up(input_dir, 0o755)
    _open_up(output_dir, 0o777)

    done = _run(algorithm_image, mounts={input_dir: "/input:ro", output_dir: "/output"})
    assert done.returncode == 0, _tail(done)
    [entry] = json.loads((output_dir / "results.json").read_text(encoding="utf-8"))
    assert entry["error_messages"] == [] and entry.get("warnings"), entry
    local_dir = tmp_path / "local"
    assert synthct_main(["predict", "--mr", str(mr_path), "--model", str(models_dir), "--out", str(local_dir),
                         "--no-progress", "--no-qa"]) == 0
    container_hu = _array(output_dir / "images" / "synthetic-ct" / f"{case_id}.mha").astype(np.int32)
    assert np.abs(container_hu - _array(local_dir / f"{case_id}.mha")).max() <= _hu_tolerance(algorithm_image)
    assert np.count_nonzero(container_hu != -1000) > 0.2 * container_hu.size, "the automatic mask found no body"


# ---------------------------------------------------------------- the evaluation image


def _job(pk: str, case_id: str, sct_name: str) -> dict[str, Any]:
    """A grand-challenge algorithm job as predictions.json lists it."""
    return {
        "pk": pk,
        "inputs": [
            {"image": {"name": f"mri_{case_id}.mha"},
             "interface": {"slug": "mri-image", "relative_path": "images/mri"}},
            {"image": {"name": f"{case_id}.mha"}, "interface": {"slug": "body", "relative_path": "images/body"}},
        ],
        "outputs": [{"image": {"name": sct_name},
                     "interface": {"slug": "synthetic-ct-image", "relative_path": "images/synthetic-ct"}}],
        "status": "Succeeded",
    }


def test_evaluation_image_metrics_equal_local_evaluate(
    evaluation_image: str, context: Path, phantoms: dict[str, Any], tmp_path: Path
) -> None:
    input_dir, output_dir, pred_dir = tmp_path / "input", tmp_path / "output", tmp_path / "pred"
    jobs = []
    rng = np.random.default_rng(7)
    for index, case_id in enumerate(GT_CASES):
        ct = phantoms[case_id][1]
        hu = sitk.GetArrayFromImage(ct).astype(np.float32)
        sct_hu = np.clip(hu + rng.normal(15.0 * (index + 1), 40.0, hu.shape), -1024, 3071).astype(np.int16)
        sct = sitk.GetImageFromArray(sct_hu)
        sct.CopyInformation(ct)
        pk, sct_name = str(uuid.uuid4()), f"{uuid.uuid4()}.mha"
        jobs.append(_job(pk, case_id, sct_name))
        _write(sct, input_dir / pk / "output" / "images" / "synthetic-ct" / sct_name)
        _write(sct, pred_dir / f"{case_id}.mha")
    (input_dir / "predictions.json").write_text(json.dumps(jobs), encoding="utf-8")
    output_dir.mkdir()
    _open_up(input_dir, 0o755)
    _open_up(output_dir, 0o777)

    done = _run(evaluation_image, mounts={input_dir: "/input:ro", output_dir: "/output"})
    assert done.returncode == 0, _tail(done)
    in_image = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    local_path = tmp_path / "local" / "metrics.json"
    assert synthct_main(["evaluate", "--pred", str(pred_dir), "--gt", str(context / "gt"), "--out", str(local_path),
                         "--no-progress"]) == 0
    local = json.loads(local_path.read_text(encoding="utf-8"))

    assert in_image["cases"] == local["cases"] == {"scored": 2, "failed": 0}
    by_case = {r["case_id"]: r for r in in_image["results"]}
    assert sorted(by_case) == sorted(GT_CASES)
    assert {r["pk"] for r in in_image["results"]} == {job["pk"] for job in jobs}
    for record in local["results"]:
        scored = by_case[record["case_id"]]
        for key in ("mae", "psnr", "ssim"):
            assert scored[key] == pytest.approx(record[key], rel=1e-12, abs=1e-12), (record["case_id"], key)
    assert in_image["aggregates"].keys() == local["aggregates"].keys() == {"mae", "psnr", "ssim"}
    for key, stats in local["aggregates"].items():
        assert in_image["aggregates"][key] == pytest.approx(stats, rel=1e-12, abs=1e-12), key
    assert 20.0 < in_image["aggregates"]["mae"]["mean"] < 100.0, "the noise added is ~30-45 HU MAE"


def test_without_docker_the_tests_skip_with_how_to_enable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    problem = _docker_problem()
    assert problem is not None and ("no Docker daemon reachable" in problem or "no `docker` command" in problem)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert _docker_problem() == "no `docker` command"
    assert "bash ../shared/tools/docker-stand-in-base" in ENABLE


# ---------------------------------------------------------------- predict mode on a DICOM series (SPEC §9)


def _dicom_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    assert len(series) == 1, series
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series[0]))
    return reader.Execute()


def test_algorithm_image_predict_mode_on_a_dicom_series(
    algorithm_image: str, models_dir: Path, phantoms: dict[str, Any], tmp_path: Path
) -> None:
    """The physicist's command: a DICOM MR folder (no suffixes, shuffled), no mask, no model argument, --dicom-out;
    run as an arbitrary non-root user (the README's ``--user "$(id -u):$(id -g)"``)."""
    import pydicom

    from synthct.dicom import read_dicom_series, write_mr_series

    case = "patient01"
    data, out = tmp_path / "data", tmp_path / "out"
    mr_files = write_mr_series(phantoms[GC_CASE][0], data / case, suffix="", shuffle_seed=3)
    out.mkdir()
    _open_up(data, 0o755)
    _open_up(out, 0o777)
    done = _run(algorithm_image, "predict", "--mr", f"/data/{case}", "--out", "/out", "--dicom-out", "--no-progress",
                mounts={data: "/data:ro", out: "/out"}, user="4321:4321")
    assert done.returncode == 0, _tail(done)
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert [entry["error_messages"] for entry in results] == [[]]
    assert (out / "body" / f"{case}.mha").is_file() and (out / "qa" / "index.html").is_file()

    mr = read_dicom_series(data / case)
    sct = sitk.ReadImage(str(out / f"{case}.mha"))
    ct_series = _dicom_series(out / "dicom" / case)
    _assert_same_geometry(sct, mr.image)
    _assert_same_geometry(ct_series, mr.image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ct_series).astype(np.int32),
                                  sitk.GetArrayFromImage(sct).astype(np.int32))
    slices = [pydicom.dcmread(path) for path in sorted((out / "dicom" / case).iterdir())]
    assert len(slices) == len(mr_files) == sct.GetSize()[2]
    source = pydicom.dcmread(mr_files[0], stop_before_pixels=True)
    for dataset in slices:
        assert dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and dataset.Modality == "CT"
        for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "FrameOfReferenceUID"):
            assert str(dataset.get(keyword)) == str(source.get(keyword)), keyword
        assert dataset.SeriesInstanceUID != source.SeriesInstanceUID

    local = tmp_path / "local"
    assert synthct_main(["predict", "--mr", str(data / case), "--model", str(models_dir), "--out", str(local),
                         "--dicom-out", "--no-progress"]) == 0
    np.testing.assert_array_equal(_array(out / "body" / f"{case}.mha"), _array(local / "body" / f"{case}.mha"))
    difference = np.abs(sitk.GetArrayFromImage(sct).astype(np.int32) - _array(local / f"{case}.mha").astype(np.int32))
    assert difference.max() <= _hu_tolerance(algorithm_image)


# ---------------------------------------------------------------- grand-challenge today (SPEC §13): weights as an
# algorithm model at /opt/ml/model, ground truth at /opt/ml/input/data/ground_truth, `synthct submission-check`

UNBAKED_TAG = "synthct-algorithm:test-cpu-nomodels"
ROOT_TAG = "synthct-algorithm:test-cpu-root"
EVALUATION_UNBAKED_TAG = "synthct-evaluation:test-nogt"
GROUND_TRUTH_MOUNT = "/opt/ml/input/data/ground_truth"


@pytest.fixture(scope="module")
def algorithm_image_unbaked(context: Path) -> str:
    """The algorithm image built without model packages (``--build-arg MODELS=``)."""
    _build(context, UNBAKED_TAG, "--build-arg", f"ORT_PACKAGE={ORT_PACKAGE}", "--build-arg", "MODELS=")
    return UNBAKED_TAG


@pytest.fixture(scope="module")
def evaluation_image_unbaked(context: Path) -> str:
    """The evaluation image built without ground truth (a folder holding only a README)."""
    (context / "no-ground-truth").mkdir(exist_ok=True)
    (context / "no-ground-truth" / "README.md").write_text("no ground truth baked in\n", encoding="utf-8")
    _build(context, EVALUATION_UNBAKED_TAG, "-f", str(context / "evaluation" / "Dockerfile"),
           "--build-arg", "GROUND_TRUTH=no-ground-truth")
    return EVALUATION_UNBAKED_TAG


@pytest.fixture(scope="module")
def model_tarball(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``synthct package models/brain``: the algorithm-model tarball of the analytic brain package."""
    return write_tarball(models_dir / "brain", tmp_path_factory.mktemp("tarball") / "model.tar.gz").path


def _gc_job_input(input_dir: Path, mr: sitk.Image, mask: sitk.Image) -> tuple[str, str]:
    """A SynthRAD 2025 job's /input: uuid file names, region.json; returns the MR's and the mask's file names."""
    mr_name, mask_name = f"{uuid.uuid4()}.mha", f"{uuid.uuid4()}.mha"
    _write(mr, input_dir / "images" / "mri" / mr_name)
    _write(mask, input_dir / "images" / "body" / mask_name)
    (input_dir / "region.json").write_text('"Brain"', encoding="utf-8")
    _open_up(input_dir, 0o755)
    return mr_name, mask_name


def test_unbaked_image_runs_the_job_from_the_algorithm_model(
    algorithm_image_unbaked: str, model_tarball: Path, phantoms: dict[str, Any], tmp_path: Path
) -> None:
    mr, _, mask = phantoms[GC_CASE]
    input_dir, output_dir, model_dir = tmp_path / "input", tmp_path / "output", tmp_path / "model"
    mr_name, mask_name = _gc_job_input(input_dir, mr, mask)
    extract_tarball(model_tarball, model_dir)  # as grand-challenge does into /opt/ml/model
    _open_up(model_dir, 0o755)
    for folder in (output_dir, tmp_path / "pred"):
        folder.mkdir()
        _open_up(folder, 0o777)
    mounts = {input_dir: "/input:ro", model_dir: "/opt/ml/model:ro"}

    done = _run(algorithm_image_unbaked, mounts={**mounts, output_dir: "/output"})
    assert done.returncode == 0, _tail(done)
    assert "models: algorithm model in /opt/ml/model: ['brain']" in done.stdout
    [entry] = json.loads((output_dir / "results.json").read_text(encoding="utf-8"))
    assert entry["error_messages"] == []
    assert entry["model_source"] == {"source": "algorithm-model", "folder": "/opt/ml/model", "regions": ["brain"]}
    job_hu = _array(output_dir / "images" / "synthetic-ct" / mr_name).astype(np.int32)
    body = sitk.GetArrayViewFromImage(mask) > 0
    assert np.all(job_hu[~body] == -1000) and np.ptp(job_hu[body]) > 500, "sCT is not a real prediction"

    # synthct predict on the same input and package: in the same image 0 HU apart, locally within the ORT tolerance
    done = _run(algorithm_image_unbaked, "predict", "--mr", f"/input/images/mri/{mr_name}", "--mask",
                f"/input/images/body/{mask_name}", "--model", "/opt/ml/model", "--out", "/pred", "--no-progress",
                "--no-qa",
                mounts={**mounts, tmp_path / "pred": "/pred"})
    assert done.returncode == 0, _tail(done)
    case_id = mr_name.removesuffix(".mha")
    np.testing.assert_array_equal(job_hu, _array(tmp_path / "pred" / f"{case_id}.mha").astype(np.int32))
    local = tmp_path / "local"
    assert synthct_main(["predict", "--mr", str(input_dir / "images" / "mri" / mr_name), "--mask",
                         str(input_dir / "images" / "body" / mask_name), "--model", str(model_dir),
                         "--out", str(local), "--no-progress", "--no-qa"]) == 0
    local_hu = _array(local / f"{case_id}.mha").astype(np.int32)
    assert np.abs(job_hu - local_hu).max() <= _hu_tolerance(algorithm_image_unbaked)


def test_unbaked_image_without_or_with_a_tampered_model_fails_clearly(
    algorithm_image_unbaked: str, models_dir: Path, phantoms: dict[str, Any], tmp_path: Path
) -> None:
    mr, _, mask = phantoms[GC_CASE]
    input_dir = tmp_path / "input"
    _gc_job_input(input_dir, mr, mask)
    tampered = tmp_path / "tampered"
    shutil.copytree(models_dir / "brain", tampered)
    with open(tampered / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    _open_up(tampered, 0o755)
    for name, extra, fragments in (
        ("none", {}, ["no model package: no algorithm model (/opt/ml/model does not exist) and none baked into the "
                      "image at /opt/app/models", "synthct package"]),
        ("tampered", {tampered: "/opt/ml/model:ro"}, ["/opt/ml/model/model.onnx: sha256",
                                                      "does not match the manifest"]),
    ):
        output_dir = tmp_path / f"output-{name}"
        output_dir.mkdir()
        _open_up(output_dir, 0o777)
        done = _run(algorithm_image_unbaked, mounts={input_dir: "/input:ro", output_dir: "/output", **extra})
        assert done.returncode == 1, (name, _tail(done))  # documented: 1 = the case(s) failed
        assert "Traceback" not in done.stdout + done.stderr
        [entry] = json.loads((output_dir / "results.json").read_text(encoding="utf-8"))
        assert entry["outputs"] == [] and all(f in entry["error_messages"][0] for f in fragments), (name, entry)
        assert all(f in done.stdout for f in fragments), (name, _tail(done))


def test_unbaked_evaluation_image_scores_against_mounted_ground_truth(
    evaluation_image_unbaked: str, context: Path, phantoms: dict[str, Any], tmp_path: Path
) -> None:
    input_dir, pred_dir = tmp_path / "input", tmp_path / "pred"
    jobs = []
    for case_id in GT_CASES:
        ct = phantoms[case_id][1]
        sct = sitk.GetImageFromArray(np.clip(sitk.GetArrayFromImage(ct).astype(np.int32) + 25, -1024, 3071)
                                     .astype(np.int16))
        sct.CopyInformation(ct)
        pk, sct_name = str(uuid.uuid4()), f"{uuid.uuid4()}.mha"
        jobs.append(_job(pk, case_id, sct_name))
        _write(sct, input_dir / pk / "output" / "images" / "synthetic-ct" / sct_name)
        _write(sct, pred_dir / f"{case_id}.mha")
    (input_dir / "predictions.json").write_text(json.dumps(jobs), encoding="utf-8")
    _open_up(input_dir, 0o755)
    ground_truth = _open_up(shutil.copytree(context / "gt", tmp_path / "ground_truth"), 0o755)

    for name, extra in (("mounted", {ground_truth: f"{GROUND_TRUTH_MOUNT}:ro"}), ("none", {})):
        output_dir = tmp_path / f"output-{name}"
        output_dir.mkdir()
        _open_up(output_dir, 0o777)
        done = _run(evaluation_image_unbaked, mounts={input_dir: "/input:ro", output_dir: "/output", **extra})
        metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
        if name == "none":  # the image has none baked in: the same error as a missing baked folder
            assert done.returncode == 1, _tail(done)
            assert "no ground-truth cases found" in metrics["error"]
            assert metrics["ground_truth"] == {"source": "image", "folder": "/opt/app/ground-truth"}
            continue
        assert done.returncode == 0, _tail(done)
        assert metrics["ground_truth"] == {"source": "mounted", "folder": GROUND_TRUTH_MOUNT}
        assert metrics["cases"] == {"scored": 2, "failed": 0}
    local_path = tmp_path / "local" / "metrics.json"
    assert synthct_main(["evaluate", "--pred", str(pred_dir), "--gt", str(ground_truth), "--out", str(local_path),
                         "--no-progress"]) == 0
    local = json.loads(local_path.read_text(encoding="utf-8"))
    mounted = json.loads((tmp_path / "output-mounted" / "metrics.json").read_text(encoding="utf-8"))
    for key, stats in local["aggregates"].items():
        assert mounted["aggregates"][key] == pytest.approx(stats, rel=1e-12, abs=1e-12), key


def _submission_check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    status = synthct_main(["submission-check", *args])
    return status, capsys.readouterr().out


def test_submission_check_passes_on_the_cpu_image_with_the_brain_package(
    algorithm_image_unbaked: str, model_tarball: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = _submission_check(capsys, algorithm_image_unbaked, "--model-tarball", str(model_tarball),
                                    "--memory", "8g")
    print(out)  # the numbers, for the record (pytest -s)
    assert status == 0, out
    for name in ("platform       linux/amd64", "user           10001:10001 (non-root)", "image size",
                 "model tarball", "job brain      exit 0"):
        assert f"PASS  {name}" in out, (name, out)
    assert "peak memory" in out and "cgroup" in out and "submission-check passed" in out


def test_submission_check_fails_on_a_root_image(
    algorithm_image_unbaked: str, model_tarball: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {algorithm_image_unbaked}\nUSER root\n", encoding="utf-8")
    _build(tmp_path, ROOT_TAG)
    status, out = _submission_check(capsys, ROOT_TAG, "--model-tarball", str(model_tarball))
    assert status == 1, out
    assert "FAIL  user           USER root is root" in out and "submission-check FAILED: 1 of" in out


def test_submission_check_fails_when_the_memory_limit_is_too_small(
    algorithm_image_unbaked: str, model_tarball: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = _submission_check(capsys, algorithm_image_unbaked, "--model-tarball", str(model_tarball),
                                    "--memory", "64m")
    print(out)
    assert status == 1, out
    assert "FAIL  job brain" in out and "exit status 137 (OOM-killed: the job needs more than --memory 64 MiB)" in out
    assert "WARN  memory" in out  # 64 MiB is outside grand-challenge's 4–32 GB
