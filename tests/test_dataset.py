"""Dataset reader (SynthRAD 2023/2025 and flat layouts), case validation, and the seeded split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from synthct.cli import main as cli_main
from synthct.dataset import (
    Case,
    DatasetError,
    find_cases,
    load_case,
    make_split,
    read_split,
    region_from_case_id,
    scan_dataset,
    write_split,
)
from synthct.phantom import generate_volumes, write_phantom_dataset


def _write(path: Path, array: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 2.5),
           origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def _tiny_case(folder: Path, suffix: str = ".mha", with_ct: bool = True, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    mr = rng.uniform(0, 500, (6, 7, 8)).astype(np.float32)
    mask = np.zeros((6, 7, 8), dtype=np.uint8)
    mask[1:5, 2:6, 2:7] = 1
    _write(folder / f"mr{suffix}", mr)
    if with_ct:
        _write(folder / f"ct{suffix}", rng.integers(-1000, 1500, (6, 7, 8)).astype(np.int16))
    _write(folder / f"mask{suffix}", mask)


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("phantoms")
    write_phantom_dataset(root, "brain", 2, seed=3, size="small", progress=False)
    write_phantom_dataset(root, "pelvis", 1, seed=3, size="small", progress=False)
    return root


def test_round_trip_synthrad2023_layout(phantom_root: Path) -> None:
    cases = find_cases(phantom_root)
    assert [(c.region, c.case_id) for c in cases] == [("brain", "1BA001"), ("brain", "1BA002"), ("pelvis", "1PA001")]
    # The root may also be Task1 itself or a region folder.
    assert find_cases(phantom_root / "Task1", region="pelvis") == cases[2:]
    assert find_cases(phantom_root / "Task1" / "brain") == cases[:2]
    volumes = load_case(cases[2])
    provenance = (phantom_root / "Task1" / "pelvis" / "phantom.json").read_text(encoding="utf-8")
    seed = json.loads(provenance)["cases"][0]["seed"]
    expected = generate_volumes("pelvis", seed, "small")
    assert volumes.mr.dtype == np.float32 and volumes.ct is not None and volumes.ct.dtype == np.float32
    assert volumes.mask.dtype == np.uint8 and set(np.unique(volumes.mask)) <= {0, 1}
    np.testing.assert_array_equal(volumes.mr, expected.mr.astype(np.float32))
    np.testing.assert_array_equal(volumes.ct, expected.ct_hu.astype(np.float32))
    np.testing.assert_array_equal(volumes.mask, expected.mask)
    assert volumes.spacing_mm == (2.5, 1.0, 1.0)
    assert volumes.mr.shape == volumes.image.GetSize()[::-1]


def test_round_trip_synthrad2025_layout(phantom_root: Path, tmp_path: Path) -> None:
    for index, source in enumerate(sorted((phantom_root / "Task1" / "brain").glob("1BA*"))):
        target = tmp_path / "Task1" / "HN" / f"1HNA00{index + 1}"
        shutil.copytree(source, target)
    (tmp_path / "Task1" / "HN" / "overview").mkdir()  # SynthRAD ships one; it is not a case
    cases = find_cases(tmp_path)
    assert [(c.region, c.case_id) for c in cases] == [("hn", "1HNA001"), ("hn", "1HNA002")]
    assert find_cases(tmp_path, region="Head and Neck") == cases
    assert load_case(cases[0]).mr.shape == (96, 128, 104)
    with pytest.raises(DatasetError, match="region 'brain'"):
        find_cases(tmp_path, region="brain")


def test_flat_layouts_and_mr_only(tmp_path: Path) -> None:
    per_case = tmp_path / "per_case"
    _tiny_case(per_case / "1PA001", ".nii.gz")
    _tiny_case(per_case / "1PA002", ".nii.gz", seed=1)
    cases = find_cases(per_case)
    assert [c.case_id for c in cases] == ["1PA001", "1PA002"] and {c.region for c in cases} == {"pelvis"}
    assert cases[0].mr.name == "mr.nii.gz"
    per_modality = tmp_path / "per_modality"
    for case_id in ("A", "B"):
        source = tmp_path / "tmp" / case_id
        _tiny_case(source)
        for modality in ("mr", "ct", "mask"):
            (per_modality / modality).mkdir(parents=True, exist_ok=True)
            shutil.copy(source / f"{modality}.mha", per_modality / modality / f"{case_id}.mha")
    with pytest.raises(DatasetError, match="region unknown"):
        find_cases(per_modality)
    cases = find_cases(per_modality, region="brain")
    assert [(c.case_id, c.region) for c in cases] == [("A", "brain"), ("B", "brain")]
    mr_only = tmp_path / "mr_only" / "Task1" / "pelvis"
    _tiny_case(mr_only / "1PA009", with_ct=False)
    with pytest.raises(DatasetError, match="1PA009: ct file missing"):
        find_cases(mr_only)
    (case,) = find_cases(mr_only, require_ct=False)
    assert case.ct is None and load_case(case).ct is None


def test_every_broken_case_is_reported(tmp_path: Path) -> None:
    region = tmp_path / "Task1" / "pelvis"
    _tiny_case(region / "1PA001")  # fine
    _tiny_case(region / "1PA002")
    (region / "1PA002" / "ct.mha").unlink()  # missing
    _tiny_case(region / "1PA003")
    (region / "1PA003" / "mask.mha").write_bytes(b"not an image")  # unreadable
    _tiny_case(region / "1PA004")
    _write(region / "1PA004" / "ct.mha", np.zeros((6, 7, 8), np.int16), spacing=(1.0, 1.0, 3.0))  # mismatch
    _tiny_case(region / "1PA005")
    _write(region / "1PA005" / "mask.mha", np.ones((6, 7, 8), np.uint8), origin=(5.0, 0.0, 0.0))
    with pytest.raises(DatasetError) as caught:
        find_cases(tmp_path)
    message = str(caught.value)
    assert "4 problem(s)" in message
    assert "1PA002: ct file missing" in message
    assert "1PA003" in message and "mask.mha" in message and "cannot be read" in message
    assert "1PA004" in message and "ct.mha" in message and "spacing" in message
    assert "1PA005" in message and "mask.mha" in message and "origin" in message
    assert "1PA001" not in message
    reports = scan_dataset(tmp_path)
    assert [r.case_id for r in reports] == ["1PA001", "1PA002", "1PA003", "1PA004", "1PA005"]
    assert [bool(r.problems) for r in reports] == [False, True, True, True, True]


def test_ambiguous_and_empty_folders(tmp_path: Path) -> None:
    region = tmp_path / "Task1" / "brain"
    _tiny_case(region / "1BA001")
    _tiny_case(region / "1BA001", ".nii.gz")
    (region / "1BA002").mkdir()
    with pytest.raises(DatasetError) as caught:
        find_cases(tmp_path)
    assert "1BA001: ambiguous mr files" in str(caught.value)
    assert "1BA002: mr file missing" in str(caught.value)
    with pytest.raises(DatasetError, match="no cases found"):
        find_cases(tmp_path / "Task1" / "brain" / "1BA002")
    with pytest.raises(DatasetError, match="not a folder"):
        find_cases(tmp_path / "absent")


def test_load_case_rejects_bad_voxels(tmp_path: Path) -> None:
    folder = tmp_path / "1BA001"
    _tiny_case(folder)
    mr = np.ones((6, 7, 8), np.float32)
    mr[0, 0, 0] = np.nan
    _write(folder / "mr.mha", mr)
    _write(folder / "mask.mha", np.zeros((6, 7, 8), np.uint8))
    case = Case("1BA001", "brain", folder / "mr.mha", folder / "ct.mha", folder / "mask.mha")
    with pytest.raises(DatasetError) as caught:
        load_case(case)
    assert "NaN" in str(caught.value) and "body mask is empty" in str(caught.value)


def test_split_is_seeded_balanced_and_round_trips(tmp_path: Path) -> None:
    ids = [f"1BA{k:03d}" for k in range(1, 11)]
    split = make_split(ids, val_fraction=0.2, seed=7)
    assert len(split["val"]) == 2 and len(split["train"]) == 8
    assert sorted(split["train"] + split["val"]) == ids
    assert make_split(list(reversed(ids)), 0.2, 7) == split
    assert any(make_split(ids, 0.2, seed)["val"] != split["val"] for seed in range(8, 14))
    assert make_split(["a", "b"], 0.2, 0)["val"] in (["a"], ["b"])
    with pytest.raises(ValueError, match="at least 2"):
        make_split(["a"], 0.2, 0)
    with pytest.raises(ValueError, match="duplicate"):
        make_split(["a", "a", "b"])
    path = write_split(tmp_path / "split.json", split)
    assert read_split(path) == split
    path.write_text('{"train": ["a"], "val": ["a"]}', encoding="utf-8")
    with pytest.raises(DatasetError, match="both train and val"):
        read_split(path)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"split\.json"):
        read_split(path)


def test_region_from_case_id() -> None:
    assert region_from_case_id("1BA001") == "brain"
    assert region_from_case_id("1PC042") == "pelvis"
    assert region_from_case_id("1HNA001") == "hn"
    assert region_from_case_id("case7") is None


def test_data_cli(phantom_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["data", "check", str(phantom_root)]) == 0
    assert "1PA001" in capsys.readouterr().out
    out = tmp_path / "split.json"
    assert cli_main(["data", "split", str(phantom_root), "--region", "brain", "--out", str(out), "--seed", "1"]) == 0
    split = read_split(out)
    assert sorted(split["train"] + split["val"]) == ["1BA001", "1BA002"] and len(split["val"]) == 1
    broken = tmp_path / "broken" / "Task1" / "brain"
    _tiny_case(broken / "1BA001")
    (broken / "1BA001" / "mr.mha").unlink()
    assert cli_main(["data", "check", str(tmp_path / "broken")]) == 1
    assert "1BA001: mr file missing" in capsys.readouterr().out
