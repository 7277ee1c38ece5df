"""DICOM core: MR series round trip, CT series for planning systems, dciodvfy, and bad input."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from synthct import dicom
from synthct.dicom import (
    DicomError,
    contains_dicom,
    find_series,
    is_dicom_file,
    read_dicom_series,
    write_ct_series,
    write_mr_series,
)
from synthct.io import ImageError, geometry_differences
from tests.conftest import body_case

SHA = "0123456789abcdef" * 4
SHAPE = (7, 18, 22)  # (z, y, x)
SPACING = (0.9, 1.1, 2.5)  # (x, y, z) mm


def rotation(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rotation matrix about ``axis`` (Rodrigues)."""
    axis = axis / np.linalg.norm(axis)
    angle = math.radians(angle_deg)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


DIRECTIONS = {
    "axial": np.eye(3),
    "oblique": rotation(np.array([1.0, 0.4, 0.2]), 23.0),
}


def mr_image(direction: str = "axial", integral: bool = False, shape: tuple[int, int, int] = SHAPE) -> sitk.Image:
    """A small MR-like float image (body ellipsoid with texture) with the named direction."""
    _, sct, mask = body_case(shape, seed=3)
    values = np.where(mask > 0, 400.0 + 0.3 * sct, 5.0 + np.abs(sct) * 0.01).astype(np.float32)
    if integral:
        values = np.rint(np.clip(values, 0, 4000)).astype(np.float32)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(SPACING)
    image.SetOrigin((-12.5, 31.0, -40.25))
    image.SetDirection(tuple(DIRECTIONS[direction].ravel()))
    return image


def hu_image(reference: sitk.Image) -> sitk.Image:
    """An int16 HU image in the reference's geometry (air, soft tissue, bone)."""
    _, sct, _ = body_case(tuple(reversed(reference.GetSize())), seed=5)
    image = sitk.GetImageFromArray(np.clip(np.rint(sct), -1024, 3071).astype(np.int16))
    image.CopyInformation(reference)
    return image


def assert_same_geometry(expected: sitk.Image, actual: sitk.Image) -> None:
    assert expected.GetSize() == actual.GetSize()
    differences = geometry_differences(expected, actual, spacing_tol=1e-6, origin_tol_mm=1e-6, direction_tol=1e-6)
    assert not differences, differences


def positions_along_normal(files: list[Path]) -> dict[Path, float]:
    result = {}
    for path in files:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        orientation = np.asarray(header.ImageOrientationPatient, dtype=float)
        normal = np.cross(orientation[:3], orientation[3:])
        result[path] = float(np.asarray(header.ImagePositionPatient, dtype=float) @ normal)
    return result


# --- MR series round trip ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["axial", "oblique"])
def test_mr_series_round_trip_shuffled_without_suffix(tmp_path: Path, direction: str) -> None:
    image = mr_image(direction)
    files = write_mr_series(image, tmp_path / "mr", suffix="", shuffle_seed=7)
    assert len(files) == SHAPE[0] and all(path.suffix == "" for path in files)
    # the file names and instance numbers do not follow the position order: the reader must sort by position
    by_position = sorted(files, key=positions_along_normal(files).get)
    assert by_position != sorted(files)
    instances = [int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber) for p in by_position]
    assert instances != sorted(instances) and instances != sorted(instances, reverse=True)

    volume = read_dicom_series(tmp_path / "mr")
    assert_same_geometry(image, volume.image)
    assert volume.image.GetPixelID() == sitk.sitkFloat32
    slope = float(pydicom.dcmread(files[0], stop_before_pixels=True).RescaleSlope)
    assert slope != 1.0  # float MR: stored with a real rescale, which the reader applied
    difference = np.abs(sitk.GetArrayFromImage(volume.image) - sitk.GetArrayFromImage(image))
    assert difference.max() <= slope * 0.5 + 1e-3
    assert volume.series_uid == str(pydicom.dcmread(files[0]).SeriesInstanceUID)
    assert volume.notes == []


def test_mr_series_integral_values_exact_with_suffix(tmp_path: Path) -> None:
    image = mr_image("axial", integral=True)
    files = write_mr_series(image, tmp_path / "mr")
    assert [p.name for p in files][:2] == ["IM0001.dcm", "IM0002.dcm"]
    header = pydicom.dcmread(files[0])
    assert header.SOPClassUID == dicom.MR_IMAGE_STORAGE and header.Modality == "MR"
    assert header.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    for keyword in ("EchoTime", "RepetitionTime", "MagneticFieldStrength", "FrameOfReferenceUID", "PatientID",
                    "StudyInstanceUID", "SliceThickness", "PixelSpacing", "InstanceNumber"):
        assert keyword in header, keyword
    volume = read_dicom_series(tmp_path / "mr")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume.image), sitk.GetArrayFromImage(image))


def test_left_handed_image_is_written_as_the_same_voxels(tmp_path: Path) -> None:
    image = mr_image("axial", integral=True)
    image.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, -1))  # z axis pointing feet-wards: slices reversed in DICOM
    write_mr_series(image, tmp_path / "mr")
    volume = read_dicom_series(tmp_path / "mr")
    assert volume.image.GetDirection() == (1, 0, 0, 0, 1, 0, 0, 0, 1)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume.image), sitk.GetArrayFromImage(image)[::-1])
    last = image.TransformIndexToPhysicalPoint((0, 0, image.GetSize()[2] - 1))
    np.testing.assert_allclose(volume.image.GetOrigin(), last, atol=1e-6)


def test_identity_with_non_ascii_name_round_trips(tmp_path: Path) -> None:
    identity = {"PatientName": "Müller^Jörg", "PatientID": "RT-0042", "StudyDescription": "Kopf Planung"}
    write_mr_series(mr_image(), tmp_path / "mr", identity=identity)
    volume = read_dicom_series(tmp_path / "mr")
    assert volume.identity["PatientName"] == "Müller^Jörg"
    write_ct_series(hu_image(volume.image), tmp_path / "ct", identity=volume.identity, model_name="m",
                    model_sha256=SHA)
    header = pydicom.dcmread(sorted((tmp_path / "ct").iterdir())[0], stop_before_pixels=True)
    assert str(header.PatientName) == "Müller^Jörg" and header.SpecificCharacterSet == "ISO_IR 192"


# --- CT series -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["axial", "oblique"])
def ct_case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An MR series, its volume, an HU image in its geometry, and that image written as a CT series."""
    root = tmp_path_factory.mktemp(f"ct_{request.param}")
    mr_files = write_mr_series(mr_image(request.param), root / "mr", suffix="", shuffle_seed=3)
    volume = read_dicom_series(root / "mr")
    hu = hu_image(volume.image)
    ct_files = write_ct_series(hu, root / "ct", identity=volume.identity, model_name="synthct-brain-v1",
                               model_sha256=SHA)
    return {"root": root, "mr_files": mr_files, "volume": volume, "hu": hu, "ct_files": ct_files}


def test_ct_series_reread_by_simpleitk_matches_voxel_for_voxel(ct_case: dict) -> None:
    folder = ct_case["root"] / "ct"
    reader = sitk.ImageSeriesReader()
    (series_uid,) = reader.GetGDCMSeriesIDs(str(folder))
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series_uid))
    reread = reader.Execute()
    assert len(ct_case["ct_files"]) == ct_case["hu"].GetSize()[2]
    assert_same_geometry(ct_case["volume"].image, reread)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(reread), sitk.GetArrayFromImage(ct_case["hu"]))


def test_ct_series_reread_by_our_reader_matches(ct_case: dict) -> None:
    volume = read_dicom_series(ct_case["root"] / "ct")
    assert_same_geometry(ct_case["hu"], volume.image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume.image),
                                  sitk.GetArrayFromImage(ct_case["hu"]).astype(np.float32))


def test_ct_series_attributes_for_planning_systems(ct_case: dict) -> None:
    mr = pydicom.dcmread(ct_case["mr_files"][0], stop_before_pixels=True)
    headers = [pydicom.dcmread(path) for path in ct_case["ct_files"]]
    for header in headers:
        assert header.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert header.file_meta.MediaStorageSOPInstanceUID == header.SOPInstanceUID
        assert header.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and header.Modality == "CT"
        assert list(header.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert header.PixelRepresentation == 1 and header.BitsAllocated == 16 and header.SamplesPerPixel == 1
        assert float(header.RescaleSlope) == 1.0 and header.RescaleType == "HU" and "RescaleIntercept" in header
        assert header.pixel_array.dtype == np.int16
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
                        "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "FrameOfReferenceUID",
                        "PatientPosition"):
            assert header[keyword].value == mr[keyword].value, keyword
        for keyword in ("StudyID", "ReferringPhysicianName", "PositionReferenceIndicator", "SeriesNumber", "KVP",
                        "AcquisitionNumber", "PatientID", "SliceThickness", "PixelSpacing", "ImagePositionPatient",
                        "ImageOrientationPatient", "WindowCenter", "WindowWidth", "InstanceNumber"):
            assert keyword in header, keyword
        assert str(header.PatientID).strip()
        assert header.SeriesNumber == 901
        assert "synthetic ct" in header.SeriesDescription.lower() and "synthct-brain-v1" in header.SeriesDescription
        assert len(header.SeriesDescription) <= 64
        assert SHA in header.ImageComments and "synthct-brain-v1" in header.ImageComments
    assert len({h.SeriesInstanceUID for h in headers}) == 1
    assert headers[0].SeriesInstanceUID != mr.SeriesInstanceUID
    sop_uids = {h.SOPInstanceUID for h in headers}
    assert len(sop_uids) == len(headers) and not sop_uids & {pydicom.dcmread(p).SOPInstanceUID
                                                             for p in ct_case["mr_files"]}
    assert sorted(int(h.InstanceNumber) for h in headers) == list(range(1, len(headers) + 1))


def test_ct_without_identity_is_marked_synthetic(tmp_path: Path) -> None:
    hu = hu_image(mr_image("oblique"))
    files = write_ct_series(hu, tmp_path / "ct", identity=None, model_name="m", model_sha256=SHA)
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert str(header.PatientID).startswith("SYNTHCT-") and "SYNTHCT" in str(header.PatientName)
    assert header.StudyInstanceUID and header.FrameOfReferenceUID
    again = write_ct_series(hu, tmp_path / "ct2", identity=None, model_name="m", model_sha256=SHA)
    other = pydicom.dcmread(again[0], stop_before_pixels=True)
    assert other.StudyInstanceUID != header.StudyInstanceUID and other.FrameOfReferenceUID != header.FrameOfReferenceUID


def test_ct_without_source_study_keeps_given_body_part(tmp_path: Path) -> None:
    files = write_ct_series(hu_image(mr_image()), tmp_path / "ct", identity={"BodyPartExamined": "PELVIS"},
                            model_name="m", model_sha256=SHA)
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert header.BodyPartExamined == "PELVIS" and "Laterality" not in header
    assert str(header.PatientID).startswith("SYNTHCT-") and "SYNTHCT" in str(header.PatientName)


def test_ct_long_model_name_fits_value_limits(tmp_path: Path) -> None:
    name = "a-very-long-model-package-name\\with-backslash-" + "x" * 80
    files = write_ct_series(hu_image(mr_image()), tmp_path / "ct", identity=None, model_name=name, model_sha256=SHA)
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert len(header.SeriesDescription) <= 64 and "\\" not in header.SeriesDescription
    assert SHA in header.ImageComments


def test_ct_hu_beyond_int16_are_clipped_and_nan_rejected(tmp_path: Path) -> None:
    hu = hu_image(mr_image())
    array = sitk.GetArrayFromImage(hu).astype(np.float32)
    array[0, 0, 0] = -1500.4
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(hu)
    write_ct_series(image, tmp_path / "ct", identity=None, model_name="m", model_sha256=SHA)
    assert sitk.GetArrayFromImage(read_dicom_series(tmp_path / "ct").image)[0, 0, 0] == -1500.0
    array[1, 2, 3] = np.nan
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(hu)
    with pytest.raises(DicomError, match="non-finite"):
        write_ct_series(image, tmp_path / "bad", identity=None, model_name="m", model_sha256=SHA)
    assert not (tmp_path / "bad").exists()


def test_ct_unknown_identity_keyword_rejected(tmp_path: Path) -> None:
    with pytest.raises(DicomError, match="PatientsFavouriteColour"):
        write_ct_series(hu_image(mr_image()), tmp_path / "ct", identity={"PatientsFavouriteColour": "blue"},
                        model_name="m", model_sha256=SHA)


def test_ct_series_replaces_existing_folder_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "out" / "case1"
    first = write_ct_series(hu_image(mr_image(shape=(5, 12, 14))), folder, identity=None, model_name="m",
                            model_sha256=SHA)
    (folder / "stale.txt").write_text("from an older run", encoding="utf-8")
    second = write_ct_series(hu_image(mr_image()), folder, identity=None, model_name="m", model_sha256=SHA)
    assert sorted(folder.iterdir()) == sorted(second) and len(second) == SHAPE[0] != len(first)

    import synthct.dicom.write as write_module

    calls = {"n": 0}
    real_save = write_module.save

    def failing_save(dataset, path):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        real_save(dataset, path)

    monkeypatch.setattr(write_module, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_ct_series(hu_image(mr_image(shape=(9, 12, 14))), folder, identity=None, model_name="m",
                        model_sha256=SHA)
    assert sorted(folder.iterdir()) == sorted(second)  # the previous series is untouched
    assert sorted(p.name for p in folder.parent.iterdir()) == ["case1"]  # no temporary folder left


# --- dciodvfy -------------------------------------------------------------------------------------------------


def dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, timeout=60)
    output = (result.stdout + result.stderr).decode("utf-8", errors="replace")
    return [line for line in output.splitlines() if line.startswith("Error")]


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy not on PATH: install Debian's dicom3tools (apt-get install dicom3tools)")
def test_dciodvfy_reports_no_error_on_ct_and_mr_files(ct_case: dict, tmp_path: Path) -> None:
    without_identity = write_ct_series(hu_image(mr_image()), tmp_path / "ct", identity=None, model_name="m",
                                       model_sha256=SHA)
    for path in [*ct_case["ct_files"], *ct_case["mr_files"], *without_identity]:
        assert dciodvfy_errors(path) == [], path


@pytest.mark.skipif(shutil.which("dcentvfy") is None,
                    reason="dcentvfy not on PATH: install Debian's dicom3tools (apt-get install dicom3tools)")
def test_dcentvfy_finds_ct_and_mr_consistent_patient_study_and_frame(ct_case: dict) -> None:
    """dicom3tools' entity check: the CT's patient, study and frame of reference agree with the MR's in every file."""
    files = [str(p) for p in [*ct_case["ct_files"], *ct_case["mr_files"]]]
    result = subprocess.run(["dcentvfy", *files], capture_output=True, timeout=120)
    output = (result.stdout + result.stderr).decode("utf-8", errors="replace")
    assert result.returncode == 0 and "Error" not in output, output


# --- finding series and recognising files -----------------------------------------------------------------------


def write_rtstruct(path: Path, frame_uid: str | None = None) -> Path:
    """A minimal RT Structure Set file (no pixel data)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "RTSTRUCT"
    dataset.SeriesInstanceUID = generate_uid()
    dataset.StructureSetLabel = "BODY"
    dataset.FrameOfReferenceUID = frame_uid or generate_uid()
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_is_dicom_file_and_contains_dicom(tmp_path: Path) -> None:
    files = write_mr_series(mr_image(shape=(3, 8, 9)), tmp_path / "mr", suffix="")
    assert all(is_dicom_file(p) for p in files)
    headerless = tmp_path / "other" / "headerless"
    headerless.parent.mkdir()
    plain = Dataset()
    plain.update(pydicom.dcmread(files[0]))  # raw dataset: no preamble, no file meta (old PACS exports)
    pydicom.dcmwrite(headerless, plain, implicit_vr=True, little_endian=True)
    assert headerless.read_bytes()[:2] == b"\x08\x00"
    assert is_dicom_file(headerless)
    text = tmp_path / "notes.txt"  # beside the folders: tmp_path holds no DICOM file directly
    text.write_text("not DICOM", encoding="utf-8")
    assert not is_dicom_file(text) and not is_dicom_file(tmp_path / "missing") and not is_dicom_file(tmp_path)
    assert contains_dicom(tmp_path / "mr") and not contains_dicom(tmp_path) and not contains_dicom(tmp_path / "no")


def test_two_series_in_one_folder_listed_and_choosable(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    write_mr_series(mr_image(), tmp_path / "t1", series_description="T1 MPRAGE")
    write_mr_series(mr_image("oblique", shape=(5, 18, 22)), tmp_path / "t2", series_description="T2 SPACE",
                    suffix=".ima")
    folder.mkdir()
    for path in [*(tmp_path / "t1").iterdir(), *(tmp_path / "t2").iterdir()]:
        shutil.copy(path, folder / path.name)
    series, notes = find_series(folder)
    assert [s.n_slices for s in sorted(series, key=lambda s: s.description)] == [7, 5] and notes == []
    with pytest.raises(DicomError) as caught:
        read_dicom_series(folder)
    message = str(caught.value)
    for summary in series:
        assert summary.series_uid in message and summary.description in message
    assert "7 slice" in message and "5 slice" in message and "--series" in message and str(folder) in message
    t2 = next(s for s in series if s.description == "T2 SPACE")
    chosen = read_dicom_series(folder, series_uid=t2.series_uid)
    assert chosen.image.GetSize()[2] == 5 and chosen.series_uid == t2.series_uid
    assert any("skipped 1 other image series" in note and "T1 MPRAGE" in note for note in chosen.notes)
    with pytest.raises(DicomError, match=r"no image series with SeriesInstanceUID 1\.2\.3"):
        read_dicom_series(folder, series_uid="1.2.3")


def test_rtstruct_beside_series_is_ignored_with_a_note(tmp_path: Path) -> None:
    folder = tmp_path / "mr"
    write_mr_series(mr_image(), folder)
    write_rtstruct(folder / "RS.dcm")
    (folder / "README.txt").write_text("exported from PACS", encoding="utf-8")
    volume = read_dicom_series(folder)
    assert volume.image.GetSize()[2] == SHAPE[0]
    assert any("1 non-image object (RTSTRUCT)" in note and str(folder) in note for note in volume.notes)
    assert any("non-DICOM file" in note and "README.txt" in note for note in volume.notes)


def test_non_image_object_alone_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "rs"
    folder.mkdir()
    write_rtstruct(folder / "RS1")
    with pytest.raises(DicomError, match=r"no image series; ignored: 1 non-image object \(RTSTRUCT\)") as caught:
        read_dicom_series(folder)
    assert str(folder) in str(caught.value)
    with pytest.raises(DicomError, match="no image series"):
        read_dicom_series(tmp_path)  # holds only the folder "rs": no DICOM file at all


# --- bad series -----------------------------------------------------------------------------------------------


def series_files(folder: Path) -> list[Path]:
    """Files of a written series in position order."""
    files = sorted(folder.iterdir())
    return sorted(files, key=positions_along_normal(files).get)


def edit(path: Path, **values: object) -> None:
    dataset = pydicom.dcmread(path)
    for keyword, value in values.items():
        setattr(dataset, keyword, value)
    dataset.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("direction", ["axial", "oblique"])
def test_missing_slice_names_the_gap(tmp_path: Path, direction: str) -> None:
    folder = tmp_path / "mr"
    write_mr_series(mr_image(direction), folder, suffix="", shuffle_seed=1)
    ordered = series_files(folder)
    ordered[3].unlink()
    with pytest.raises(DicomError) as caught:
        read_dicom_series(folder)
    message = str(caught.value)
    assert "missing slice" in message and "expected spacing 2.500 mm" in message and "1 slice missing" in message
    assert ordered[2].name in message and ordered[4].name in message and str(folder) in message


def test_uneven_spacing_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "mr"
    write_mr_series(mr_image(), folder)
    ordered = series_files(folder)
    position = [float(v) for v in pydicom.dcmread(ordered[4]).ImagePositionPatient]
    edit(ordered[4], ImagePositionPatient=[position[0], position[1], position[2] + 0.8])
    with pytest.raises(DicomError, match=r"uneven slice spacing: gap of 3\.300 mm between .*expected spacing 2\.500"):
        read_dicom_series(folder)


def test_rounded_scanner_geometry_is_accepted(tmp_path: Path) -> None:
    """Scanners round positions (here to 0.01 mm) and direction cosines (here to 5 decimals)."""
    folder = tmp_path / "mr"
    image = mr_image("oblique")
    files = write_mr_series(image, folder, suffix="", shuffle_seed=2)
    for path in files:
        dataset = pydicom.dcmread(path)
        edit(path, ImagePositionPatient=[f"{float(v):.2f}" for v in dataset.ImagePositionPatient],
             ImageOrientationPatient=[f"{float(v):.5f}" for v in dataset.ImageOrientationPatient])
    volume = read_dicom_series(folder)
    assert not geometry_differences(image, volume.image, spacing_tol=1e-3, origin_tol_mm=0.01, direction_tol=1e-4)
    direction = np.asarray(volume.image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-12)
    write_ct_series(hu_image(volume.image), tmp_path / "ct", identity=volume.identity, model_name="m",
                    model_sha256=SHA)
    assert_same_geometry(volume.image, read_dicom_series(tmp_path / "ct").image)


def test_gantry_tilt_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "mr"
    write_mr_series(mr_image(), folder)
    for index, path in enumerate(series_files(folder)):
        position = [float(v) for v in pydicom.dcmread(path).ImagePositionPatient]
        edit(path, ImagePositionPatient=[position[0], position[1] + 0.4 * index, position[2]])
    with pytest.raises(DicomError, match="not stacked along the slice normal"):
        read_dicom_series(folder)


def test_two_slices_at_one_position_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "mr"
    files = write_mr_series(mr_image(), folder)
    dataset = pydicom.dcmread(files[3])
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.EchoNumbers = [2]
    dataset.save_as(folder / "IM0003_echo2.dcm", enforce_file_format=True)
    with pytest.raises(DicomError, match="at the same position") as caught:
        read_dicom_series(folder)
    assert files[3].name in str(caught.value) and "IM0003_echo2.dcm" in str(caught.value)


def test_mixed_orientation_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "mr"
    write_mr_series(mr_image(), folder)
    ordered = series_files(folder)
    edit(ordered[2], ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    with pytest.raises(DicomError, match="mixed orientations") as caught:
        read_dicom_series(folder)
    assert ordered[2].name in str(caught.value)


def test_different_matrix_or_pixel_spacing_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "mr"
    write_mr_series(mr_image(), folder)
    ordered = series_files(folder)
    edit(ordered[1], PixelSpacing=[1.2, 0.9])
    with pytest.raises(DicomError, match="PixelSpacing differs between slices"):
        read_dicom_series(folder)


def test_single_slice_and_multi_frame_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "mr"
    files = write_mr_series(mr_image(), folder)
    for path in files[1:]:
        path.unlink()
    with pytest.raises(DicomError, match=r"single slice.*3-D"):
        read_dicom_series(folder)
    edit(files[0], NumberOfFrames=2)
    with pytest.raises(DicomError, match="multi-frame") as caught:
        read_dicom_series(folder)
    assert files[0].name in str(caught.value)


def test_missing_geometry_is_an_error_naming_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "mr"
    files = write_mr_series(mr_image(), folder)
    dataset = pydicom.dcmread(files[2])
    del dataset.ImagePositionPatient
    dataset.save_as(files[2], enforce_file_format=True)
    with pytest.raises(DicomError, match=r"IM0003\.dcm: missing ImagePositionPatient"):
        read_dicom_series(folder)


@pytest.mark.parametrize("damage", ["truncated pixels", "truncated header", "garbage after preamble", "all garbage"])
def test_corrupt_file_is_an_error_naming_it(tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "mr"
    files = write_mr_series(mr_image(), folder, suffix="")
    victim = files[4]
    data = victim.read_bytes()
    if damage == "truncated pixels":
        victim.write_bytes(data[: len(data) - 200])
    elif damage == "truncated header":
        victim.write_bytes(data[:420])
    elif damage == "garbage after preamble":
        victim.write_bytes(data[:132] + os.urandom(64) + b"\xff" * 400)
    else:  # no longer recognisable as DICOM: ignored with a note, which the missing-slice error repeats
        victim.write_bytes(b"\xff" * 600)
    with pytest.raises(DicomError) as caught:
        read_dicom_series(folder)
    message = str(caught.value)
    if damage == "all garbage":
        assert "missing slice" in message and f"non-DICOM file ({victim.name})" in message, message
        return
    assert str(victim) in message and ("corrupt" in message or "pixel data cannot be read" in message), message


def test_rescale_slope_and_intercept_are_applied(tmp_path: Path) -> None:
    folder = tmp_path / "mr"
    image = mr_image(integral=True)
    files = write_mr_series(image, folder)
    for path in files:
        edit(path, RescaleSlope="2", RescaleIntercept="-100")
    values = sitk.GetArrayFromImage(read_dicom_series(folder).image)
    np.testing.assert_array_equal(values, sitk.GetArrayFromImage(image) * 2 - 100)


def test_jpeg_lossless_series_is_decoded(tmp_path: Path) -> None:
    """PACS exports are often JPEG Lossless; pydicom alone cannot decode it, the reader falls back to GDCM."""
    folder = tmp_path / "mr"
    image = mr_image(integral=True)
    files = write_mr_series(image, folder)
    for path in files:
        compressed_path = tmp_path / "jpeg.dcm"
        writer = sitk.ImageFileWriter()
        writer.SetFileName(str(compressed_path))
        writer.SetUseCompression(True)
        writer.SetCompressor("JPEG")
        writer.Execute(sitk.ReadImage(str(path)))
        compressed = pydicom.dcmread(compressed_path)
        dataset = pydicom.dcmread(path)
        dataset.file_meta.TransferSyntaxUID = compressed.file_meta.TransferSyntaxUID
        dataset.PixelData = compressed.PixelData
        dataset["PixelData"].VR = "OB"
        dataset.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID.is_compressed
    values = sitk.GetArrayFromImage(read_dicom_series(folder).image)
    np.testing.assert_array_equal(values, sitk.GetArrayFromImage(image))


def test_dicom_package_imports_no_torch() -> None:
    code = ("import sys, synthct.dicom; "
            "bad = [m for m in ('torch', 'monai', 'synthct.train', 'synthct.algorithm', 'synthct.evaluation') "
            "if m in sys.modules]; sys.exit(str(bad) if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert result.returncode == 0, (result.stdout + result.stderr).decode("utf-8", errors="replace")


def test_dicom_error_is_an_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not a folder"):
        read_dicom_series(tmp_path / "nowhere")
