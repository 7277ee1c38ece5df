"""Fault tests (issue 16): what a careful user and a hostile input do to every command.

Sections, each with its own helpers:

- Truncated images (defects 1 and 5): see its section below.
- Output locations, temporaries, merging, messages and telemetry (defects 2, 3, 4, 6).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from synthct.algorithm.analytic import build_analytic_package
from synthct.algorithm.container import run_container
from train_helpers import HANG_GUARD_S

from synthct.cli import main as synthct_main
from synthct.outputs import LOCK_NAME, output_session

# ====================================================================================================================
# Truncated images (issue 16: defects 1 and 5)
# ====================================================================================================================

# Every image read is complete or an error naming the file and saying "truncated: N of M bytes" / "corrupt
# compressed data", in every stage: predict, the grand-challenge job, evaluate, data prepare / the training cache,
# data check. SimpleITK alone zero-fills a truncated .nii.gz / .nii without an error and misreads damaged compressed
# data silently. Helpers and fixtures of this section are prefixed ``trunc``.

TRUNC_FORMATS: dict[str, tuple[str, bool]] = {
    "nii.gz": (".nii.gz", True),
    "nii": (".nii", False),
    "mha-raw": (".mha", False),
    "mha-zlib": (".mha", True),
    "mhd-raw": (".mhd", False),
    "mhd-zlib": (".mhd", True),
    "nrrd-raw": (".nrrd", False),
    "nrrd-gzip": (".nrrd", True),
}
"""Format id → (file suffix, compressed): every way synthct reads an image file."""
TRUNC_PATTERN = r"truncated: (\d+) of (\d+) bytes"


def trunc_write(array: np.ndarray, path: Path, compressed: bool = True, reference: sitk.Image | None = None) -> Path:
    """Write a (z, y, x) array as an image file (geometry of ``reference``, else spacing 1 × 1 × 2.5 mm)."""
    image = sitk.GetImageFromArray(array)
    if reference is not None:
        image.CopyInformation(reference)
    else:
        image.SetSpacing((1.0, 1.0, 2.5))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=compressed)
    return path


def trunc_data_file(path: Path) -> Path:
    """The file holding the voxel data: the image itself, or the ``.raw``/``.zraw`` beside a ``.mhd``."""
    if path.suffix != ".mhd":
        return path
    for line in path.read_text(encoding="latin-1").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ElementDataFile":
            return path.parent / value.strip()
    raise AssertionError(f"{path}: no ElementDataFile")


def trunc_cut(path: Path, fraction: float = 0.5) -> Path:
    """Cut the image's data file to ``fraction`` of its bytes; returns the data file."""
    data_file = trunc_data_file(path)
    content = data_file.read_bytes()
    data_file.write_bytes(content[: int(len(content) * fraction)])
    return data_file


def trunc_flip(path: Path) -> Path:
    """Flip one bit three quarters into the data file (inside the compressed stream); size unchanged."""
    data_file = trunc_data_file(path)
    content = bytearray(data_file.read_bytes())
    content[len(content) * 3 // 4] ^= 0x10
    data_file.write_bytes(bytes(content))
    return data_file


def trunc_noise(shape: tuple[int, int, int] = (12, 20, 18), seed: int = 0) -> np.ndarray:
    """int16 values 1…2999 (no zeros, barely compressible: the compressed stream dominates the file)."""
    return np.random.default_rng(seed).integers(1, 3000, shape).astype(np.int16)


@pytest.mark.parametrize("fmt", list(TRUNC_FORMATS))
def test_truncated_file_is_refused_by_name_with_its_sizes(tmp_path: Path, fmt: str) -> None:
    from synthct.io import ImageError, read_header_geometry, read_image

    suffix, compressed = TRUNC_FORMATS[fmt]
    array = trunc_noise()
    path = trunc_write(array, tmp_path / f"mr{suffix}", compressed)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(path)), array)  # intact: read as written
    read_header_geometry(path)
    original = trunc_data_file(path).read_bytes()
    for fraction in (0.99, 0.5, 0.05):
        trunc_data_file(path).write_bytes(original)
        data_file = trunc_cut(path, fraction)
        for reader in (read_image, read_header_geometry):
            with pytest.raises(ImageError) as caught:
                reader(path)
            message = str(caught.value)
            assert message.startswith(str(data_file)) and "truncated" in message, (fraction, reader, message)
            found = re.search(TRUNC_PATTERN, message)
            if fraction >= 0.5:  # past the header: N of M bytes, N < M
                assert found and int(found[1]) < int(found[2]), message
                if not compressed:
                    assert int(found[1]) == data_file.stat().st_size, message


@pytest.mark.parametrize("fmt", [f for f, (_, compressed) in TRUNC_FORMATS.items() if compressed])
def test_corrupt_compressed_data_are_refused(tmp_path: Path, fmt: str) -> None:
    from synthct.io import ImageError, read_header_geometry, read_image

    suffix, _ = TRUNC_FORMATS[fmt]
    path = trunc_write(trunc_noise(seed=1), tmp_path / f"ct{suffix}")
    data_file = trunc_flip(path)
    with pytest.raises(ImageError, match=re.escape(str(data_file)) + r".*: corrupt compressed data: "):
        read_image(path)
    if suffix in (".mha", ".mhd"):  # a text header: reading it alone cannot see damage inside the stream (documented
        read_header_geometry(path)  # for --headers-only); SimpleITK's NIfTI/NRRD header reads may decode some data


def test_gzip_trailer_cut_and_trailing_garbage_are_refused(tmp_path: Path) -> None:
    from synthct.io import ImageError, read_image

    path = trunc_write(trunc_noise(seed=2), tmp_path / "mr.nii.gz")
    original = path.read_bytes()
    path.write_bytes(original[:-4])  # every voxel there, the length trailer gone
    with pytest.raises(ImageError, match=r"mr\.nii\.gz: truncated: .*before its checksum trailer"):
        read_image(path)
    path.write_bytes(original + b"\x01garbage")
    with pytest.raises(ImageError, match=r"mr\.nii\.gz: corrupt compressed data: unexpected bytes after the end"):
        read_image(path)
    path.write_bytes(original + b"\0" * 16)  # gzip allows zero padding
    read_image(path)


def test_raw_file_longer_than_its_header_is_refused(tmp_path: Path) -> None:
    from synthct.io import ImageError, read_image

    path = trunc_write(trunc_noise(seed=3), tmp_path / "mr.nii", compressed=False)
    path.write_bytes(path.read_bytes() + b"\0\0")
    with pytest.raises(ImageError, match=r"mr\.nii: \d+ bytes where the header describes \d+"):
        read_image(path)


@pytest.fixture(scope="module")
def trunc_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from synthct.algorithm.analytic import build_analytic_package

    root = tmp_path_factory.mktemp("trunc_models")
    build_analytic_package(root / "brain", "brain", scale=1.5, shift=0.25)
    return root


def trunc_mr_and_mask(seed: int, shape: tuple[int, int, int] = (20, 28, 24)) -> tuple[sitk.Image, np.ndarray,
                                                                                     np.ndarray]:
    """(reference geometry, MR float32 array, mask uint8 array) of a small case with a box-shaped body (speckled, so
    that its compressed data, not its header, make most of the file)."""
    rng = np.random.default_rng(seed)
    mr = rng.uniform(50.0, 800.0, shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[2:-2, 3:-3, 3:-3] = rng.random((shape[0] - 4, shape[1] - 6, shape[2] - 6)) > 0.3
    reference = sitk.GetImageFromArray(mr)
    reference.SetSpacing((1.0, 1.0, 2.5))
    reference.SetOrigin((-5.0, 3.0, 20.0))
    return reference, mr, mask


def trunc_predict_inputs(root: Path, cases: dict[str, tuple[str, str | None]]) -> dict[str, Path]:
    """``root/images/{mri,body}/<case id><suffix>`` for ``case id → (format id, damaged: "mr"/"mask"/None)``;
    the damaged file is cut to half. Returns case id → the damaged data file (or the MR of an intact case)."""
    damaged: dict[str, Path] = {}
    for seed, (case_id, (fmt, which)) in enumerate(cases.items()):
        suffix, compressed = TRUNC_FORMATS[fmt]
        reference, mr, mask = trunc_mr_and_mask(seed)
        mr_path = trunc_write(mr, root / "images" / "mri" / f"{case_id}{suffix}", compressed, reference)
        mask_path = trunc_write(mask, root / "images" / "body" / f"{case_id}{suffix}", compressed, reference)
        damaged[case_id] = mr_path if which is None else trunc_cut(mr_path if which == "mr" else mask_path)
    return damaged


TRUNC_PREDICT_CASES: dict[str, tuple[str, str | None]] = {
    "caseA": ("mha-zlib", None),
    "caseB": ("nii.gz", "mr"),
    "caseC": ("nii", "mr"),
    "caseD": ("mha-raw", "mr"),
    "caseE": ("nrrd-gzip", "mr"),
    "caseF": ("mha-zlib", "mask"),
    "caseG": ("nii.gz", "mask"),
    "caseH": ("nrrd-raw", "mask"),
}


def trunc_check_results(results: list[dict], damaged: dict[str, Path], good: set[str]) -> None:
    """Every damaged case: one error naming its damaged file and "truncated: N of M bytes", no output; good cases:
    an output and no error."""
    by_case = {Path(entry["inputs"][0]["filename"]).name.split(".")[0]: entry for entry in results}
    assert set(by_case) == set(damaged)
    for case_id, entry in by_case.items():
        if case_id in good:
            assert entry["error_messages"] == [] and entry["outputs"], entry
            continue
        assert entry["outputs"] == [], entry
        assert len(entry["error_messages"]) == 1, entry
        message = entry["error_messages"][0]
        assert str(damaged[case_id]) in message and re.search(TRUNC_PATTERN, message), (case_id, message)


def test_predict_refuses_truncated_mr_and_mask_per_case(tmp_path: Path, trunc_models: Path) -> None:
    inp, out = tmp_path / "input", tmp_path / "out"
    damaged = trunc_predict_inputs(inp, TRUNC_PREDICT_CASES)
    code = synthct_main(["predict", "--mr", str(inp / "images" / "mri"), "--mask", str(inp / "images" / "body"),
                         "--model", str(trunc_models / "brain"), "--out", str(out), "--no-progress"])
    assert code == 1
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    trunc_check_results(results, damaged, good={"caseA"})
    assert sorted(p.name for p in out.glob("*.mha")) == ["caseA.mha"]  # no sCT from a half-read MR or mask


def test_container_job_refuses_truncated_inputs_per_case(tmp_path: Path, trunc_models: Path) -> None:
    from synthct.algorithm.container import run_container

    inp, out = tmp_path / "input", tmp_path / "output"
    damaged = trunc_predict_inputs(inp, {"1BA001": ("mha-zlib", None), "1BA002": ("nii.gz", "mr"),
                                         "1BA003": ("nii", "mask"), "1BA004": ("nrrd-gzip", "mask")})
    (inp / "region.json").write_text('"Brain"', encoding="utf-8")
    env = {**os.environ, "SYNTHCT_INPUT": str(inp), "SYNTHCT_OUTPUT": str(out), "SYNTHCT_MODELS": str(trunc_models),
           "SYNTHCT_PROGRESS": "0"}
    assert run_container(env) == 1
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    trunc_check_results(results, damaged, good={"1BA001"})
    assert [p.name for p in (out / "images" / "synthetic-ct").iterdir()] == ["1BA001.mha"]


def test_evaluate_refuses_truncated_prediction_and_ground_truth(tmp_path: Path) -> None:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    shape = (12, 20, 18)
    rng = np.random.default_rng(4)
    mask = np.zeros(shape, np.uint8)
    mask[1:-1, 2:-2, 2:-2] = rng.random((shape[0] - 2, shape[1] - 4, shape[2] - 4)) > 0.3
    ct = np.where(mask > 0, rng.integers(-200, 1500, shape), -1000).astype(np.int16)
    sct = (ct + rng.integers(-50, 50, shape)).astype(np.int16)
    cases = {  # case id → (format id of its files, which file is cut)
        "1PA001": ("mha-zlib", None),
        "1PA002": ("nii.gz", "pred"),
        "1PA003": ("nrrd-raw", "pred"),
        "1PA004": ("nii", "ct"),
        "1PA005": ("mha-zlib", "mask"),
        "1PA006": ("nrrd-gzip", "ct"),
    }
    damaged: dict[str, Path] = {}
    for case_id, (fmt, which) in cases.items():
        suffix, compressed = TRUNC_FORMATS[fmt]
        files = {"ct": trunc_write(ct, gt / "ct" / f"{case_id}{suffix}", compressed),
                 "mask": trunc_write(mask, gt / "mask" / f"{case_id}{suffix}", compressed),
                 "pred": trunc_write(sct, pred / f"{case_id}{suffix}", compressed)}
        if which is not None:
            damaged[case_id] = trunc_cut(files[which])
    out = tmp_path / "metrics.json"
    assert synthct_main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out), "--no-progress"]) == 1
    records = {r["case_id"]: r for r in json.loads(out.read_text(encoding="utf-8"))["results"]}
    assert records["1PA001"]["error"] is None and records["1PA001"]["mae"] is not None
    for case_id, path in damaged.items():
        error = records[case_id]["error"]
        assert error and str(path) in error and re.search(TRUNC_PATTERN, error), (case_id, error)
        assert records[case_id]["mae"] is None  # never a score from a half-read image


def trunc_dataset(root: Path, suffixes: tuple[str, ...] = (".nii.gz", ".nii.gz"),
                  shape: tuple[int, int, int] = (20, 28, 24)) -> Path:
    """``root/Task1/brain/1BA00N/{mr,ct,mask}<suffixes[N - 1]>`` (compressed): a box-shaped body, MR and CT noise
    inside. Returns root."""
    for index, suffix in enumerate(suffixes):
        rng = np.random.default_rng(index)
        mask = np.zeros(shape, np.uint8)
        mask[2:-2, 3:-3, 3:-3] = 1
        ct = np.where(mask > 0, rng.integers(-100, 1200, shape), -1000).astype(np.int16)
        mr = np.where(mask > 0, rng.uniform(100.0, 900.0, shape), 0.0).astype(np.float32)
        folder = root / "Task1" / "brain" / f"1BA{index + 1:03d}"
        for name, array in (("mr", mr), ("ct", ct), ("mask", mask)):
            trunc_write(array, folder / f"{name}{suffix}")
    return root


def test_data_check_reads_every_volume_and_headers_only_misses_inner_damage(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = trunc_dataset(tmp_path / "data", (".nii.gz", ".nii.gz", ".mha"))
    assert synthct_main(["data", "check", str(data)]) == 0
    assert "all valid (every volume read completely)" in capsys.readouterr().out
    truncated = trunc_cut(data / "Task1" / "brain" / "1BA002" / "ct.nii.gz")
    corrupt = trunc_flip(data / "Task1" / "brain" / "1BA003" / "mr.mha")

    assert synthct_main(["data", "check", str(data)]) == 1
    full = capsys.readouterr().out
    assert re.search(rf"1BA002: {re.escape(str(truncated))}: {TRUNC_PATTERN}", full), full
    assert f"1BA003: {corrupt}: corrupt compressed data" in full, full
    assert "all valid" not in full

    # --headers-only: a stat and the gzip length trailer find the truncated file; the damaged middle of a
    # complete compressed stream is found only by the full read (documented in the option's help)
    assert synthct_main(["data", "check", str(data), "--headers-only"]) == 1
    fast = capsys.readouterr().out
    assert re.search(rf"1BA002: {re.escape(str(truncated))}: {TRUNC_PATTERN}", fast), fast
    assert "1BA003" in fast and str(corrupt) not in fast, fast


def test_data_prepare_and_cache_refuse_a_damaged_training_case(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    from synthct.cache import CacheError, open_cache, prepare_cache, settings_for_patch
    from synthct.dataset import DatasetError

    data = trunc_dataset(tmp_path / "data", (".nii.gz", ".mha"))
    cache = tmp_path / "cache"
    args = ["data", "prepare", str(data), "--region", "brain", "--out", str(cache), "--workers", "1",
            "--no-progress", "--patch", "32", "32", "32"]
    assert synthct_main(args) == 0
    settings = settings_for_patch("brain", (32, 32, 32))
    open_cache(data, settings, cache)

    ct = data / "Task1" / "brain" / "1BA002" / "ct.mha"  # a text header: the header scan cannot see inside
    before = ct.stat()
    trunc_flip(ct)  # same size; a later mtime marks the cached case stale
    os.utime(ct, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    with pytest.raises(CacheError, match="1BA002"):
        open_cache(data, settings, cache)  # the damaged case's old arrays are never served
    caplog.clear()
    assert synthct_main(args) == 1  # the rebuild reads the case completely
    assert f"1BA002: {ct}: corrupt compressed data" in caplog.text, caplog.text
    with pytest.raises(DatasetError, match=re.escape(f"1BA002: {ct}: corrupt compressed data")):
        prepare_cache(data, settings, cache, workers=1, progress=False)
    with pytest.raises(CacheError, match="1BA002"):
        open_cache(data, settings, cache)

    mr = trunc_cut(data / "Task1" / "brain" / "1BA001" / "mr.nii.gz")
    caplog.clear()
    assert synthct_main(args) == 1
    assert re.search(rf"1BA001: {re.escape(str(mr))}: {TRUNC_PATTERN}", caplog.text), caplog.text

# ====================================================================================================================
# Output locations, temporaries, merging, messages and telemetry (issue 16: defects 2, 3, 4, 6)
# ====================================================================================================================

OUT_REPO = Path(__file__).resolve().parents[1]
OUT_UNPRIVILEGED = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
"""Root ignores file permissions: the read-only-folder cases run as ``nobody`` when the tests run as root."""


@pytest.fixture(scope="module")
def out_world() -> Iterator[Path]:
    """A scratch folder every user can read (pytest's own tmp is private to root): models and inputs live here."""
    root = Path(tempfile.mkdtemp(prefix="synthct-faults-"))
    root.chmod(0o755)
    build_analytic_package(root / "models" / "brain", "brain", patch_size=(32, 32, 32))
    build_analytic_package(root / "models" / "pelvis", "pelvis", scale=0.5, shift=-0.5, patch_size=(32, 32, 32))
    yield root
    for path in [root, *root.rglob("*")]:  # undo the read-only folders of the tests before removing
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(root, ignore_errors=True)


def out_case(mr_value: float | None = None, seed: int = 0) -> tuple[sitk.Image, sitk.Image]:
    """A small MR (random, or constant ``mr_value``) and its box body mask."""
    shape = (30, 40, 36)
    rng = np.random.default_rng(seed)
    mr = rng.uniform(0.0, 800.0, shape).astype(np.float32) if mr_value is None else np.full(shape, mr_value,
                                                                                         np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[3:-3, 5:-5, 5:-5] = 1
    return sitk.GetImageFromArray(mr), sitk.GetImageFromArray(mask)


def out_write_case(folder: Path, case_id: str, mask_folder: Path | None = None, mask_name: str | None = None,
                   **kwargs: object) -> Path:
    """Write ``folder/<case id>.mha`` (and the mask as ``mask_folder/<mask_name or case id>.mha``); returns the MR."""
    mr, mask = out_case(**kwargs)  # type: ignore[arg-type]
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(mr, str(folder / f"{case_id}.mha"))
    if mask_folder is not None:
        mask_folder.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(mask, str(mask_folder / f"{mask_name or case_id}.mha"))
    return folder / f"{case_id}.mha"


def out_run(args: list[str], env: dict[str, str] | None = None, unprivileged: bool = False,
            prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` from the repository (as ``nobody`` when ``unprivileged`` and we are root)."""
    command = [*(prefix or []), sys.executable, *args]
    if unprivileged and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: a read-only folder cannot be made unwritable")
        command = [*OUT_UNPRIVILEGED, *command]
    full_env = {**os.environ, "SYNTHCT_PROGRESS": "0", **(env or {})}
    return subprocess.run(command, cwd=OUT_REPO, env=full_env, capture_output=True, text=True, encoding="utf-8",
                          timeout=HANG_GUARD_S, check=False)


def out_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr + result.stdout


def out_read_only(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    return folder


def out_ground_truth(root: Path, case_ids: tuple[str, ...] = ("1BA001",)) -> tuple[Path, Path]:
    """``root/gt/{ct,mask}/<id>.mha`` and ``root/pred/<id>.mha`` (the CT plus noise)."""
    for case_id in case_ids:
        ct = np.where(sitk.GetArrayFromImage(out_case()[1]) > 0, 40.0, -1000.0).astype(np.float32)
        for kind, array in (("ct", ct), ("mask", sitk.GetArrayFromImage(out_case()[1])),
                            ("pred", ct + np.random.default_rng(1).normal(0, 30, ct.shape).astype(np.float32))):
            folder = root / "pred" if kind == "pred" else root / "gt" / kind
            folder.mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(sitk.GetImageFromArray(array), str(folder / f"{case_id}.mha"))
    return root / "gt", root / "pred"


# ---------------------------------------------------------------- unusable output locations: exit 2, no inference


@pytest.mark.parametrize("kind", ["existing file", "read-only folder", "qa is a file"])
def test_predict_refuses_an_unusable_out_before_any_inference(out_world: Path, kind: str) -> None:
    base = Path(tempfile.mkdtemp(dir=out_world))
    base.chmod(0o755)
    mr = out_write_case(base / "mr", "1BA001", base / "mask")
    out = base / "out"
    if kind == "existing file":
        out.write_text("not a folder")
    elif kind == "read-only folder":
        out_read_only(out)
    else:
        out.mkdir()
        (out / "qa").write_text("not a folder")
    result = out_run(["-m", "synthct", "predict", "--mr", str(mr), "--mask", str(base / "mask" / "1BA001.mha"),
                      "--model", str(out_world / "models"), "--out", str(out), "--no-progress"],
                     unprivileged=kind == "read-only folder")
    assert result.returncode == 2, result.stderr
    out_no_traceback(result)
    reason = "not writable" if kind == "read-only folder" else "exists and is not a folder"
    assert reason in result.stderr and str(out) in result.stderr
    assert "[1/1]" not in result.stderr  # refused before the case ran
    assert not (out / "1BA001.mha").exists() if out.is_dir() else True


@pytest.mark.parametrize("kind", ["read-only folder", "existing file"])
def test_container_unwritable_output_exits_2_without_traceback(out_world: Path, kind: str) -> None:
    base = Path(tempfile.mkdtemp(dir=out_world))
    base.chmod(0o755)
    out_write_case(base / "input" / "images" / "mri", "1BA001", base / "input" / "images" / "body")
    output = base / "output"
    if kind == "existing file":
        output.write_text("not a folder")
    else:
        out_read_only(output)
    env = {"SYNTHCT_INPUT": str(base / "input"), "SYNTHCT_OUTPUT": str(output),
           "SYNTHCT_MODELS": str(out_world / "models")}
    result = out_run(["-m", "synthct.algorithm"], env, unprivileged=kind == "read-only folder")
    assert result.returncode == 2, result.stdout + result.stderr
    out_no_traceback(result)
    assert str(output) in result.stdout + result.stderr
    assert "1BA001" not in result.stdout  # no case was read


@pytest.mark.parametrize("kind", ["read-only metrics folder", "--out is a folder", "--pictures is a file"])
def test_evaluate_refuses_an_unusable_out_before_scoring(out_world: Path, kind: str) -> None:
    base = Path(tempfile.mkdtemp(dir=out_world))
    base.chmod(0o755)
    gt, pred = out_ground_truth(base)
    args = ["-m", "synthct", "evaluate", "--pred", str(pred), "--gt", str(gt), "--no-progress"]
    if kind == "read-only metrics folder":
        args += ["--out", str(out_read_only(base / "ro") / "metrics.json")]
    elif kind == "--out is a folder":
        (base / "metrics").mkdir()
        args += ["--out", str(base / "metrics")]
    else:
        (base / "pictures").write_text("not a folder")
        args += ["--out", str(base / "metrics.json"), "--pictures", str(base / "pictures")]
    result = out_run(args, unprivileged=kind == "read-only metrics folder")
    assert result.returncode == 2, result.stderr
    out_no_traceback(result)
    assert {"read-only metrics folder": "not writable", "--out is a folder": "is a folder",
            "--pictures is a file": "exists and is not a folder"}[kind] in result.stderr
    assert "mae" not in result.stderr.lower()  # no case was scored
    assert not (base / "metrics.json").exists()


def test_an_unexpected_error_is_one_line_and_a_log_file(out_world: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A bug inside a case: one log line naming the traceback file in the output folder; the case fails."""
    import synthct.algorithm.runner as runner_module

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("planted bug")

    monkeypatch.setattr(runner_module, "predict_case", broken)
    mr = out_write_case(tmp_path / "mr", "1BA001", tmp_path / "mask")
    out = tmp_path / "out"
    code = synthct_main(["predict", "--mr", str(mr), "--mask", str(tmp_path / "mask" / "1BA001.mha"), "--model",
                         str(out_world / "models"), "--out", str(out), "--no-progress", "--no-qa"])
    assert code == 1
    lines = [r.getMessage() for r in caplog.records if "planted bug" in r.getMessage()]
    assert len(lines) == 1 and f"traceback in {out / 'synthct-errors.log'}" in lines[0]
    assert not any(r.exc_info for r in caplog.records)
    log_text = (out / "synthct-errors.log").read_text(encoding="utf-8")
    assert "Traceback" in log_text and "KeyError: 'planted bug'" in log_text


# ---------------------------------------------------------------- temporaries of a killed write; concurrent runs


def test_leftover_temporaries_are_removed_at_start_and_others_left_alone(out_world: Path, tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    mr = out_write_case(tmp_path / "mr", "1BA001", tmp_path / "mask")
    out = tmp_path / "out"
    (out / "dicom" / ".synthct-tmp-1BA001.k2j3h4g5.tmp").mkdir(parents=True)  # a killed DICOM series write
    (out / "dicom" / ".synthct-tmp-1BA001.k2j3h4g5.tmp" / "CT0001.dcm").write_bytes(b"half a series")
    (out / ".synthct-tmp-1BA001.mha.a1b2c3d4.mha").write_bytes(b"")  # a killed image write
    (out / "qa").mkdir()
    (out / "qa" / ".synthct-tmp-index.html.x9y8z7w6.html").write_text("<html")
    outside = tmp_path / "precious.txt"
    outside.write_text("not ours")
    (out / ".synthct-tmp-link").symlink_to(outside)  # a link with our prefix: unlinked, never followed
    (out / ".keep-me").write_text("a user's hidden file")
    (out / "notes.synthct-tmp-.txt").write_text("our prefix inside the name only")
    code = synthct_main(["predict", "--mr", str(mr), "--mask", str(tmp_path / "mask" / "1BA001.mha"), "--model",
                         str(out_world / "models"), "--out", str(out), "--no-progress", "--dicom-out"])
    assert code == 0
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if ".synthct-tmp-" in p.name)
    assert left == ["notes.synthct-tmp-.txt"]
    assert outside.read_text() == "not ours" and (out / ".keep-me").exists()
    assert not (out / LOCK_NAME).exists()  # the lock goes with the run
    notes = [r.getMessage() for r in caplog.records if "interrupted earlier write" in r.getMessage()]
    assert len(notes) == 4
    assert len(list((out / "dicom" / "1BA001").iterdir())) == 30


def test_evaluate_ignores_temporaries_and_cleans_its_own(out_world: Path, tmp_path: Path) -> None:
    gt, pred = out_ground_truth(tmp_path)
    (pred / ".synthct-tmp-1BA001.mha.q1w2e3r4.mha").write_bytes(b"")  # killed sCT write, new naming
    (pred / ".1BA001.mha.a1b2c3d4.mha").write_bytes(b"")  # killed sCT write, synthct ≤ 0.1 naming
    (gt / "ct" / ".synthct-tmp-1BA002.mha.z.mha").write_bytes(b"")
    metrics = tmp_path / "scores" / "metrics.json"
    metrics.parent.mkdir()
    (metrics.parent / ".synthct-tmp-metrics.json.t5y6u7i8.json").write_text("{")
    code = synthct_main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(metrics), "--no-progress"])
    assert code == 0
    payload = json.loads(metrics.read_text(encoding="utf-8"))
    assert [r["case_id"] for r in payload["results"]] == ["1BA001"] and payload["results"][0]["error"] is None
    assert sorted(p.name for p in metrics.parent.iterdir()) == ["metrics.json"]


def test_a_second_concurrent_run_into_the_same_out_is_refused(out_world: Path, tmp_path: Path) -> None:
    mr = out_write_case(tmp_path / "mr", "1BA001", tmp_path / "mask")
    out = tmp_path / "out"
    out.mkdir()
    with output_session([out], "test run"):
        running = out / ".synthct-tmp-1BA001.mha.r4e3w2q1.mha"  # the first run's write in progress
        running.write_bytes(b"being written")
        result = out_run(["-m", "synthct", "predict", "--mr", str(mr), "--mask", str(tmp_path / "mask" / "1BA001.mha"),
                          "--model", str(out_world / "models"), "--out", str(out), "--no-progress"])
        assert result.returncode == 2, result.stderr
        out_no_traceback(result)
        assert "another synthct run is writing into it" in result.stderr and "synthct test run" in result.stderr
        assert running.exists()  # never removed from under a running writer
    assert not (out / LOCK_NAME).exists()


# ---------------------------------------------------------------- results.json and the QA index across runs


def test_two_runs_into_one_out_keep_both_runs_cases(out_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for case_id, seed in (("1BA001", 1), ("1BA002", 2), ("1BA001", 3)):  # the third redoes the first case
        mr = out_write_case(tmp_path / f"mr{seed}", case_id, tmp_path / f"mask{seed}", seed=seed)
        assert synthct_main(["predict", "--mr", str(mr), "--mask", str(tmp_path / f"mask{seed}" / f"{case_id}.mha"),
                             "--model", str(out_world / "models" / "brain"), "--out", str(out),
                             "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert [e["case_id"] for e in results] == ["1BA001", "1BA002"]
    assert str(tmp_path / "mr3") in results[0]["inputs"][0]["filename"]  # the redone case is the latest run's
    page = (out / "qa" / "index.html").read_text(encoding="utf-8")
    assert "2 case(s)" in page and "1BA001.png" in page and "1BA002.png" in page
    assert [row["case_id"] for row in json.loads((out / "qa" / "index.json").read_text())] == ["1BA001", "1BA002"]


def test_two_container_runs_into_one_output_keep_both(out_world: Path, tmp_path: Path) -> None:
    output = tmp_path / "output"
    for case_id in ("1BA001", "1BA002"):
        inp = tmp_path / f"input-{case_id}"
        out_write_case(inp / "images" / "mri", case_id, inp / "images" / "body")
        env = {"SYNTHCT_INPUT": str(inp), "SYNTHCT_OUTPUT": str(output), "SYNTHCT_MODELS": str(out_world / "models"),
               "SYNTHCT_PROGRESS": "0"}
        assert run_container(env) == 0
    results = json.loads((output / "results.json").read_text(encoding="utf-8"))
    assert sorted(Path(e["outputs"][0]["filename"]).name for e in results) == ["1BA001.mha", "1BA002.mha"]


# ---------------------------------------------------------------- an invalid model.json


def test_invalid_model_json_is_named_with_its_parse_error(out_world: Path, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    single = tmp_path / "models" / "brain"
    shutil.copytree(out_world / "models" / "brain", single)
    manifest = single / "model.json"
    manifest.write_text(manifest.read_text(encoding="utf-8")[:-40], encoding="utf-8")  # cut: not JSON any more
    mr = out_write_case(tmp_path / "mr", "1BA001", tmp_path / "mask")
    common = ["--mr", str(mr), "--mask", str(tmp_path / "mask" / "1BA001.mha"), "--no-progress"]
    assert synthct_main(["predict", *common, "--model", str(single), "--out", str(tmp_path / "o1"),
                         "--region", "brain"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(str(manifest) in m and "not valid JSON" in m for m in errors), errors
    assert not any("installed: ['unknown']" in m for m in errors)

    inp = tmp_path / "input"
    out_write_case(inp / "images" / "mri", "1BA001", inp / "images" / "body")
    env = {"SYNTHCT_INPUT": str(inp), "SYNTHCT_OUTPUT": str(tmp_path / "o2"), "SYNTHCT_MODELS": str(single),
           "SYNTHCT_PROGRESS": "0"}
    assert run_container(env) == 1
    message = json.loads((tmp_path / "o2" / "results.json").read_text())[0]["error_messages"][0]
    assert str(manifest) in message and "not valid JSON" in message

    folder = tmp_path / "several"  # a folder of packages: the bad one (not named by region) is named per case
    shutil.copytree(out_world / "models" / "pelvis", folder / "pelvis")
    shutil.copytree(single, folder / "my-brain-v2")
    caplog.clear()
    assert synthct_main(["predict", *common, "--model", str(folder), "--out", str(tmp_path / "o3"),
                         "--region", "brain"]) == 1
    message = json.loads((tmp_path / "o3" / "results.json").read_text())[0]["error_messages"][0]
    assert "no model installed for region 'brain'" in message
    assert str(folder / "my-brain-v2" / "model.json") in message and "not valid JSON" in message


# ---------------------------------------------------------------- the smaller items of defect 6


@pytest.mark.parametrize(("value", "fragment"), [(0.0, "every voxel is 0"), (300.0, "every voxel is 300")])
def test_an_mr_without_signal_is_refused_with_a_mask_and_named(out_world: Path, tmp_path: Path, value: float,
                                                               fragment: str) -> None:
    mr = out_write_case(tmp_path / "mr", "1BA001", tmp_path / "mask", mr_value=value)
    out = tmp_path / "out"
    assert synthct_main(["predict", "--mr", str(mr), "--mask", str(tmp_path / "mask" / "1BA001.mha"), "--model",
                         str(out_world / "models"), "--out", str(out), "--no-progress", "--no-qa"]) == 1
    message = json.loads((out / "results.json").read_text())[0]["error_messages"][0]
    assert message.startswith(f"{mr}: the MR has no signal") and fragment in message
    assert not (out / "1BA001.mha").exists()


def test_region_messages_name_the_option_that_was_used(out_world: Path, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    brain = out_write_case(tmp_path / "mr", "1BA001", tmp_path / "mask")
    assert synthct_main(["predict", "--mr", str(brain), "--mask", str(tmp_path / "mask" / "1BA001.mha"), "--model",
                         str(out_world / "models"), "--out", str(tmp_path / "o1"), "--no-progress", "--no-qa",
                         "--region", "pelvis"]) == 0
    assert any("--region says pelvis" in r.getMessage() for r in caplog.records)
    other = out_write_case(tmp_path / "mr2", "scan9", tmp_path / "mask2")
    assert synthct_main(["predict", "--mr", str(other), "--mask", str(tmp_path / "mask2" / "scan9.mha"), "--model",
                         str(out_world / "models"), "--out", str(tmp_path / "o2"), "--no-progress", "--no-qa"]) == 1
    message = json.loads((tmp_path / "o2" / "results.json").read_text())[0]["error_messages"][0]
    assert "--region" in message
    assert not [r.getMessage() for r in caplog.records if "region.json" in r.getMessage()]


def test_container_masks_that_pair_with_no_mr_are_an_error_not_a_fallback(out_world: Path, tmp_path: Path) -> None:
    inp, output = tmp_path / "input", tmp_path / "output"
    mri, body = inp / "images" / "mri", inp / "images" / "body"
    out_write_case(mri, "5b0e1c7a-mr", body, mask_name="0f4d2a9e-mask")
    out_write_case(mri, "9c2f3d1b-mr", body, mask_name="7a1e5b3c-mask", seed=1)
    (inp / "region.json").write_text('"Brain"')
    env = {"SYNTHCT_INPUT": str(inp), "SYNTHCT_OUTPUT": str(output), "SYNTHCT_MODELS": str(out_world / "models"),
           "SYNTHCT_PROGRESS": "0"}
    assert run_container(env) == 1
    results = json.loads((output / "results.json").read_text(encoding="utf-8"))
    assert len(results) == 2
    for entry in results:
        assert "pair with no MR" in entry["error_messages"][0] and "0f4d2a9e-mask.mha" in entry["error_messages"][0]
        assert entry["outputs"] == []
    (body / "7a1e5b3c-mask.mha").unlink()  # one MR and one mask: still paired whatever the names
    (mri / "9c2f3d1b-mr.mha").unlink()
    assert run_container({**env, "SYNTHCT_OUTPUT": str(tmp_path / "output2")}) == 0


# ---------------------------------------------------------------- nothing written outside the output and tmp


_OUT_WRITES = re.compile(r"^\d+\s+(openat|open|creat|mkdir|mkdirat|rename|renameat2?|unlink|unlinkat|rmdir|link|"
                         r"linkat|symlink|symlinkat|truncate)\((.*)\)\s+=\s+(\d+)")


def out_written_paths(trace: Path) -> set[str]:
    """Paths that successful file-changing calls in an ``strace -e trace=%file`` log touched."""
    paths = set()
    for line in trace.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _OUT_WRITES.match(line)
        if not match:
            continue
        call, arguments = match.group(1), match.group(2)
        if call.startswith("open") and not re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC", arguments):
            continue
        paths.update(re.findall(r'"((?:[^"\\]|\\.)*)"', arguments))
    return paths


def test_predict_job_and_evaluate_write_nothing_outside_output_and_tmp(out_world: Path, tmp_path: Path) -> None:
    """HOME empty and read-only, XDG_CACHE_HOME unset: HOME stays empty (ONNX Runtime, OpenVINO, matplotlib); with
    strace installed, every file the three commands create, rename or remove lies in their outputs or the temp
    folder (or /dev/shm: Python's semaphores)."""
    from synthct.algorithm.backends import openvino_version_problem
    from synthct.algorithm.cpu import cpu_vendor

    home = out_read_only(tmp_path / "home")
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {key: value for key, value in os.environ.items()
           if key not in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR", "ORT_DISABLE_TELEMETRY", "CI")}
    env.update({"HOME": str(home), "TMPDIR": str(temp), "PYTHONDONTWRITEBYTECODE": "1", "SYNTHCT_PROGRESS": "0"})
    mr = out_write_case(tmp_path / "mr", "1BA001")
    inp = tmp_path / "input"
    out_write_case(inp / "images" / "mri", "1BA001", inp / "images" / "body")
    gt, pred = out_ground_truth(tmp_path / "eval")
    try:
        import openvino

        usable = openvino_version_problem(openvino.__version__.split("-")[0], cpu_vendor()) is None
    except ImportError:
        usable = False
    commands = {
        "predict": ["-m", "synthct", "predict", "--mr", str(mr), "--model", str(out_world / "models"), "--out",
                    str(tmp_path / "out"), "--no-progress", "--dicom-out",
                    "--backend", "openvino" if usable else "onnxruntime"],
        "job": ["-m", "synthct.algorithm"],
        "evaluate": ["-m", "synthct", "evaluate", "--pred", str(pred), "--gt", str(gt), "--out",
                     str(tmp_path / "scores" / "metrics.json"), "--pictures", str(tmp_path / "pictures"),
                     "--no-progress"],
    }
    job_env = {"SYNTHCT_INPUT": str(inp), "SYNTHCT_OUTPUT": str(tmp_path / "output"),
               "SYNTHCT_MODELS": str(out_world / "models"), "SYNTHCT_BACKEND": "onnxruntime"}
    allowed = [tmp_path / "out", tmp_path / "output", tmp_path / "scores", tmp_path / "pictures", temp]
    strace = shutil.which("strace")
    for name, args in commands.items():
        trace = tmp_path / f"{name}.strace"
        prefix = [strace, "-f", "-qq", "-e", "trace=%file", "-o", str(trace)] if strace else []
        result = subprocess.run([*prefix, sys.executable, *args], cwd=OUT_REPO, capture_output=True, text=True,
                                env={**env, **(job_env if name == "job" else {})}, timeout=HANG_GUARD_S, check=False)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == [], name
        if strace and trace.exists():
            outside = sorted(p for p in out_written_paths(trace)
                             if not p.startswith("/dev/")
                             and not any(Path(p) == a or a in Path(p).parents for a in allowed))
            assert outside == [], f"{name} wrote outside its output and the temp folder: {outside}"
    assert stat.S_IMODE(home.stat().st_mode) == 0o555
