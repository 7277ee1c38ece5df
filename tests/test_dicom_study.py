"""DICOM as scanners and PACS export it (SPEC §12): study folders, series trees, DICOMDIR exports, the planning-MR
choice, ``--series`` by UID / number / description, case ids; ``synthct predict`` end to end with the analytic model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid
from synthct.algorithm.analytic import build_analytic_package
from test_dicom import write_rtstruct
from test_predict_clinical import PARAMS, phantom_array, phantom_mr

from synthct.cli import main as synthct_main
from synthct.dicom import DicomError, choose_series, discover_cases, read_dicom_series, scan_study, write_ct_series
from synthct.dicom import scan as scan_module
from synthct.dicom.mr import write_mr_series
from synthct.dicom.study import MIN_SLICES, safe_case_id

PATIENT = "PAT/007 x"  # sanitised in case ids: PAT_007_x
T1_SLICES = phantom_array(1).shape[0]  # 48
T2_SLICES = 30
AXIAL, SAGITTAL, CORONAL = [1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, -1], [1, 0, 0, 0, 0, -1]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_analytic_package(tmp_path_factory.mktemp("models") / "brain", "brain", **PARAMS)


def study_identity(patient: str = PATIENT) -> dict[str, str]:
    """Patient and study attributes shared by every object of one study."""
    return {"PatientName": "STUDY^TEST", "PatientID": patient, "PatientBirthDate": "19600101", "PatientSex": "F",
            "StudyInstanceUID": generate_uid(), "StudyID": "42", "StudyDate": "20240301", "StudyTime": "101500",
            "StudyDescription": "MR RT planning", "AccessionNumber": "A1", "ReferringPhysicianName": "",
            "FrameOfReferenceUID": generate_uid(), "PatientPosition": "HFS", "BodyPartExamined": "HEAD"}


def edit_all(files: list[Path], **values: object) -> None:
    for path in files:
        dataset = pydicom.dcmread(path)
        for keyword, value in values.items():
            setattr(dataset, keyword, value)
        dataset.save_as(path, enforce_file_format=True)


def write_t1(folder: Path, identity: dict[str, str], suffix: str = ".dcm") -> list[Path]:
    """The planning MR: 48 axial slices, SeriesNumber 3, 'T1 MPRAGE'."""
    return write_mr_series(phantom_mr(), folder, identity=identity, suffix=suffix, shuffle_seed=4)


def write_t2(folder: Path, identity: dict[str, str], suffix: str = ".dcm") -> list[Path]:
    """A second 3-D MR: 30 axial slices, SeriesNumber 4, 'T2 TSE axial'."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(phantom_array(2)[:T2_SLICES]))
    image.CopyInformation(phantom_mr()[:, :, :T2_SLICES])
    files = write_mr_series(image, folder, identity=identity, suffix=suffix, series_description="T2 TSE axial")
    edit_all(files, SeriesNumber=4)
    return files


def write_localizer(folder: Path, identity: dict[str, str], suffix: str = ".dcm") -> list[Path]:
    """A 3-plane localizer: 3 slices (axial, sagittal, coronal), ImageType ORIGINAL\\PRIMARY\\LOCALIZER, series 1."""
    image = sitk.GetImageFromArray(np.full((3, 32, 32), 300, np.uint16))
    files = write_mr_series(image, folder, identity=identity, suffix=suffix, series_description="localizer")
    for path, orientation in zip(sorted(files), (AXIAL, SAGITTAL, CORONAL), strict=True):
        dataset = pydicom.dcmread(path)
        dataset.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        dataset.ImageOrientationPatient = orientation
        dataset.ImagePositionPatient = [-16, -16, 0]
        dataset.SeriesNumber = 1
        dataset.save_as(path, enforce_file_format=True)
    return files


def write_structures(path: Path, identity: dict[str, str]) -> Path:
    """An RTSTRUCT of the study (as a planning system exports it beside the MR)."""
    write_rtstruct(path, identity["FrameOfReferenceUID"])
    keep = {k: identity[k] for k in ("PatientName", "PatientID", "StudyInstanceUID", "StudyID", "StudyDate",
                                     "StudyTime")}
    edit_all([path], **keep, SeriesNumber=50, InstanceNumber=1, StructureSetDate="20240301")
    return path


def write_ct(folder: Path, identity: dict[str, str]) -> list[Path]:
    """A CT series of the study (SeriesNumber 901): another modality, skipped."""
    image = sitk.GetImageFromArray(np.full((12, 24, 24), 40, np.int16))
    image.SetSpacing((2.0, 2.0, 3.0))
    return write_ct_series(image, folder, identity=identity, model_name="planning-ct", model_sha256="0" * 64)


def flatten(source: Path, target: Path) -> Path:
    """Every file under ``source`` moved into ``target`` (names made unique): one flat study folder."""
    target.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(sorted(p for p in source.rglob("*") if p.is_file())):
        path.rename(target / f"{index:04d}_{path.name}")
    shutil.rmtree(source)
    return target


def write_study_tree(root: Path, identity: dict[str, str], ct: bool = True, t2: bool = False) -> Path:
    """One study, one folder per series: t1/, loc/, rs/ (RTSTRUCT), ct/, optionally t2/."""
    write_t1(root / "t1", identity)
    write_localizer(root / "loc", identity)
    write_structures(root / "rs" / "RS1.dcm", identity)
    if ct:
        write_ct(root / "ct", identity)
    if t2:
        write_t2(root / "t2", identity)
    return root


def write_dicomdir_export(staging: Path, export: Path, identity: dict[str, str]) -> Path:
    """A CD/USB export: DICOMDIR + PT000000/ST000000/SE00000n/IM00000n (no suffixes), written by pydicom's FileSet."""
    write_study_tree(staging, identity)
    file_set = FileSet()
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        file_set.add(path)
    file_set.write(export)
    return export / "DICOMDIR"


def predict(*args: str | Path) -> int:
    return synthct_main(["predict", "--no-progress", "--no-qa", *[str(a) for a in args]])


def results(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def only_case(out: Path) -> dict:
    entries = results(out)
    assert len(entries) == 1, entries
    return entries[0]


def sct_slices(out: Path, case_id: str) -> int:
    return sitk.ReadImage(str(out / f"{case_id}.mha")).GetSize()[2]


# ---------------------------------------------------------------- layouts that work end to end


def test_flat_study_folder_chooses_the_mr(tmp_path: Path, package: Path) -> None:
    identity = study_identity()
    folder = flatten(write_study_tree(tmp_path / "staging", identity), tmp_path / "Mueller_2024")
    (folder / "README.TXT").write_text("exported from PACS", encoding="utf-8")
    out = tmp_path / "out"
    assert predict("--mr", folder, "--model", package, "--out", out) == 0
    entry = only_case(out)
    assert entry["error_messages"] == [] and entry["inputs"][0]["filename"] == str(folder)
    assert sct_slices(out, "Mueller_2024") == T1_SLICES
    warnings = " | ".join(entry["warnings"])
    assert "chose series [3] 'T1 MPRAGE'" in warnings and "the only 3-D MR series" in warnings
    assert "'localizer'" in warnings and "localizer)" in warnings  # named, with the reason
    assert "'Synthetic CT planning-ct'" in warnings and "CT, not MR" in warnings
    assert "1 non-image object (RTSTRUCT)" in warnings and "README.TXT" in warnings


def test_study_tree_and_batch_of_trees(tmp_path: Path, package: Path) -> None:
    """PATIENT/STUDY/SERIES trees: one case per patient folder; localizer, RTSTRUCT and CT folders are not cases."""
    batch, out = tmp_path / "batch", tmp_path / "out"
    write_study_tree(batch / "patient_A" / "20240301_MR", study_identity("A-1"))
    write_t1(batch / "patient_B" / "study" / "series3", study_identity("B-2"), suffix="")
    assert predict("--mr", batch, "--model", package, "--out", out) == 0
    by_id = {Path(e["outputs"][0]["filename"]).name: e for e in results(out)}
    assert sorted(by_id) == ["patient_A.mha", "patient_B.mha"]
    assert all(e["error_messages"] == [] for e in by_id.values())
    assert by_id["patient_A.mha"]["inputs"][0]["filename"] == str(batch / "patient_A")
    warnings = " | ".join(by_id["patient_A.mha"]["warnings"])
    assert "localizer" in warnings and "RTSTRUCT" in warnings and "CT, not MR" in warnings
    assert "warnings" not in by_id["patient_B.mha"]  # nothing skipped there
    # one study tree given directly: its folder name is the case id
    out2 = tmp_path / "out2"
    assert predict("--mr", batch / "patient_A" / "20240301_MR", "--model", package, "--out", out2) == 0
    assert only_case(out2)["error_messages"] == [] and sct_slices(out2, "20240301_MR") == T1_SLICES
    # a batch folder holding one case: the case's sub-folder names it (as with several)
    shutil.rmtree(batch / "patient_B")
    out3 = tmp_path / "out3"
    assert predict("--mr", batch, "--model", package, "--out", out3) == 0
    assert sct_slices(out3, "patient_A") == T1_SLICES


@pytest.fixture(scope="module")
def dicomdir_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cd")
    return write_dicomdir_export(root / "staging", root / "export", study_identity())


def test_dicomdir_export_as_file_folder_and_without_dicomdir(tmp_path: Path, package: Path,
                                                             dicomdir_export: Path) -> None:
    export = dicomdir_export.parent
    files = sorted(p for p in export.rglob("*") if p.is_file() and p.name != "DICOMDIR")
    assert len(files) == T1_SLICES + 3 + 1 + 12 and all(p.suffix == "" for p in files)
    assert {p.relative_to(export).parts[0] for p in files} == {"PT000000"}
    for given in (dicomdir_export, export):
        out = tmp_path / f"out_{given.name}"
        assert predict("--mr", given, "--model", package, "--out", out) == 0, given
        entry = only_case(out)
        assert entry["error_messages"] == [] and entry["inputs"][0]["filename"] == str(given)
        assert sct_slices(out, "PAT_007_x_3") == T1_SLICES  # a DICOMDIR root: <PatientID>_<SeriesNumber>
        warnings = " | ".join(entry["warnings"])
        assert f"listed in {dicomdir_export}" in warnings and "localizer" in warnings and "RTSTRUCT" in warnings
    # the same PT/ST/SE tree without its DICOMDIR (a copy from the CD that lost it)
    copied = tmp_path / "from_cd"
    shutil.copytree(export, copied)
    (copied / "DICOMDIR").unlink()
    out = tmp_path / "out_copy"
    assert predict("--mr", copied, "--model", package, "--out", out) == 0
    # the case lies in PT000000/ (a generic name): the id is <PatientID>_<SeriesNumber>, not "PT000000"
    assert only_case(out)["error_messages"] == [] and sct_slices(out, "PAT_007_x_3") == T1_SLICES
    out = tmp_path / "out_st"
    assert predict("--mr", copied / "PT000000" / "ST000000", "--model", package, "--out", out) == 0
    assert sct_slices(out, "PAT_007_x_3") == T1_SLICES


def test_dicomdir_with_missing_files_is_a_case_error(tmp_path: Path, package: Path, dicomdir_export: Path) -> None:
    export = tmp_path / "export"
    shutil.copytree(dicomdir_export.parent, export)
    series_folders = sorted(p for p in (export / "PT000000" / "ST000000").iterdir())
    victims = sorted(series_folders[0].iterdir())[:2]
    for path in victims:
        path.unlink()
    out = tmp_path / "out"
    assert predict("--mr", export / "DICOMDIR", "--model", package, "--out", out) == 1
    message = only_case(out)["error_messages"][0]
    assert str(export / "DICOMDIR") in message and "2 of 64 files listed in the DICOMDIR are missing" in message
    assert str(victims[0].relative_to(export)) in message and str(victims[1].relative_to(export)) in message
    # a damaged DICOMDIR: its folders are read instead, with a note; given as the file, it is the case's error
    damaged = tmp_path / "damaged"
    shutil.copytree(dicomdir_export.parent, damaged)
    (damaged / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)
    (case,) = discover_cases(damaged)
    assert case.case_id == "PAT_007_x_3" and case.study.errors == ()
    assert any("DICOMDIR: not a readable DICOMDIR" in n and "the folders were read instead" in n
               for n in case.study.notes)
    (case,) = discover_cases(damaged / "DICOMDIR")
    with pytest.raises(DicomError, match="not a readable DICOMDIR"):
        case.study.check()


def test_generic_folder_name_gives_patient_and_series_number(tmp_path: Path, package: Path) -> None:
    folder = flatten(write_study_tree(tmp_path / "staging", study_identity(), ct=False), tmp_path / "IMAGES")
    out = tmp_path / "out"
    assert predict("--mr", folder, "--model", package, "--out", out, "--dicom-out") == 0
    assert (out / "PAT_007_x_3.mha").is_file() and (out / "dicom" / "PAT_007_x_3").is_dir()
    assert (out / "body" / "PAT_007_x_3.mha").is_file() and not (out / "IMAGES.mha").exists()


# ---------------------------------------------------------------- the series choice


@pytest.fixture
def two_mr_study(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    identity = study_identity()
    root = write_study_tree(tmp_path / "staging", identity, ct=False, t2=True)
    t2_uid = str(pydicom.dcmread(next((root / "t2").iterdir()), stop_before_pixels=True).SeriesInstanceUID)
    return flatten(root, tmp_path / "two_mr"), {"t2_uid": t2_uid}


def test_several_candidates_listed_then_chosen_by_number_text_and_uid(tmp_path: Path, package: Path,
                                                                      two_mr_study: tuple[Path, dict]) -> None:
    folder, facts = two_mr_study
    out = tmp_path / "out"
    assert predict("--mr", folder, "--model", package, "--out", out) == 1
    entry = only_case(out)
    message = entry["error_messages"][0]
    assert entry["outputs"] == [] and not (out / "two_mr.mha").exists()
    assert str(folder) in message and "2 3-D MR series could be the planning MR" in message
    assert "--series UID|NUMBER|TEXT" in message
    assert f"[3] 'T1 MPRAGE'  MR  {T1_SLICES} slices  axial  1 × 1 × 2 mm" in message
    assert f"[4] 'T2 TSE axial'  MR  {T2_SLICES} slices  axial  1 × 1 × 2 mm" in message
    assert facts["t2_uid"] in message and "'localizer'" in message and "3 orientations" in message
    for selector in ("4", "t2 tse", facts["t2_uid"]):
        out = tmp_path / f"out_{len(selector)}"
        assert predict("--mr", folder, "--model", package, "--out", out, "--series", selector) == 0, selector
        assert sct_slices(out, "two_mr") == T2_SLICES
        assert any("chose series" in w and "T2 TSE axial" in w and "skipped 2 other image series" in w
                   for w in only_case(out)["warnings"])
    out = tmp_path / "out_t1"
    assert predict("--mr", folder, "--model", package, "--out", out, "--series", "MPRAGE") == 0
    assert sct_slices(out, "two_mr") == T1_SLICES


def test_series_matching_nothing_or_several_is_an_error(two_mr_study: tuple[Path, dict]) -> None:
    folder, _ = two_mr_study
    study = scan_study(folder)
    with pytest.raises(DicomError, match=r"no image series with SeriesNumber 7; the case holds:") as caught:
        choose_series(study, "7")
    assert "[3] 'T1 MPRAGE'" in str(caught.value) and "[4] 'T2 TSE axial'" in str(caught.value)
    with pytest.raises(DicomError, match=r"no image series with SeriesDescription containing 'flair'"):
        choose_series(study, "flair")
    with pytest.raises(DicomError, match=r"no image series with SeriesInstanceUID 1\.2\.3"):
        choose_series(study, "1.2.3")
    with pytest.raises(DicomError, match=r"--series 'T' matches 2 image series") as caught:
        choose_series(study, "T")  # T1 MPRAGE, T2 TSE axial
    assert str(folder) in str(caught.value)
    chosen, notes = choose_series(study, "1")  # a localizer, when asked for explicitly, is read as asked
    assert chosen.is_localizer and any("not a 3-D MR series by the automatic rule (localizer)" in n for n in notes)
    with pytest.raises(DicomError, match="mixed orientations"):
        read_dicom_series(study, "1")


def test_study_without_3d_mr_series(tmp_path: Path, package: Path) -> None:
    identity = study_identity()
    root = tmp_path / "no_mr"
    write_localizer(root / "loc", identity)
    write_ct(root / "ct", identity)
    write_structures(root / "rs" / "RS1.dcm", identity)
    short = write_mr_series(phantom_mr()[:, :, :MIN_SLICES - 1], root / "short", identity=identity,
                            series_description="T1 short")
    out = tmp_path / "out"
    assert predict("--mr", root, "--model", package, "--out", out) == 1
    message = only_case(out)["error_messages"][0]
    assert f"{root}: no 3-D MR series (at least {MIN_SLICES} slices" in message
    assert "'localizer'" in message and "(localizer)" in message
    assert "CT, not MR" in message and f"{MIN_SLICES - 1} slices, fewer than {MIN_SLICES}" in message
    assert "--series" in message
    # the generic reader (no modality asked) still reads a lone short series, e.g. for tests and CT read-back
    assert read_dicom_series(short[0].parent).image.GetSize()[2] == MIN_SLICES - 1


# ---------------------------------------------------------------- rules and cost


def test_case_ids_and_grouping_rules(tmp_path: Path) -> None:
    identity = study_identity("ID 9")
    write_t1(tmp_path / "a" / "SE000001", identity)
    write_localizer(tmp_path / "a" / "SE000000", identity)
    other = study_identity("ID 9")  # same patient, a CT-only study: attached to the MR case, not a case of its own
    write_ct(tmp_path / "a" / "ct_study", other)
    write_t1(tmp_path / "b", study_identity("Q"))  # another patient: a case
    write_rtstruct(tmp_path / "orphan" / "RS1")  # no patient, no study, two MR cases: a (failing) case of its own
    cases = {case.case_id: case for case in discover_cases(tmp_path)}
    assert sorted(cases) == ["a", "b", "orphan"]
    assert [s.modality for s in cases["a"].study.series] == ["MR", "MR", "CT"]
    assert cases["orphan"].study.series == ()
    # series folders of one study directly in the input, beside another study's folder: no folder holds the first
    # case alone (its id is <PatientID>_<SeriesNumber>); the other's folder does
    flat = tmp_path / "flat"
    write_t1(flat / "s1", identity)
    write_localizer(flat / "s2", identity)
    write_t2(flat / "s3", study_identity("R"))
    ids = sorted(case.case_id for case in discover_cases(flat))
    assert ids == ["ID_9_3", "s3"]
    assert safe_case_id("Müller/ 12") == "M_ller_12" and safe_case_id("..") == "UNKNOWN"


def test_each_header_read_once_and_only_the_chosen_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from synthct.algorithm.cases import collect_cases

    from synthct.dicom import read as read_module

    identity = study_identity()
    root = write_study_tree(tmp_path / "mr_case", identity, t2=True)
    headers: list[Path] = []
    pixels: list[Path] = []
    real_header, real_dataset = scan_module.read_header, read_module._read_dataset
    monkeypatch.setattr(scan_module, "read_header", lambda path: headers.append(path) or real_header(path))
    monkeypatch.setattr(read_module, "_read_dataset", lambda path: pixels.append(path) or real_dataset(path))
    (case,) = collect_cases(root, None, "3")
    volume = read_dicom_series(case.study, case.series_uid, modality="MR")
    all_files = sorted(p for p in root.rglob("*") if p.is_file())
    assert sorted(headers) == all_files  # every file's header exactly once
    assert sorted(pixels) == sorted((root / "t1").iterdir())  # the chosen series' files only
    assert volume.image.GetSize()[2] == T1_SLICES and case.case_id == "mr_case"
