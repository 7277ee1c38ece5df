"""The clinical path of ``synthct predict`` (SPEC §9): DICOM MR series in, automatic body mask, DICOM CT series and QA
page out; per-case errors for bad DICOM input while the other cases still run; the container's mask fallback.

The model is the analytic package (``sct = tanh(a · mr + b)``), so every written HU value is known in closed form.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from synthct.algorithm.analytic import build_analytic_package, expected_hu
from synthct.algorithm.container import run_container
from synthct.algorithm.qa import BONE_RANGE, case_statistics
from test_dicom import write_rtstruct

from synthct.body_mask import body_mask_from_mr
from synthct.cli import main as synthct_main
from synthct.dicom import CT_IMAGE_STORAGE, write_mr_series
from synthct.phantom import case_seed, generate_volumes

PARAMS = {"scale": 1.5, "shift": 0.25}
COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID", "StudyDate",
          "AccessionNumber", "ReferringPhysicianName", "FrameOfReferenceUID")


def rotation(axis: tuple[float, float, float], angle_deg: float) -> np.ndarray:
    """Rotation matrix about ``axis`` (Rodrigues)."""
    unit = np.asarray(axis, float) / np.linalg.norm(axis)
    cross = np.array([[0, -unit[2], unit[1]], [unit[2], 0, -unit[0]], [-unit[1], unit[0], 0]])
    angle = math.radians(angle_deg)
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


DIRECTIONS = {"axial": np.eye(3), "oblique": rotation((1.0, 0.4, 0.2), 23.0)}


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_analytic_package(tmp_path_factory.mktemp("models") / "brain", "brain", **PARAMS)


@functools.cache
def phantom_array(seed: int) -> np.ndarray:
    return np.ascontiguousarray(generate_volumes("brain", case_seed(3, "brain", seed), "small").mr[::2])


def phantom_mr(direction: str = "axial", seed: int = 1) -> sitk.Image:
    """A small brain phantom MR (every second slice: 48 × 128 × 104, 2 × 1 × 1 mm) with the named direction."""
    image = sitk.GetImageFromArray(phantom_array(seed))
    image.SetSpacing((1.0, 1.0, 2.0))
    image.SetOrigin((-51.5, -20.0, 33.25))
    image.SetDirection(tuple(DIRECTIONS[direction].ravel()))
    return image


def predict(*args: str | Path) -> int:
    return synthct_main(["predict", "--no-progress", *[str(a) for a in args]])


def results_by_case(out: Path) -> dict[str, dict]:
    entries = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return {Path(entry["inputs"][0]["filename"]).name: entry for entry in entries}


def dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, timeout=60, check=False)
    output = (result.stdout + result.stderr).decode("utf-8", errors="replace")
    return [line for line in output.splitlines() if line.startswith("Error")]


# ---------------------------------------------------------------- the round trip of issue 8's "Done when"


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory: pytest.TempPathFactory, package: Path) -> tuple[Path, Path, int]:
    """Axial and oblique DICOM MR series (shuffled, no suffix) → ``synthct predict --dicom-out`` without a mask; the
    oblique MR (22.6° from transverse) keeps its grid with ``--ct-grid mr`` (default: a transverse CT, see
    tests/test_dicom_transverse.py)."""
    root = tmp_path_factory.mktemp("round_trip")
    mr_root, out = root / "mr", root / "out"
    for direction in DIRECTIONS:
        write_mr_series(phantom_mr(direction), mr_root / direction, suffix="", shuffle_seed=5)
    code = predict("--mr", mr_root, "--model", package, "--out", out, "--dicom-out", "--ct-grid", "mr")
    return mr_root, out, code


def test_dicom_round_trip_axial_and_oblique_without_mask(round_trip: tuple[Path, Path, int], package: Path) -> None:
    mr_root, out, code = round_trip
    assert code == 0
    results = results_by_case(out)
    for direction in DIRECTIONS:
        mr_files = sorted((mr_root / direction).iterdir())
        assert all(p.suffix == "" for p in mr_files)
        entry = results[direction]
        assert entry["error_messages"] == []
        assert entry["inputs"][0] == {"type": "dicom_series", "filename": str(mr_root / direction)}
        sct_path, mask_path, dicom_dir = out / f"{direction}.mha", out / "body" / f"{direction}.mha", \
            out / "dicom" / direction
        assert [o["filename"] for o in entry["outputs"]] == [str(sct_path), str(mask_path), str(dicom_dir)]

        reader = sitk.ImageSeriesReader()
        mr_image = sitk.ReadImage(reader.GetGDCMSeriesFileNames(str(mr_root / direction)))
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(dicom_dir)))
        ct_image = reader.Execute()
        sct_image = sitk.ReadImage(str(sct_path))
        for image in (ct_image, sct_image):
            assert image.GetSize() == mr_image.GetSize()
            np.testing.assert_allclose(image.GetSpacing(), mr_image.GetSpacing(), atol=1e-4)
            np.testing.assert_allclose(image.GetOrigin(), mr_image.GetOrigin(), atol=1e-3)
            np.testing.assert_allclose(image.GetDirection(), mr_image.GetDirection(), atol=1e-5)
        np.testing.assert_allclose(mr_image.GetDirection(), DIRECTIONS[direction].ravel(), atol=1e-5)
        sct = sitk.GetArrayFromImage(sct_image)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(ct_image).astype(np.int16), sct)  # voxel for voxel
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path)))
        mr = sitk.GetArrayFromImage(mr_image).astype(np.float32)
        np.testing.assert_array_equal(mask, sitk.GetArrayFromImage(body_mask_from_mr(sitk.Cast(mr_image,
                                                                                               sitk.sitkFloat32))))
        np.testing.assert_array_equal(sct, expected_hu(mr, mask, **PARAMS))
        assert sct[mask > 0].std() > 50 and np.all(sct[mask == 0] == -1000)

        source = pydicom.dcmread(mr_files[0])
        onnx_sha = json.loads((package / "model.json").read_text(encoding="utf-8"))["onnx"]["sha256"]
        ct_files = sorted(dicom_dir.iterdir())
        assert len(ct_files) == mr_image.GetSize()[2]
        sop_uids = set()
        for path in ct_files:
            ct = pydicom.dcmread(path)  # every file read by pydicom
            assert ct.SOPClassUID == CT_IMAGE_STORAGE and ct.Modality == "CT"
            for keyword in COPIED:
                assert str(ct.get(keyword, "")) == str(source.get(keyword, "")), keyword
            assert ct.PatientID and ct.FrameOfReferenceUID == source.FrameOfReferenceUID
            assert ct.SeriesInstanceUID != source.SeriesInstanceUID
            assert list(ct.ImageType)[:2] == ["DERIVED", "SECONDARY"]
            assert ct.RescaleSlope == 1 and "RescaleIntercept" in ct
            assert "synthetic ct" in ct.SeriesDescription.lower() and onnx_sha in ct.ImageComments
            sop_uids.add(ct.SOPInstanceUID)
        assert len(sop_uids) == len(ct_files)
    assert (out / "qa" / "index.html").is_file()


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy not on PATH: install Debian's dicom3tools (apt-get install dicom3tools)")
def test_dciodvfy_reports_no_error_on_the_round_trip_series(round_trip: tuple[Path, Path, int]) -> None:
    _, out, code = round_trip
    assert code == 0
    files = sorted((out / "dicom").glob("*/*"))
    assert len(files) == 2 * phantom_array(1).shape[0]
    for path in files:
        assert dciodvfy_errors(path) == [], path


def test_single_dicom_folder_and_series_choice(tmp_path: Path, package: Path) -> None:
    folder, out = tmp_path / "Patient Ä 1", tmp_path / "out"
    write_mr_series(phantom_mr(), tmp_path / "t1")
    write_mr_series(phantom_mr(seed=2), tmp_path / "t2", series_description="T2 TSE")
    folder.mkdir()
    for source in ("t1", "t2"):
        for path in (tmp_path / source).iterdir():
            shutil.copy(path, folder / f"{source}_{path.name}")
    assert predict("--mr", folder, "--model", package, "--out", out, "--no-qa") == 1
    message = results_by_case(out)[folder.name]["error_messages"][0]
    uids = sorted({str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID) for p in folder.iterdir()})
    assert all(uid in message for uid in uids) and "T2 TSE" in message and "--series" in message
    chosen = str(pydicom.dcmread(next((tmp_path / "t2").iterdir())).SeriesInstanceUID)
    assert predict("--mr", folder, "--model", package, "--out", out, "--series", chosen, "--no-qa") == 0
    assert (out / f"{folder.name}.mha").is_file() and (out / "body" / f"{folder.name}.mha").is_file()
    assert not (out / "qa").exists()
    one_file = next((tmp_path / "t1").iterdir())
    assert predict("--mr", one_file, "--model", package, "--out", tmp_path / "out2") == 2  # names the folder instead


def test_dicom_folders_with_given_masks_paired_by_folder_name(tmp_path: Path, package: Path) -> None:
    root, masks, out = tmp_path / "mr", tmp_path / "masks", tmp_path / "out"
    image = phantom_mr()
    write_mr_series(image, root / "P1", suffix="")
    write_mr_series(image, root / "P2", suffix="")
    box = np.zeros(phantom_array(1).shape, np.uint8)
    box[10:40, 30:100, 20:90] = 1
    given = sitk.GetImageFromArray(box)
    given.CopyInformation(image)
    masks.mkdir()
    sitk.WriteImage(given, str(masks / "P1.nii.gz"))
    assert predict("--mr", root, "--mask", masks, "--model", package, "--out", out, "--no-qa") == 1
    results = results_by_case(out)
    assert results["P1"]["error_messages"] == [] and results["P1"]["inputs"][1]["filename"] == str(masks / "P1.nii.gz")
    assert "no body mask with case id 'P2'" in results["P2"]["error_messages"][0]
    sct = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "P1.mha")))
    np.testing.assert_array_equal(sct, expected_hu(phantom_array(1).astype(np.float32), box, **PARAMS))
    assert not (out / "body").exists()  # a given mask is not rewritten
    assert predict("--mr", root, "--model", package, "--out", out, "--mask-threshold", "1.5") == 2


# ---------------------------------------------------------------- bad input, each a per-case error


def test_bad_dicom_cases_fail_one_by_one_while_others_run(tmp_path: Path, package: Path) -> None:
    root, out = tmp_path / "cases", tmp_path / "out"
    image = phantom_mr()
    write_mr_series(image, root / "good", suffix="", shuffle_seed=1)
    write_rtstruct(root / "good" / "RS.structures")  # ignored with a note
    write_mr_series(image, root / "two_series" / "a")
    write_mr_series(phantom_mr(seed=2), root / "two_series" / "b", series_description="T2 FLAIR")
    for sub in ("a", "b"):
        for path in (root / "two_series" / sub).iterdir():
            path.rename(root / "two_series" / f"{sub}{path.name}")
        (root / "two_series" / sub).rmdir()
    files = write_mr_series(image, root / "missing_slice")
    files[20].unlink()
    write_rtstruct(root / "rtstruct_only" / "RS1")
    empty = sitk.Image(image.GetSize(), sitk.sitkUInt16)
    empty.CopyInformation(image)
    write_mr_series(empty, root / "no_signal")
    files = write_mr_series(image, root / "corrupt")
    files[7].write_bytes(files[7].read_bytes()[:420])
    sitk.WriteImage(image, str(root / "image_case.mha"))

    assert predict("--mr", root, "--model", package, "--out", out, "--dicom-out") == 1
    results = results_by_case(out)
    assert sorted(results) == ["corrupt", "good", "image_case.mha", "missing_slice", "no_signal", "rtstruct_only",
                               "two_series"]
    for ok in ("good", "image_case.mha"):
        assert results[ok]["error_messages"] == [], results[ok]
    assert any("RTSTRUCT" in w for w in results["good"]["warnings"])
    assert (out / "good.mha").is_file() and (out / "dicom" / "good").is_dir()
    assert (out / "image_case.mha").is_file() and (out / "dicom" / "image_case").is_dir()
    expected = {
        "two_series": ["T1 MPRAGE", "T2 FLAIR", "--series"],
        "missing_slice": ["missing"],
        "rtstruct_only": ["no image series", "RTSTRUCT"],
        "no_signal": ["no signal"],
        "corrupt": [str(files[7])],
    }
    for case, fragments in expected.items():
        entry = results[case]
        assert entry["outputs"] == [] and len(entry["error_messages"]) == 1, entry
        for fragment in fragments:
            assert fragment in entry["error_messages"][0], (case, entry["error_messages"][0])
        assert not (out / f"{case}.mha").exists() and not (out / "dicom" / case).exists()
    index = (out / "qa" / "index.html").read_text(encoding="utf-8")
    assert "failed: " in index and "no signal" in index


# ---------------------------------------------------------------- automatic mask in predict and in the container


def test_predict_image_file_without_mask(tmp_path: Path, package: Path, caplog: pytest.LogCaptureFixture) -> None:
    mr_path, out = tmp_path / "case1.nii.gz", tmp_path / "out"
    image = phantom_mr()
    sitk.WriteImage(image, str(mr_path))
    with caplog.at_level("INFO"):
        assert predict("--mr", mr_path, "--model", package, "--out", out) == 0
    mask_path = out / "body" / "case1.mha"
    assert any("automatic body mask" in r.getMessage() and str(mask_path) in r.getMessage() for r in caplog.records)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path)))
    sct = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "case1.mha")))
    mr = sitk.GetArrayFromImage(image).astype(np.float32)
    np.testing.assert_array_equal(sct, expected_hu(mr, mask, **PARAMS))
    assert 0.2 < mask.mean() < 0.9
    assert not any(p.name.startswith(".") for p in (out / "body").iterdir())  # no temporary left behind
    entry = results_by_case(out)["case1.nii.gz"]
    assert "warnings" not in entry and entry["error_messages"] == []


def test_container_missing_mask_falls_back_with_warning(tmp_path: Path, package: Path) -> None:
    inp, out = tmp_path / "input", tmp_path / "output"
    (inp / "images" / "mri").mkdir(parents=True)
    (inp / "images" / "body").mkdir(parents=True)
    image = phantom_mr()
    sitk.WriteImage(image, str(inp / "images" / "mri" / "1BA001.mha"))
    sitk.WriteImage(image, str(inp / "images" / "mri" / "1BA002.mha"))
    given = sitk.Cast(body_mask_from_mr(image, dilation_mm=0.0), sitk.sitkUInt8)
    sitk.WriteImage(given, str(inp / "images" / "body" / "1BA002.mha"))
    env = {"SYNTHCT_INPUT": str(inp), "SYNTHCT_OUTPUT": str(out), "SYNTHCT_MODELS": str(package.parent),
           "SYNTHCT_PROGRESS": "0"}
    assert run_container(env) == 0
    results = results_by_case(out)
    fallback, normal = results["1BA001.mha"], results["1BA002.mha"]
    assert fallback["error_messages"] == [] and len(fallback["warnings"]) == 1
    assert "no body mask" in fallback["warnings"][0] and "computed from the MR" in fallback["warnings"][0]
    assert set(normal) == {"outputs", "inputs", "error_messages", "backend", "geometry",
                           "model_source"}  # no "warnings" key
    mr = sitk.GetArrayFromImage(image).astype(np.float32)
    auto = sitk.GetArrayFromImage(body_mask_from_mr(image))
    sct = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "images" / "synthetic-ct" / "1BA001.mha")))
    np.testing.assert_array_equal(sct, expected_hu(mr, auto, **PARAMS))
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["1BA001.mha", "1BA002.mha", "results.json"]


# ---------------------------------------------------------------- QA page


def test_qa_flags() -> None:
    shape, spacing = (20, 60, 60), (2.0, 2.0, 2.0)  # body 80 mm wide: its core (eroded 20 mm) is 40 mm wide
    mask = np.zeros(shape, np.uint8)
    mask[:, 10:50, 10:50] = 1
    mr = np.full(shape, 500.0, np.float32)
    sct = np.where(mask > 0, 40, -1000).astype(np.int16)
    sct[:, 20:24, 20:40] = 700  # 5 % bone: usual for a pelvis, too little for a head
    clean = case_statistics(sct, mask, mr, spacing, "pelvis")
    assert clean["flags"] == [] and sum(clean["histogram"]) == int(mask.sum())
    assert BONE_RANGE["pelvis"][0] < clean["bone_fraction"] < BONE_RANGE["pelvis"][1]
    flags = " | ".join(case_statistics(sct, mask, mr, spacing, "brain")["flags"])
    assert "bone fraction" in flags and "brain" in flags

    touching = mask.copy()
    touching[:, 10:50, 0:10] = 1
    assert "FOV border" not in " | ".join(case_statistics(sct, touching, mr, spacing, "pelvis")["flags"])  # air margin
    sct_touching = np.where(touching > 0, sct.clip(min=40), -1000).astype(np.int16)
    assert "FOV border" in " | ".join(case_statistics(sct_touching, touching, mr, spacing, "pelvis")["flags"])
    gassy = sct.copy()
    gassy[:, 25:35, 25:35] = -900  # air in the core of the body
    assert "air inside the body" in " | ".join(case_statistics(gassy, mask, mr, spacing, "pelvis")["flags"])
    # lungs fill a thorax's core: the same air is usual there, and only far more air is flagged
    lungs = sct.copy()
    lungs[:, 22:38, 22:38] = -850
    assert "air inside the body" not in " | ".join(case_statistics(lungs, mask, mr, spacing, "th")["flags"])
    lungs[:, 15:45, 15:45] = -850
    assert "air inside the body" in " | ".join(case_statistics(lungs, mask, mr, spacing, "th")["flags"])
    spiky = mr.copy()
    spiky[5, 30, 30] = 10 * 500.0
    assert "MR outliers" in " | ".join(case_statistics(sct, mask, spiky, spacing, "pelvis")["flags"])


def test_qa_page_and_pictures(tmp_path: Path, package: Path) -> None:
    mri, out = tmp_path / "mri", tmp_path / "out"
    mri.mkdir()
    sitk.WriteImage(phantom_mr(), str(mri / "caseA.mha"))
    spiky = sitk.GetArrayFromImage(phantom_mr(seed=2))
    spiky[24, 64, 52] = 30000
    spiky_image = sitk.GetImageFromArray(spiky)
    spiky_image.CopyInformation(phantom_mr())
    sitk.WriteImage(spiky_image, str(mri / "caseB<odd>.mha"))
    assert predict("--mr", mri, "--model", package, "--out", out) == 0
    qa = out / "qa"
    assert sorted(p.name for p in qa.iterdir()) == ["caseA.png", "caseB<odd>.png", "index.html", "index.json"]
    for name in ("caseA.png", "caseB<odd>.png"):
        picture = sitk.ReadImage(str(qa / name))
        assert picture.GetSize()[0] > 600 and picture.GetSize()[1] > 400
    page = (qa / "index.html").read_text(encoding="utf-8")
    assert page.count("<svg") == 2 and 'src="caseA.png"' in page
    assert "caseB&lt;odd&gt;" in page and "<odd>" not in page  # names are escaped
    assert "MR outliers" in page
