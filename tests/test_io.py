"""synthct.io: reading (files, DICOM series), errors naming the file, atomic writes, geometry checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from synthct.io import (
    Geometry,
    ImageError,
    array_to_image,
    check_same_geometry,
    geometry_differences,
    is_image_path,
    read_array,
    read_image,
    strip_image_suffix,
    write_image,
)


def _image(shape_zyx: tuple[int, int, int] = (4, 5, 6), spacing=(0.8, 0.9, 2.5), origin=(1.0, -2.0, 3.0)) -> sitk.Image:
    array = np.arange(np.prod(shape_zyx), dtype=np.int16).reshape(shape_zyx)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


@pytest.mark.parametrize(
    ("name", "stem"),
    [("1BA001.nii.gz", "1BA001"), ("ct.MHA", "ct"), ("a.b.nrrd", "a.b"), ("x.mhd", "x"), ("y.nii", "y"),
     ("notes.txt", "notes.txt")],
)  # fmt: skip
def test_strip_image_suffix(name: str, stem: str) -> None:
    assert strip_image_suffix(name) == stem


@pytest.mark.parametrize("suffix", [".mha", ".nii.gz", ".nii", ".nrrd"])
def test_write_then_read_round_trip_keeps_voxels_and_geometry(tmp_path: Path, suffix: str) -> None:
    image = _image()
    path = write_image(image, tmp_path / "sub" / f"case{suffix}")
    assert is_image_path(path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    array, loaded = read_array(path)
    assert array.dtype == np.float32 and array.shape == (4, 5, 6)  # (z, y, x)
    np.testing.assert_array_equal(array, sitk.GetArrayFromImage(image))
    assert geometry_differences(image, loaded) == []
    assert Geometry.of(loaded).size == (6, 5, 4)  # SimpleITK order (x, y, z)


def test_write_image_is_atomic_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "ct.mha"
    write_image(_image(), target)
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        write_image(_image(), tmp_path / "ct.unknownformat")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.mha"]


def test_read_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"missing\.mha: file not found"):
        read_image(tmp_path / "missing.mha")
    corrupt = tmp_path / "corrupt.mha"
    corrupt.write_bytes(b"garbage")
    with pytest.raises(ImageError, match=r"corrupt\.mha: cannot be read as an image"):
        read_image(corrupt)
    flat = tmp_path / "flat.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 6), np.float32)), str(flat))
    with pytest.raises(ImageError, match=r"flat\.mha: expected a 3-D image, got 2-D"):
        read_image(flat)
    assert read_image(flat, require_3d=False).GetDimension() == 2
    vector = tmp_path / "vector.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5, 2), np.float32), isVector=True), str(vector))
    with pytest.raises(ImageError, match=r"vector\.mha: expected one component per voxel, got 2"):
        read_image(vector)
    empty_folder = tmp_path / "empty"
    empty_folder.mkdir()
    with pytest.raises(ImageError, match=r"empty: folder holds no DICOM series"):
        read_image(empty_folder)


def test_read_dicom_series_folder(tmp_path: Path) -> None:
    array = (np.arange(3 * 6 * 7, dtype=np.int16).reshape(3, 6, 7) - 50).astype(np.int16)
    volume = sitk.GetImageFromArray(array)
    volume.SetSpacing((0.7, 0.8, 2.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series = "1.2.826.0.1.3680043.2.1125.1"
    for z in range(array.shape[0]):
        slice_image = volume[:, :, z]
        for tag, value in {
            "0008|0060": "CT",
            "0020|000d": series + ".1",
            "0020|000e": series + ".2",
            "0008|0018": f"{series}.3.{z}",
            "0020|0013": str(z + 1),
            "0020|0032": f"0\\0\\{2.0 * z}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": "0.8\\0.7",
            "0018|0050": "2.0",
        }.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(tmp_path / f"slice{z:03d}.dcm"))
        writer.Execute(slice_image)
    image = read_image(tmp_path)
    assert image.GetSize() == (7, 6, 3)
    np.testing.assert_allclose(image.GetSpacing(), (0.7, 0.8, 2.0), rtol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), array)


def test_array_to_image_copies_geometry() -> None:
    reference = _image()
    array = np.ones((4, 5, 6), np.float32)
    for source in (reference, Geometry.of(reference)):
        image = array_to_image(array, source)
        assert geometry_differences(reference, image) == []


def test_geometry_differences_and_check() -> None:
    reference = _image()
    assert geometry_differences(reference, _image(spacing=(0.8, 0.9, 2.5 * (1 + 5e-4)))) == []  # within tolerance
    assert geometry_differences(reference, _image(origin=(1.0, -2.0, 3.005))) == []
    (size,) = geometry_differences(reference, _image(shape_zyx=(4, 5, 7)))
    assert "size (x, y, z) (7, 5, 4) != (6, 5, 4)" in size
    (spacing,) = geometry_differences(reference, _image(spacing=(0.8, 0.9, 3.0)))
    assert spacing.startswith("spacing") and "mm" in spacing
    (origin,) = geometry_differences(reference, _image(origin=(1.0, -2.0, 4.0)))
    assert origin.startswith("origin") and "off by up to 1 mm" in origin
    rotated = _image()
    rotated.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    (direction,) = geometry_differences(reference, rotated)
    assert direction.startswith("direction")
    with pytest.raises(ImageError, match=r"^sct\.mha: geometry differs from ct\.mha: origin"):
        check_same_geometry(reference, _image(origin=(0.0, 0.0, 0.0)), "ct.mha", "sct.mha")
    check_same_geometry(reference, _image(), "ct.mha", "sct.mha")


def test_atomic_writes_get_normal_permissions(tmp_path):
    """Files written atomically are readable by others (a container may run as another user)."""
    import stat

    from synthct.atomic import write_text_atomic

    target = tmp_path / "out.json"
    write_text_atomic(target, "{}")
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode & stat.S_IRGRP and mode & stat.S_IROTH, oct(mode)
