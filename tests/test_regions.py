"""One region vocabulary (synthct.regions): every spelling SynthRAD 2023 and 2025 use, through every stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from synthct.algorithm.cases import find_model_packages, pair_cases, read_region_file, resolve_region
from synthct.evaluation.dose.config import DoseConfigError, dose_config_from_dict
from synthct.evaluation.dose.structures import region_of_case
from synthct.train.config import ConfigError, config_from_dict

from synthct.dataset import find_cases
from synthct.intensity import BACKGROUND_HU, HU_MAX, HU_MIN
from synthct.model_package import FORMAT, FORMAT_VERSION, ModelPackageError, load_model_package, sha256_of
from synthct.regions import REGIONS, RegionError, canonical_region, region_from_case_id

SPELLINGS: dict[str, tuple[str, ...]] = {
    "brain": ("brain", "Brain", "BRAIN", " brain ", "Task1/brain"),
    "pelvis": ("pelvis", "Pelvis", "Task1/pelvis"),
    "hn": ("hn", "HN", "Head and Neck", "Head-and-Neck", "head_and_neck", "head & neck", "HeadAndNeck", "Task1/HN"),
    "th": ("th", "TH", "Thorax", "thorax", "Task1/TH"),
    "ab": ("ab", "AB", "Abdomen", "abdomen", "Task1/AB"),
}
ALL = [(spelling, region) for region, spellings in SPELLINGS.items() for spelling in spellings]
CASE_IDS = {"1BA001": "brain", "2BA001": "brain", "1BC042": "brain", "1PA001": "pelvis", "2PC012": "pelvis",
            "1HNA001": "hn", "2HNA001": "hn", "1THA001": "th", "2THB003": "th", "1ABA001": "ab", "1ABC042": "ab"}
FOLDERS = {"brain": "brain", "pelvis": "pelvis", "hn": "HN", "th": "TH", "ab": "AB"}


@pytest.mark.parametrize(("spelling", "region"), ALL)
def test_every_spelling_is_canonical(spelling: str, region: str) -> None:
    assert canonical_region(spelling) == region


@pytest.mark.parametrize("name", ["knee", "", "Task1", "head", "brain stem"])
def test_unknown_region_lists_the_known_spellings(name: str) -> None:
    with pytest.raises(RegionError, match=r"unknown region .*known: brain, pelvis, hn, th, ab, .*Head and Neck"):
        canonical_region(name)
    assert issubclass(RegionError, ValueError)


def test_case_ids() -> None:
    for case_id, region in CASE_IDS.items():
        assert region_from_case_id(case_id) == region, case_id
        assert region_from_case_id(case_id.lower()) == region
    for case_id in ("patient7", "case1", "3BA001", "1XA001", "BA001", "1B"):
        assert region_from_case_id(case_id) is None, case_id


def _write_case(folder: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((4, 5, 6), dtype=np.uint8)
    mask[1:3, 1:4, 1:5] = 1
    arrays = {"mr": rng.uniform(1, 100, mask.shape).astype(np.float32),
              "ct": rng.integers(-1000, 1000, mask.shape).astype(np.int16), "mask": mask}
    for name, array in arrays.items():
        sitk.WriteImage(sitk.GetImageFromArray(array), str(folder / f"{name}.mha"))


@pytest.fixture(scope="module")
def synthrad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``Task1/{brain,pelvis,HN,TH,AB}/<ID>/`` with one tiny case each, task-1 and task-2 ids mixed."""
    root = tmp_path_factory.mktemp("synthrad")
    ids = {"brain": "2BA001", "pelvis": "1PA001", "hn": "1HNA001", "th": "1THA001", "ab": "1ABA001"}
    for index, (region, case_id) in enumerate(ids.items()):
        _write_case(root / "Task1" / FOLDERS[region] / case_id, index)
    return root


@pytest.mark.parametrize(("spelling", "region"), ALL)
def test_dataset_reader_takes_every_spelling(synthrad: Path, spelling: str, region: str) -> None:
    cases = find_cases(synthrad, region=spelling)
    assert [case.region for case in cases] == [region]


def test_dataset_reader_reads_regions_from_folders_and_ids(synthrad: Path, tmp_path: Path) -> None:
    assert sorted({case.region for case in find_cases(synthrad)}) == sorted(REGIONS)
    assert [case.region for case in find_cases(synthrad / "Task1" / "HN")] == ["hn"]  # a region folder as root
    for case_id in ("2BA002", "2PA001", "2HNA001"):  # flat layout: the region from the id (task 2 too)
        _write_case(tmp_path / "flat" / case_id)
    assert {case.case_id: case.region for case in find_cases(tmp_path / "flat")} == {
        "2BA002": "brain", "2HNA001": "hn", "2PA001": "pelvis"}


@pytest.mark.parametrize(("spelling", "region"), ALL)
def test_region_json_takes_every_spelling(tmp_path: Path, spelling: str, region: str) -> None:
    path = tmp_path / "region.json"
    path.write_text(json.dumps(spelling), encoding="utf-8")
    assert read_region_file(path) == region


def test_region_json_unknown_names_the_file_and_the_known_spellings(tmp_path: Path) -> None:
    path = tmp_path / "region.json"
    path.write_text('"Knee"', encoding="utf-8")
    with pytest.raises(RegionError, match=r"region\.json: unknown region 'Knee' \(known: brain"):
        read_region_file(path)


def test_case_pairing_takes_the_region_from_task_2_ids(tmp_path: Path) -> None:
    mrs = [tmp_path / "mri" / f"{case_id}.mha" for case_id in CASE_IDS]
    masks = [tmp_path / "body" / f"{case_id}.mha" for case_id in CASE_IDS]
    cases = pair_cases(mrs, masks)
    assert [case.problem for case in cases] == [None] * len(CASE_IDS)
    for case in cases:
        assert resolve_region(case.case_id, None, list(REGIONS)) == CASE_IDS[case.case_id]
    with pytest.raises(RegionError, match="suggests region 'brain'"):
        resolve_region("2BA001", None, ["pelvis"])


@pytest.mark.parametrize(("spelling", "region"), ALL)
def test_dose_evaluation_takes_every_spelling(spelling: str, region: str) -> None:
    assert dose_config_from_dict({"region": spelling}).region == region
    assert dose_config_from_dict({"region": "Auto"}).region == "auto"


def test_dose_region_lookup(tmp_path: Path) -> None:
    for case_id, region in CASE_IDS.items():
        assert region_of_case(case_id) == region
    for region, folder in FOLDERS.items():
        assert region_of_case("patient7", [tmp_path / "Task1" / folder / "patient7" / "ct.mha"]) == region
    assert region_of_case("patient7", [tmp_path / "ct.mha"]) is None
    with pytest.raises(DoseConfigError, match=r"region: 'knee' is not one of 'auto', 'brain'"):
        dose_config_from_dict({"region": "knee"})


@pytest.mark.parametrize(("spelling", "region"), ALL)
def test_train_config_takes_every_spelling(spelling: str, region: str) -> None:
    config = config_from_dict({"region": spelling})
    assert config.region == region and config.to_dict()["region"] == region


def test_train_config_rejects_an_unknown_region() -> None:
    with pytest.raises(ConfigError, match=r"region: 'knee' is not one of 'brain', 'pelvis', 'hn', 'th', 'ab'"):
        config_from_dict({"region": "knee"})


def _package(folder: Path, region: str, rule: str = "max") -> Path:
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"not a real graph")
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "region": region, "patch_size": [64, 64, 64],
                "overlap": 0.5, "input_name": "mr", "output_name": "sct",
                "ct_normalisation": {"hu_min": HU_MIN, "hu_max": HU_MAX},
                "mr_normalisation": {"rule": rule, "percentile": 99.5}, "background_hu": BACKGROUND_HU,
                "onnx": {"file": "model.onnx", "sha256": sha256_of(folder / "model.onnx")}}
    (folder / "model.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


@pytest.mark.parametrize(("spelling", "region"), [("Head and Neck", "hn"), ("Thorax", "th"), ("AB", "ab"),
                                                  ("Brain", "brain"), ("pelvis", "pelvis")])
def test_model_package_region_field(tmp_path: Path, spelling: str, region: str) -> None:
    package = load_model_package(_package(tmp_path / "pkg", spelling), expected_region=region)
    assert package.region == region
    assert load_model_package(tmp_path / "pkg", expected_region=spelling).region == region
    assert find_model_packages(tmp_path / "pkg") == {region: (tmp_path / "pkg")}
    other = next(r for r in REGIONS if r != region)
    with pytest.raises(ModelPackageError, match="expected"):
        load_model_package(tmp_path / "pkg", expected_region=other)


def test_model_package_unknown_region_and_rules(tmp_path: Path) -> None:
    with pytest.raises(ModelPackageError, match=r"unknown region 'knee' \(known: brain"):
        load_model_package(_package(tmp_path / "knee", "knee"))
    for rule in ("max", "percentile", "zscore"):
        assert load_model_package(_package(tmp_path / rule, "brain", rule)).mr_rule == rule
    with pytest.raises(ModelPackageError, match=r"mr_normalisation\.rule must be one of 'max', 'percentile', 'zscore'"):
        load_model_package(_package(tmp_path / "mean", "brain", "mean"))
