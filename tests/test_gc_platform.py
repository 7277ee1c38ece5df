"""Grand-challenge's platform without Docker (SPEC §13): the algorithm-model tarball (``synthct package``), where
the job finds its packages (``/opt/ml/model`` before the baked ones), where the evaluation finds its ground truth,
and the judgement of ``synthct submission-check``. The images themselves: tests/test_containers.py."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from synthct.algorithm.analytic import build_analytic_package, expected_hu
from synthct.algorithm.cases import find_model_packages
from synthct.algorithm.container import run_container
from synthct.algorithm.model_archive import ArchiveError, extract_tarball, tarball_info, write_tarball
from synthct.algorithm.submission_check import CheckError, JobResult, judge_job, parse_memory, user_problem
from synthct.evaluation.container import locate_ground_truth

from synthct.cli import main as synthct_main
from synthct.model_package import load_model_package

BRAIN = {"scale": 1.5, "shift": 0.25}
OTHER_BRAIN = {"scale": 0.7, "shift": -0.1}


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``brain/`` (BRAIN) and ``pelvis/`` analytic packages."""
    root = tmp_path_factory.mktemp("packages")
    build_analytic_package(root / "brain", "brain", **BRAIN)
    build_analytic_package(root / "pelvis", "pelvis", scale=0.5, shift=-0.5)
    return root


def copy_package(packages: Path, region: str, dest: Path) -> Path:
    shutil.copytree(packages / region, dest)
    return dest


# ---------------------------------------------------------------- synthct package


def test_package_tarball_round_trip_is_deterministic(packages: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    source = copy_package(packages, "brain", tmp_path / "brain")
    (source / "notes.txt").write_text("not part of the package", encoding="utf-8")
    first = tmp_path / "first" / "model.tar.gz"
    assert synthct_main(["package", str(source), "--out", str(first)]) == 0
    printed = capsys.readouterr().out
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    assert f"sha256 {digest}" in printed and f"({first.stat().st_size} bytes)" in printed
    assert "left out (not listed in model.json): notes.txt" in printed

    for path in source.iterdir():  # other dates, same files: the same bytes
        os.utime(path, (1_700_000_000, 1_700_000_000))
    second = write_tarball(source, tmp_path / "second.tar.gz")
    assert second.sha256 == digest and second.path.read_bytes() == first.read_bytes()

    with tarfile.open(first, "r:gz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["model.json", "model.onnx"]
    assert all(m.mtime == 0 and m.uid == m.gid == 0 and m.uname == m.gname == "" and m.mode == 0o644
               for m in members)
    extracted = tmp_path / "opt_ml_model"
    assert extract_tarball(first, extracted) == {"brain": extracted}
    assert load_model_package(extracted, expected_region="brain").manifest["onnx"]["sha256"] == \
        load_model_package(source).manifest["onnx"]["sha256"]
    assert not (extracted / "notes.txt").exists()


def test_package_of_region_folders_extracts_to_region_packages(packages: Path, tmp_path: Path) -> None:
    info = write_tarball(packages, tmp_path / "model.tar.gz")
    assert info.packages == {"brain": "brain", "pelvis": "pelvis"}
    assert info.files == ["brain/model.json", "brain/model.onnx", "pelvis/model.json", "pelvis/model.onnx"]
    assert tarball_info(info.path).packages == info.packages
    extracted = tmp_path / "x"
    extract_tarball(info.path, extracted)
    found = find_model_packages(extracted)
    assert found == {"brain": extracted / "brain", "pelvis": extracted / "pelvis"}
    for region, folder in found.items():
        load_model_package(folder, expected_region=region)


def _broken(kind: str, packages: Path, root: Path) -> Path:
    if kind == "no model.json":
        (root / "weights").mkdir(parents=True)
        (root / "weights" / "best.pt").write_bytes(b"\0")
        return root
    if kind == "onnx changed":
        folder = copy_package(packages, "brain", root)
        with open(folder / "model.onnx", "ab") as handle:
            handle.write(b"\0")
        return folder
    if kind == "hash edited":
        folder = copy_package(packages, "brain", root)
        manifest = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        manifest["onnx"]["sha256"] = "0" * 64
        (folder / "model.json").write_text(json.dumps(manifest), encoding="utf-8")
        return folder
    if kind == "region folder of another region":
        copy_package(packages, "brain", root / "pelvis")
        return root
    if kind == "two packages for one region":
        copy_package(packages, "brain", root / "brain")
        copy_package(packages, "brain", root / "brain_v2")
        return root
    raise AssertionError(kind)


@pytest.mark.parametrize(("kind", "fragment"), [
    ("no model.json", "no model package"),
    ("onnx changed", "does not match the manifest"),
    ("hash edited", "does not match the manifest"),
    ("region folder of another region", "expected 'pelvis'"),
    ("two packages for one region", "several packages for one region"),
])
def test_package_refuses_a_layout_that_would_not_load(kind: str, fragment: str, packages: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    source = _broken(kind, packages, tmp_path / "source")
    out = tmp_path / "model.tar.gz"
    assert synthct_main(["package", str(source), "--out", str(out)]) == 2
    assert fragment in caplog.text and "no tarball written" in caplog.text
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _tarball(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def test_extract_refuses_links_escapes_and_packages_too_deep(packages: Path, tmp_path: Path) -> None:
    link = tarfile.TarInfo("model.json")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    escape = tarfile.TarInfo("../model.json")
    escape.size = 2
    with pytest.raises(ArchiveError, match="not a regular file or folder"):
        extract_tarball(_tarball(tmp_path / "link.tar.gz", [(link, None)]), tmp_path / "a")
    with pytest.raises(ArchiveError, match="outside the model folder"):
        extract_tarball(_tarball(tmp_path / "escape.tar.gz", [(escape, b"{}")]), tmp_path / "b")
    deep = tmp_path / "deep.tar.gz"
    with tarfile.open(deep, "w:gz") as tar:
        tar.add(packages / "brain", arcname="export/models/brain")
    with pytest.raises(ArchiveError, match=r"deep\.tar\.gz: .*no model package.*only deeper down"):
        extract_tarball(deep, tmp_path / "c")
    (tmp_path / "plain.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(ArchiveError, match=r"not a readable \.tar\.gz"):
        extract_tarball(tmp_path / "plain.tar.gz", tmp_path / "d")


# ---------------------------------------------------------------- the job: /opt/ml/model before the baked packages


def _job_input(folder: Path, region_json: str | None = '"Brain"') -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    mask = np.zeros((20, 40, 36), np.uint8)
    mask[3:17, 6:34, 5:31] = 1
    mr = (rng.uniform(50, 900, mask.shape) * mask).astype(np.float32)
    for sub, array, name in (("mri", mr, "3f0e9a52-mr.mha"), ("body", mask, "c71d0b44-mask.mha")):
        (folder / "images" / sub).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(sitk.GetImageFromArray(array), str(folder / "images" / sub / name))
    if region_json is not None:
        (folder / "region.json").write_text(region_json, encoding="utf-8")
    return mr, mask


def _job(tmp_path: Path, mounted: Path, baked: Path, region_json: str | None = '"Brain"') -> tuple[int, list, Path]:
    inp, out = tmp_path / "input", tmp_path / "output"
    if not inp.exists():
        _job_input(inp, region_json)
    env = {**os.environ, "SYNTHCT_INPUT": str(inp), "SYNTHCT_OUTPUT": str(out), "SYNTHCT_PROGRESS": "0",
           "SYNTHCT_ALGORITHM_MODEL": str(mounted), "SYNTHCT_MODELS": str(baked)}
    status = run_container(env)
    return status, json.loads((out / "results.json").read_text(encoding="utf-8")), out


def test_algorithm_model_wins_over_the_baked_packages(packages: Path, tmp_path: Path) -> None:
    baked = tmp_path / "baked"
    build_analytic_package(baked / "brain", "brain", **OTHER_BRAIN)
    mounted = tmp_path / "opt_ml_model"
    extract_tarball(write_tarball(packages / "brain", tmp_path / "model.tar.gz").path, mounted)
    status, [entry], out = _job(tmp_path, mounted, baked)
    assert status == 0 and entry["error_messages"] == []
    assert entry["model_source"] == {"source": "algorithm-model", "folder": str(mounted), "regions": ["brain"]}
    mr, mask = (sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in
                (tmp_path / "input/images/mri/3f0e9a52-mr.mha", tmp_path / "input/images/body/c71d0b44-mask.mha"))
    sct = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "images/synthetic-ct/3f0e9a52-mr.mha")))
    assert np.abs(sct.astype(np.int32) - expected_hu(mr, mask, **BRAIN)).max() <= 1
    assert np.abs(sct.astype(np.int32) - expected_hu(mr, mask, **OTHER_BRAIN)).max() > 50


def test_empty_or_absent_algorithm_model_falls_back_to_the_baked_packages(packages: Path, tmp_path: Path) -> None:
    empty = tmp_path / "opt_ml_model"
    (empty / ".hidden").mkdir(parents=True)
    for mounted in (empty, tmp_path / "absent"):
        status, [entry], _ = _job(tmp_path, mounted, packages)
        assert status == 0 and entry["error_messages"] == [], entry
        assert entry["model_source"] == {"source": "image", "folder": str(packages), "regions": ["brain", "pelvis"]}


@pytest.mark.parametrize(("kind", "fragments"), [
    ("junk", ["(algorithm model): no model package", "found weights/", "synthct package"]),
    ("too deep", ["no model package", "only deeper down (export/brain/model.json)"]),
    ("tampered", ["model.onnx: sha256", "does not match the manifest"]),
    ("other region", ["no model installed for region 'brain'", "names it", "algorithm model", "['pelvis']"]),
])
def test_a_wrong_algorithm_model_fails_every_case_saying_what_was_found(
    kind: str, fragments: list[str], packages: Path, tmp_path: Path
) -> None:
    mounted = tmp_path / "opt_ml_model"
    if kind == "junk":
        (mounted / "weights").mkdir(parents=True)
        (mounted / "weights" / "best.pt").write_bytes(b"\0")
    elif kind == "too deep":
        copy_package(packages, "brain", mounted / "export" / "brain")
    elif kind == "tampered":
        copy_package(packages, "brain", mounted)
        with open(mounted / "model.onnx", "ab") as handle:
            handle.write(b"\0")
    else:
        copy_package(packages, "pelvis", mounted / "pelvis")
    status, [entry], out = _job(tmp_path, mounted, packages)  # the baked brain package is not used instead
    assert status == 1 and entry["outputs"] == []
    message = entry["error_messages"][0]
    assert all(fragment in message for fragment in fragments), message
    assert entry["model_source"]["source"] == "algorithm-model"
    assert not (out / "images" / "synthetic-ct" / "3f0e9a52-mr.mha").exists()


def test_no_package_anywhere_fails_every_case_with_how_to_fix(tmp_path: Path) -> None:
    status, [entry], _ = _job(tmp_path, tmp_path / "absent", tmp_path / "baked-none")
    assert status == 1
    message = entry["error_messages"][0]
    assert f"no algorithm model ({tmp_path / 'absent'} does not exist)" in message
    assert f"none baked into the image at {tmp_path / 'baked-none'}" in message and "synthct package" in message


# ---------------------------------------------------------------- the evaluation's ground truth


def test_mounted_ground_truth_wins_when_it_holds_anything(tmp_path: Path) -> None:
    mounted, baked = tmp_path / "ground_truth", tmp_path / "baked"
    env = {"SYNTHCT_GROUND_TRUTH_INPUT": str(mounted), "SYNTHCT_GROUND_TRUTH": str(baked)}
    assert locate_ground_truth(env) == (baked, "image")
    mounted.mkdir()
    (mounted / ".keep").write_text("", encoding="utf-8")
    assert locate_ground_truth(env) == (baked, "image")
    (mounted / "ct").mkdir()
    assert locate_ground_truth(env) == (mounted, "mounted")
    assert locate_ground_truth({**env, "SYNTHCT_GROUND_TRUTH_INPUT": ""}) == (baked, "image")


# ---------------------------------------------------------------- submission-check's judgement


def test_memory_notation_and_root_users() -> None:
    assert parse_memory("8g") == 8 * 1024**3 and parse_memory("200m") == 200 * 1024**2
    assert parse_memory("512MiB") == 512 * 1024**2 and parse_memory("1073741824") == 1024**3
    for bad in ("", "eight", "-1g", "0"):
        with pytest.raises(CheckError):
            parse_memory(bad)
    for user in ("", "root", "0", "0:0", "root:root"):
        assert user_problem(user) is not None, user
    for user in ("10001", "10001:10001", "algorithm", "user:user"):
        assert user_problem(user) is None, user


def test_an_oom_killed_or_slow_job_fails_with_the_reason() -> None:
    memory = 200 * 1024**2
    oom = JobResult("brain", exit_code=137, seconds=3.2, peak_bytes=memory, peak_method="cgroup", oom_killed=True,
                    log_tail=["Killed"])
    check = judge_job(oom, memory, 1200)
    assert check.status == "FAIL" and "exit status 137 (OOM-killed: the job needs more than --memory 200 MiB)" in \
        check.detail
    slow = JobResult("th", exit_code=137, seconds=12.0, peak_bytes=10**8, timed_out=True)
    assert "killed at the 10 s time limit" in judge_job(slow, 8 * 1024**3, 10).detail
    good = JobResult("brain", exit_code=0, seconds=5.0, peak_bytes=300 * 1024**2, peak_method="cgroup")
    assert judge_job(good, 8 * 1024**3, 1200).status == "PASS"
    assert judge_job(good, 1024**3, 1200).status == "WARN"  # within grand-challenge's reserved 1 GB
    no_output = JobResult("brain", exit_code=0, problems=["no /output/images/synthetic-ct/x.mha"])
    assert judge_job(no_output, 8 * 1024**3, 1200).status == "FAIL"


def test_package_and_submission_check_import_no_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, synthct.algorithm.model_archive, synthct.algorithm.submission_check, "
            "synthct.algorithm.container; "
            "bad = [m for m in ('torch', 'monai') if m in sys.modules]; sys.exit(str(bad) if bad else 0)")
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], check=True, timeout=120)
