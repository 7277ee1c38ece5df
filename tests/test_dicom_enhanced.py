"""Enhanced MR (multi-frame, functional groups) and legacy files without preamble / file meta (SPEC §12).

An Enhanced MR object written by ``write_enhanced_mr`` must read voxel for voxel as the same MR written as a
classic series by ``write_mr_series``; stacks (echoes, orientations) are listed or chosen with ``--series UID#STACK``;
bad objects give errors naming the file and frames.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.sequence import Sequence
from synthct.algorithm.analytic import build_analytic_package
from test_dicom import mr_image, rotation
from test_predict_clinical import COPIED, PARAMS, phantom_mr, predict, results_by_case

from synthct.dicom import DicomError, is_dicom_file, read_dicom_series, write_mr_series
from synthct.dicom.enhanced import split_selector
from synthct.dicom.mr import ENHANCED_MR_IMAGE_STORAGE, write_enhanced_mr

IDENTITY = {
    "PatientName": "ENHANCED^TEST", "PatientID": "EMR-0001", "PatientBirthDate": "19700101", "PatientSex": "O",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1001", "StudyID": "7", "StudyDate": "20240102",
    "StudyTime": "101500", "AccessionNumber": "ACC7", "ReferringPhysicianName": "",
    "FrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.1002", "PositionReferenceIndicator": "",
    "PatientPosition": "HFS", "BodyPartExamined": "HEAD",
}
NO_META_NOTE = "read without file meta: implicit VR little endian assumed"


def assert_same_volume(expected: sitk.Image, actual: sitk.Image) -> None:
    """Voxel for voxel: the array, and the spacing, origin and direction exactly."""
    np.testing.assert_array_equal(sitk.GetArrayFromImage(actual), sitk.GetArrayFromImage(expected))
    assert actual.GetSpacing() == expected.GetSpacing()
    assert actual.GetOrigin() == expected.GetOrigin()
    assert actual.GetDirection() == expected.GetDirection()


def dciodvfy_output(path: Path) -> str:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, timeout=60, check=False)
    return (result.stdout + result.stderr).decode("utf-8", errors="replace")


def frame_positions(path: Path) -> list[int]:
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    items = dataset.PerFrameFunctionalGroupsSequence
    return [int(item.FrameContentSequence[0].InStackPositionNumber) for item in items]


def oblique_image() -> sitk.Image:
    """``mr_image`` turned by a second, different oblique rotation (neither axis-aligned nor test_dicom's)."""
    image = mr_image()
    image.SetDirection(tuple(rotation(np.array([0.2, -1.0, 0.5]), 31.0).ravel()))
    return image


def with_dataset(path: Path, change) -> None:
    """Load ``path``, apply ``change(dataset)``, save it again (preamble, file meta)."""
    dataset = pydicom.dcmread(path)
    change(dataset)
    dataset.save_as(path, enforce_file_format=True)


# --- Enhanced MR equals the classic series ----------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["axial", "oblique", "oblique2"])
def test_enhanced_mr_reads_voxel_for_voxel_as_the_classic_series(tmp_path: Path, direction: str) -> None:
    image = oblique_image() if direction == "oblique2" else mr_image(direction)
    classic = read_dicom_series(write_mr_series(image, tmp_path / "classic", identity=IDENTITY, shuffle_seed=2)[0]
                                .parent)
    files = write_enhanced_mr(image, tmp_path / "enhanced", identity=IDENTITY, shuffle_seed=4)
    assert len(files) == 1 and pydicom.dcmread(files[0]).SOPClassUID == ENHANCED_MR_IMAGE_STORAGE
    positions = frame_positions(files[0])
    assert sorted(positions) == list(range(1, image.GetSize()[2] + 1)) and positions != sorted(positions)
    enhanced = read_dicom_series(tmp_path / "enhanced")
    assert_same_volume(classic.image, enhanced.image)
    assert enhanced.identity == classic.identity and enhanced.identity["PatientID"] == "EMR-0001"
    assert enhanced.notes == []
    np.testing.assert_allclose(sitk.GetArrayFromImage(enhanced.image), sitk.GetArrayFromImage(image), atol=0.05)


def test_per_frame_functional_groups_and_several_files(tmp_path: Path) -> None:
    """Pixel measures, orientation and rescale per frame instead of shared; frames split over several files."""
    image = mr_image("oblique")
    classic = read_dicom_series(write_mr_series(image, tmp_path / "classic")[0].parent)
    groups = {"PixelMeasuresSequence", "PlaneOrientationSequence", "PixelValueTransformationSequence"}
    files = write_enhanced_mr(image, tmp_path / "per_frame", per_frame=groups, shuffle_seed=1)
    shared = pydicom.dcmread(files[0]).SharedFunctionalGroupsSequence[0]
    assert not groups & set(shared.dir())
    assert_same_volume(classic.image, read_dicom_series(tmp_path / "per_frame").image)
    split = write_enhanced_mr(image, tmp_path / "split", frames_per_file=3, shuffle_seed=6)
    assert [int(pydicom.dcmread(p).NumberOfFrames) for p in split] == [3, 3, 1]
    assert len({str(pydicom.dcmread(p).SeriesInstanceUID) for p in split}) == 1
    assert_same_volume(classic.image, read_dicom_series(tmp_path / "split").image)


def test_legacy_converted_enhanced_mr_reads_as_the_classic_series(tmp_path: Path) -> None:
    """Legacy Converted Enhanced MR: no MR-specific macros, echo time among the unassigned converted attributes."""
    image = mr_image("oblique")
    classic = read_dicom_series(write_mr_series(image, tmp_path / "classic")[0].parent)
    files = write_enhanced_mr(image, tmp_path / "legacy", shuffle_seed=3)

    def convert(dataset: pydicom.Dataset) -> None:
        dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.4"
        dataset.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        for keyword in list(dataset.SharedFunctionalGroupsSequence[0].dir()):
            if keyword.startswith("MR"):
                delattr(dataset.SharedFunctionalGroupsSequence[0], keyword)
        for item in dataset.PerFrameFunctionalGroupsSequence:
            del item.MREchoSequence
            unassigned = pydicom.Dataset()
            unassigned.EchoTime = "2.98"
            item.UnassignedPerFrameConvertedAttributesSequence = [unassigned]

    with_dataset(files[0], convert)
    assert_same_volume(classic.image, read_dicom_series(tmp_path / "legacy").image)


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy not on PATH: install Debian's dicom3tools (apt-get install dicom3tools)")
def test_dciodvfy_reports_no_error_on_enhanced_objects(tmp_path: Path) -> None:
    write_enhanced_mr(mr_image("oblique"), tmp_path / "one", shuffle_seed=1)
    write_enhanced_mr([mr_image(), mr_image(integral=True)], tmp_path / "echoes", echo_times_ms=[2.46, 4.92],
                      per_frame={"PixelMeasuresSequence", "PixelValueTransformationSequence"})
    write_enhanced_mr([mr_image(), oblique_image()], tmp_path / "orientations")
    write_enhanced_mr(mr_image(), tmp_path / "split", frames_per_file=4)
    files = sorted(tmp_path.glob("*/*.dcm"))
    assert len(files) == 5
    for path in files:
        output = dciodvfy_output(path)
        assert "EnhancedMRImage" in output, output
        assert [line for line in output.splitlines() if line.startswith("Error")] == [], (path, output)


# --- several stacks ---------------------------------------------------------------------------------------------


def test_multi_echo_object_lists_stacks_and_one_is_chosen(tmp_path: Path) -> None:
    first, second = mr_image(), mr_image(integral=True)
    files = write_enhanced_mr([first, second], tmp_path / "mr", echo_times_ms=[2.46, 4.92], shuffle_seed=8)
    uid = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
    with pytest.raises(DicomError) as caught:
        read_dicom_series(tmp_path / "mr")
    message = str(caught.value)
    assert str(files[0]) in message and "2 stacks" in message and f"--series '{uid}#<stack>'" in message, message
    assert "#1  TE=2.46ms: 7 frame(s), echo time 2.46 ms" in message, message
    assert "#2  TE=4.92ms: 7 frame(s), echo time 4.92 ms" in message, message
    assert "frame type ORIGINAL\\PRIMARY\\VOLUME\\NONE" in message and "orientation axial" in message, message
    for selector, expected in ((f"{uid}#2", second), ("#1", first), ("#TE=4.92ms", second), (f"{uid}#te=2.46", first)):
        volume = read_dicom_series(tmp_path / "mr", selector)
        np.testing.assert_allclose(sitk.GetArrayFromImage(volume.image), sitk.GetArrayFromImage(expected), atol=0.05)
        assert volume.series_uid == uid and any("chose stack" in note for note in volume.notes), volume.notes
    with pytest.raises(DicomError, match=r"no stack #3; the series holds 2 stack\(s\)"):
        read_dicom_series(tmp_path / "mr", "#3")
    with pytest.raises(DicomError, match=r"stack 'TE' matches 2 stacks \(#1, #2\)"):
        read_dicom_series(tmp_path / "mr", "#TE")
    with pytest.raises(DicomError, match="no stack matches 'water'"):
        read_dicom_series(tmp_path / "mr", "#water")


def test_dixon_water_and_fat_stacks_by_frame_type(tmp_path: Path) -> None:
    """Dixon images share the echo time; FrameType value 4 (MRImageFrameTypeSequence per frame) tells them apart."""
    water, fat = mr_image(), mr_image(integral=True)
    files = write_enhanced_mr([water, fat], tmp_path / "mr", echo_times_ms=[2.46, 4.92], shuffle_seed=3)

    def dixon(dataset: pydicom.Dataset) -> None:
        shared = dataset.SharedFunctionalGroupsSequence[0].MRImageFrameTypeSequence[0]
        for item in dataset.PerFrameFunctionalGroupsSequence:
            kind = "WATER" if float(item.MREchoSequence[0].EffectiveEchoTime) < 3 else "FAT"
            item.MREchoSequence[0].EffectiveEchoTime = 2.46
            frame_type = pydicom.Dataset()
            for keyword in shared.dir():
                setattr(frame_type, keyword, shared.get(keyword))
            frame_type.FrameType = ["DERIVED", "PRIMARY", "DIXON", kind]
            item.MRImageFrameTypeSequence = [frame_type]
        del dataset.SharedFunctionalGroupsSequence[0].MRImageFrameTypeSequence

    with_dataset(files[0], dixon)
    with pytest.raises(DicomError) as caught:
        read_dicom_series(tmp_path / "mr")
    message = str(caught.value)
    expected = "#1  type=DIXON\\FAT: 7 frame(s), echo time 2.46 ms, frame type DERIVED\\PRIMARY\\DIXON\\FAT"
    assert expected in message, message
    assert "#2  type=DIXON\\WATER" in message, message
    np.testing.assert_allclose(sitk.GetArrayFromImage(read_dicom_series(tmp_path / "mr", "#water").image),
                               sitk.GetArrayFromImage(water), atol=0.05)


def test_stacks_in_several_orientations_are_listed_with_their_orientation(tmp_path: Path) -> None:
    axial, oblique = mr_image(), oblique_image()
    write_enhanced_mr([axial, oblique], tmp_path / "mr", shuffle_seed=2)
    with pytest.raises(DicomError) as caught:
        read_dicom_series(tmp_path / "mr")
    message = str(caught.value)
    assert "#1  stack=1:" in message and "orientation axial" in message, message
    assert "#2  stack=2:" in message and "orientation oblique" in message, message
    assert_same_volume(read_dicom_series(write_mr_series(oblique, tmp_path / "classic")[0].parent).image,
                       read_dicom_series(tmp_path / "mr", "#2").image)


def test_the_only_3d_stack_is_taken_with_a_note(tmp_path: Path) -> None:
    """A volume and a single-frame sagittal localizer in one object: the volume is taken, the note names the other."""
    volume = mr_image()
    localizer = sitk.GetImageFromArray(sitk.GetArrayFromImage(volume)[3:4])
    localizer.SetSpacing(volume.GetSpacing())
    localizer.SetDirection((0, 0, 1, 1, 0, 0, 0, 1, 0))
    write_enhanced_mr([volume, localizer], tmp_path / "mr", shuffle_seed=3)
    result = read_dicom_series(tmp_path / "mr")
    assert_same_volume(read_dicom_series(write_mr_series(volume, tmp_path / "classic")[0].parent).image, result.image)
    assert len(result.notes) == 1 and "took stack #1" in result.notes[0] and "the only 3-D volume" in result.notes[0]
    assert "#2 stack=2 (1 frame(s)" in result.notes[0] and "single slice" in result.notes[0], result.notes


def test_further_dimension_splits_stacks_unless_it_counts_slices(tmp_path: Path) -> None:
    """A vendor dimension (here TriggerDelayTime) with few values is a stack feature; one counting slices is not."""
    first, second = mr_image(), mr_image(integral=True)
    files = write_enhanced_mr([first, second], tmp_path / "mr", echo_times_ms=[2.46, 4.92], shuffle_seed=1)

    def trigger_dimension(dataset: pydicom.Dataset) -> None:
        dimension = dataset.DimensionIndexSequence[2]
        dimension.DimensionIndexPointer, dimension.DimensionDescriptionLabel = 0x00181060, "Trigger Delay"
        for item in dataset.PerFrameFunctionalGroupsSequence:
            item.MREchoSequence[0].EffectiveEchoTime = 2.46

    with_dataset(files[0], trigger_dimension)
    with pytest.raises(DicomError, match=r"#1  TriggerDelay=1: 7 frame\(s\), echo time 2\.46 ms") as caught:
        read_dicom_series(tmp_path / "mr")
    assert "#2  TriggerDelay=2: 7 frame(s)" in str(caught.value)
    np.testing.assert_allclose(sitk.GetArrayFromImage(read_dicom_series(tmp_path / "mr", "#TriggerDelay=2").image),
                               sitk.GetArrayFromImage(second), atol=0.05)
    files = write_enhanced_mr(first, tmp_path / "counter")

    def counting_dimension(dataset: pydicom.Dataset) -> None:
        dataset.DimensionIndexSequence[2].DimensionIndexPointer = 0x00181060
        for number, item in enumerate(dataset.PerFrameFunctionalGroupsSequence, start=1):
            item.FrameContentSequence[0].DimensionIndexValues = [1, number, number]

    with_dataset(files[0], counting_dimension)
    assert_same_volume(read_dicom_series(write_mr_series(first, tmp_path / "classic")[0].parent).image,
                       read_dicom_series(tmp_path / "counter").image)


def test_stack_choice_on_a_classic_series_is_an_error(tmp_path: Path) -> None:
    write_mr_series(mr_image(), tmp_path / "mr")
    with pytest.raises(DicomError, match=r"stack '#2' chosen, but series .* is not a multi-frame"):
        read_dicom_series(tmp_path / "mr", "#2")


def test_split_selector() -> None:
    assert split_selector(None) == (None, None)
    assert split_selector("1.2.3") == ("1.2.3", None)
    assert split_selector("1.2.3#2") == ("1.2.3", "2")
    assert split_selector("#TE=4.92ms") == (None, "TE=4.92ms")
    assert split_selector("T1 MPRAGE#water ") == ("T1 MPRAGE", "water")


# --- bad enhanced objects ---------------------------------------------------------------------------------------


def test_missing_functional_group_geometry_names_file_and_frame(tmp_path: Path) -> None:
    files = write_enhanced_mr(mr_image(), tmp_path / "mr")
    with_dataset(files[0], lambda ds: delattr(ds.PerFrameFunctionalGroupsSequence[4], "PlanePositionSequence"))
    with pytest.raises(DicomError, match=r"EMR0001\.dcm frame 5: missing ImagePositionPatient "
                                         r"\(PlanePositionSequence\) in both the per-frame and the shared"):
        read_dicom_series(tmp_path / "mr")
    files = write_enhanced_mr(mr_image(), tmp_path / "mr2")
    with_dataset(files[0], lambda ds: delattr(ds.SharedFunctionalGroupsSequence[0], "PixelMeasuresSequence"))
    with pytest.raises(DicomError, match=r"EMR0001\.dcm frame 1: missing PixelSpacing \(PixelMeasuresSequence\)"):
        read_dicom_series(tmp_path / "mr2")


def test_mixed_orientations_in_one_stack_name_the_frames(tmp_path: Path) -> None:
    files = write_enhanced_mr(mr_image(), tmp_path / "mr", per_frame={"PlaneOrientationSequence"})

    def tilt(dataset: pydicom.Dataset) -> None:
        dataset.PerFrameFunctionalGroupsSequence[3].PlaneOrientationSequence[0].ImageOrientationPatient = \
            [1, 0, 0, 0, 0.9950042, -0.0998334]

    with_dataset(files[0], tilt)
    with pytest.raises(DicomError, match=r"mixed orientations in one series: EMR0001\.dcm frame 1 has "
                                         r"ImageOrientationPatient .*, EMR0001\.dcm frame 4 has") as caught:
        read_dicom_series(tmp_path / "mr")
    assert str(files[0]) in str(caught.value)


def test_missing_and_duplicated_frames_name_the_frames(tmp_path: Path) -> None:
    files = write_enhanced_mr(mr_image(), tmp_path / "mr")  # frames in slice order

    def drop_frame_4(dataset: pydicom.Dataset) -> None:
        keep = [i for i in range(int(dataset.NumberOfFrames)) if i != 3]
        dataset.PixelData = dataset.pixel_array[keep].astype("<u2").tobytes()
        dataset.PerFrameFunctionalGroupsSequence = Sequence([dataset.PerFrameFunctionalGroupsSequence[i] for i in keep])
        dataset.NumberOfFrames = len(keep)

    with_dataset(files[0], drop_frame_4)
    with pytest.raises(DicomError, match=r"missing slice: gap of 5\.000 mm between EMR0001\.dcm frame 3 at .* and "
                                         r"EMR0001\.dcm frame 4 at .*1 slice missing"):
        read_dicom_series(tmp_path / "mr")
    files = write_enhanced_mr(mr_image(), tmp_path / "mr2")

    def duplicate(dataset: pydicom.Dataset) -> None:
        planes = [item.PlanePositionSequence[0] for item in dataset.PerFrameFunctionalGroupsSequence]
        planes[5].ImagePositionPatient = planes[2].ImagePositionPatient

    with_dataset(files[0], duplicate)
    with pytest.raises(DicomError, match=r"EMR0001\.dcm frame 3 and EMR0001\.dcm frame 6 are at the same position"):
        read_dicom_series(tmp_path / "mr2")


def test_mixed_single_and_multi_frame_files_are_an_error(tmp_path: Path) -> None:
    enhanced = write_enhanced_mr(mr_image(), tmp_path / "enhanced")
    classic = write_mr_series(mr_image(), tmp_path / "mr")
    uid = str(pydicom.dcmread(classic[0]).SeriesInstanceUID)
    with_dataset(enhanced[0], lambda ds: setattr(ds, "SeriesInstanceUID", uid))
    shutil.copy(enhanced[0], tmp_path / "mr" / enhanced[0].name)
    with pytest.raises(DicomError, match=r"mixes 1 multi-frame file\(s\) \(EMR0001\.dcm, \.\.\.\) and 7 single-frame"):
        read_dicom_series(tmp_path / "mr")


# --- legacy files without preamble / file meta ------------------------------------------------------------------


def strip_meta(files: list[Path], folder: Path) -> list[Path]:
    """Copies of ``files`` as old archives store them: implicit VR little endian, no preamble, no group 0002."""
    folder.mkdir(parents=True)
    result = []
    for path in files:
        dataset = pydicom.dcmread(path)
        del dataset.file_meta
        dataset.preamble = None
        target = folder / path.name
        pydicom.dcmwrite(target, dataset, implicit_vr=True, little_endian=True, enforce_file_format=False)
        result.append(target)
    return result


def test_files_without_preamble_and_meta_read_as_with_them(tmp_path: Path) -> None:
    files = write_mr_series(mr_image("oblique"), tmp_path / "meta", shuffle_seed=1)
    bare = strip_meta(files, tmp_path / "bare")
    head = bare[0].read_bytes()[:132]
    assert head[:2] == b"\x08\x00" and head[128:132] != b"DICM" and b"\x02\x00\x10\x00" not in bare[0].read_bytes()
    assert all(is_dicom_file(path) for path in bare)
    with_meta, without = read_dicom_series(tmp_path / "meta"), read_dicom_series(tmp_path / "bare")
    assert_same_volume(with_meta.image, without.image)
    assert without.identity == with_meta.identity
    assert without.notes == [f"7 files in {tmp_path / 'bare'} {NO_META_NOTE}"]
    enhanced = strip_meta(write_enhanced_mr(mr_image("oblique"), tmp_path / "emr"), tmp_path / "bare_emr")
    assert is_dicom_file(enhanced[0])
    assert_same_volume(with_meta.image, read_dicom_series(tmp_path / "bare_emr").image)


def test_garbage_starting_like_a_headerless_file_is_not_dicom(tmp_path: Path) -> None:
    path = tmp_path / "junk"
    path.write_bytes(b"\x08\x00\x05\x00" + bytes(range(256)) * 4)
    assert not is_dicom_file(path)


# --- synthct predict: the same CT identity and values from classic, enhanced and legacy input ---------------------


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_analytic_package(tmp_path_factory.mktemp("models") / "brain", "brain", **PARAMS)


def test_predict_from_enhanced_and_legacy_files_matches_the_classic_series(tmp_path: Path, package: Path) -> None:
    image, root, out = phantom_mr(), tmp_path / "mr", tmp_path / "out"
    classic = write_mr_series(image, root / "classic", identity=IDENTITY, suffix="", shuffle_seed=5)
    write_enhanced_mr(image, root / "enhanced", identity=IDENTITY, shuffle_seed=5)
    strip_meta(classic, root / "legacy")
    results = {}
    for case in ("classic", "enhanced", "legacy"):  # one run each: one patient's series in one tree are one case
        assert predict("--mr", root / case, "--model", package, "--out", out / case, "--dicom-out", "--no-qa") == 0
        results[case] = results_by_case(out / case)[case]
    assert NO_META_NOTE in " ".join(results["legacy"]["warnings"]), results["legacy"]
    assert not any("file meta" in w for case in ("classic", "enhanced") for w in results[case].get("warnings", []))
    reference = sitk.ReadImage(str(out / "classic" / "classic.mha"))
    source = pydicom.dcmread(classic[0], stop_before_pixels=True)
    cts = {}
    for case in ("classic", "enhanced", "legacy"):
        assert_same_volume(reference, sitk.ReadImage(str(out / case / f"{case}.mha")))
        ct_files = sorted((out / case / "dicom" / case).iterdir())
        headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in ct_files]
        for keyword in COPIED:
            assert {str(h.get(keyword, "")) for h in headers} == {str(source.get(keyword, ""))}, (case, keyword)
        cts[case] = (headers, np.stack([pydicom.dcmread(path).pixel_array for path in ct_files]))
    for case in ("enhanced", "legacy"):
        np.testing.assert_array_equal(cts[case][1], cts["classic"][1])
        assert [h.ImagePositionPatient for h in cts[case][0]] == [h.ImagePositionPatient for h in cts["classic"][0]]
        assert cts[case][0][0].SeriesInstanceUID != cts["classic"][0][0].SeriesInstanceUID
