"""Paired MR/CT/mask dataset reader (SynthRAD layouts), case validation, and the seeded train/validation split.

Layouts accepted (``root`` may be the folder holding ``Task1``, ``Task1`` itself, or one region folder):

- SynthRAD 2023: ``Task1/{brain,pelvis}/<ID>/{mr,ct,mask}.nii.gz``
- SynthRAD 2025: ``Task1/{HN,TH,AB}/<ID>/{mr,ct,mask}.mha``
- flat, one folder per case: ``DIR/<ID>/{mr,ct,mask}.<ext>``
- flat, one folder per modality: ``DIR/{mr,ct,mask}/<ID>.<ext>``

Any suffix in :data:`synthct.io.IMAGE_SUFFIXES` is accepted for every file. A folder named ``overview`` (SynthRAD's
release ships one per region) or starting with ``.``/``_`` is not a case; every other case folder must hold all its
files. In a flat layout the region comes from ``region=`` or, failing that, from the SynthRAD ID prefix
(``1B``/``2B``/``1P``/``1HN``/``1TH``/``1AB``…: :func:`synthct.regions.region_from_case_id`).

Geometry checks read only image headers (``ImageFileReader.ReadImageInformation``) plus what a ``stat`` and the gzip
length trailer tell about completeness (:func:`synthct.io.read_header_geometry`), so finding the cases of a large
dataset is fast; ``scan_dataset(full_read=True)`` (``synthct data check``) reads every volume completely, which also
finds damage inside a compressed stream, and :func:`load_case` always does. Every problem is reported, by case id
and file, in one :class:`DatasetError`; no case is dropped silently.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from synthct.atomic import write_json_atomic
from synthct.io import (
    IMAGE_SUFFIXES,
    Geometry,
    ImageError,
    geometry_differences,
    read_header_geometry,
    read_image,
    strip_image_suffix,
)
from synthct.regions import (
    REGION_FOLDERS,
    Region,
    canonical_region,
    region_from_case_id,
    region_of_folder,
    region_or_none,
)

MODALITIES = ("mr", "ct", "mask")
_NOT_CASE_FOLDERS = {"overview"}


class DatasetError(ValueError):
    """A dataset folder has problems; ``problems`` lists every one, each naming the case and file."""

    def __init__(self, problems: Sequence[str], root: str | os.PathLike[str] | None = None) -> None:
        self.problems = list(problems)
        where = f"{root}: " if root is not None else ""
        head = f"{where}{len(self.problems)} problem(s) in the dataset"
        super().__init__(head + ":\n  " + "\n  ".join(self.problems))


@dataclass(frozen=True)
class Case:
    """One case's files. ``ct`` is None for an MR-only case (only with ``require_ct=False``)."""

    case_id: str
    region: str
    mr: Path
    ct: Path | None
    mask: Path


@dataclass
class CaseVolumes:
    """One case's voxels: arrays (z, y, x); MR float32, CT float32 HU (or None), mask uint8 in {0, 1}."""

    case_id: str
    mr: np.ndarray
    ct: np.ndarray | None
    mask: np.ndarray
    image: sitk.Image
    """Reference geometry (the MR image)."""
    spacing_mm: tuple[float, float, float]
    """Voxel spacing in mm, (z, y, x)."""


@dataclass
class CaseReport:
    """What checking one case found: its files, header geometry (of the MR) and problems."""

    case_id: str
    region: str
    folder: Path
    files: dict[str, Path | None]
    geometry: Geometry | None = None
    problems: list[str] = field(default_factory=list)


def find_cases(
    root: str | os.PathLike[str], region: str | None = None, require_ct: bool = True
) -> list[Case]:
    """All cases under ``root`` (see the module docstring for layouts), sorted by region then id.

    Raises :class:`DatasetError` listing every broken case (missing/ambiguous/unreadable file, geometry mismatch,
    unknown region), or if no case is found.
    """
    reports = scan_dataset(root, region=region, require_ct=require_ct)
    problems = [problem for report in reports for problem in report.problems]
    if problems:
        raise DatasetError(problems, root)
    return [_case_of(r, root) for r in reports]


def _case_of(report: CaseReport, root: str | os.PathLike[str]) -> Case:
    """The :class:`Case` of a problem-free report (whose MR and mask paths are therefore present)."""
    mr, mask = report.files["mr"], report.files["mask"]
    if mr is None or mask is None:
        raise DatasetError([f"{report.case_id}: MR or mask file missing"], root)
    return Case(report.case_id, report.region, mr, report.files["ct"], mask)


def scan_dataset(
    root: str | os.PathLike[str], region: str | None = None, require_ct: bool = True, full_read: bool = False
) -> list[CaseReport]:
    """Check every case under ``root`` and return one report per case, problems included.

    Headers only by default (:func:`synthct.io.read_header_geometry`); ``full_read`` reads every volume completely
    (:func:`synthct.io.read_image`: truncated or corrupt compressed data are found), one at a time.

    Raises :class:`DatasetError` only for problems with the folder itself (missing, no cases, unknown region).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError([f"{root}: not a folder"])
    wanted = canonical_region(region) if region is not None else None
    groups = _case_groups(root, wanted)
    if not groups:
        where = f" for region {wanted!r}" if wanted else ""
        raise DatasetError([f"no cases found{where} (expected Task1/<region>/<ID>/{{mr,ct,mask}}.* or a flat layout)"],
                           root)
    reports = [_check_case(case_id, group_region, folder, files, require_ct, full_read)
               for case_id, group_region, folder, files in groups]
    seen: dict[tuple[str, str], Path] = {}
    for report in reports:
        key = (report.region, report.case_id)
        if key in seen:
            report.problems.append(f"{report.case_id}: duplicate case id (also in {seen[key]})")
        seen[key] = report.folder
    return sorted(reports, key=lambda r: (r.region, r.case_id))


def _case_groups(root: Path, wanted: Region | None) -> list[tuple[str, str, Path, dict[str, list[Path]]]]:
    """(case id, region, folder, modality → candidate files) for every case under ``root``."""
    if (root / "Task1").is_dir():
        root = root / "Task1"
    region_dirs = _region_dirs(root)
    if region_dirs:
        if wanted is not None:
            region_dirs = {r: d for r, d in region_dirs.items() if r == wanted}
            if not region_dirs:
                raise DatasetError([f"no folder for region {wanted!r} (expected one of {REGION_FOLDERS[wanted]})"],
                                   root)
        groups = []
        for region_name, folder in sorted(region_dirs.items()):
            groups.extend(_per_case_groups(folder, region_name))
        return groups
    folder_region = region_or_none(root.name)
    if folder_region is not None:
        if wanted is not None and wanted != folder_region:
            raise DatasetError([f"folder is region {folder_region!r}, not {wanted!r}"], root)
        return _per_case_groups(root, folder_region)
    if (root / "mr").is_dir() and (root / "mask").is_dir():
        return _per_modality_groups(root, wanted)
    return _per_case_groups(root, wanted)


def _region_dirs(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for child in _subfolders(folder):
        region = region_of_folder(child.name)
        if region is not None:
            found[region] = child
    return found


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _per_case_groups(folder: Path, region: str | None) -> list[tuple[str, str, Path, dict[str, list[Path]]]]:
    groups = []
    for case_dir in _subfolders(folder):
        if case_dir.name.lower() in _NOT_CASE_FOLDERS:
            continue
        files: dict[str, list[Path]] = {m: [] for m in MODALITIES}
        for path in sorted(case_dir.iterdir()):
            stem = strip_image_suffix(path.name).lower()
            if stem in files and path.name.lower().endswith(IMAGE_SUFFIXES):
                files[stem].append(path)
        groups.append((case_dir.name, region or "", case_dir, files))
    return groups


def _per_modality_groups(folder: Path, region: str | None) -> list[tuple[str, str, Path, dict[str, list[Path]]]]:
    by_case: dict[str, dict[str, list[Path]]] = {}
    for modality in MODALITIES:
        modality_dir = folder / modality
        if not modality_dir.is_dir():
            continue
        for path in sorted(modality_dir.iterdir()):
            if path.name.lower().endswith(IMAGE_SUFFIXES) and not path.name.startswith("."):
                case_id = strip_image_suffix(path.name)
                by_case.setdefault(case_id, {m: [] for m in MODALITIES})[modality].append(path)
    return [(case_id, region or "", folder, files) for case_id, files in sorted(by_case.items())]


def _check_case(
    case_id: str, region: str, folder: Path, candidates: dict[str, list[Path]], require_ct: bool,
    full_read: bool = False,
) -> CaseReport:
    problems: list[str] = []
    if not region:
        inferred = region_from_case_id(case_id)
        if inferred is None:
            problems.append(f"{case_id}: region unknown (not in a region folder, id has no SynthRAD prefix; "
                            "pass region=/--region)")
        region = inferred or "unknown"
    files: dict[str, Path | None] = {}
    for modality in MODALITIES:
        paths = candidates.get(modality, [])
        if len(paths) > 1:
            problems.append(f"{case_id}: ambiguous {modality} files: {', '.join(p.name for p in paths)}")
        files[modality] = paths[0] if paths else None
        if not paths and (modality != "ct" or require_ct):
            problems.append(f"{case_id}: {modality} file missing in {folder}")
    report = CaseReport(case_id, region, folder, files, problems=problems)
    geometries: dict[str, Geometry] = {}
    present = {modality: path for modality, path in files.items() if path is not None}
    for modality, path in present.items():
        try:
            geometries[modality] = Geometry.of(read_image(path)) if full_read else read_header_geometry(path)
        except ImageError as exc:
            problems.append(f"{case_id}: {exc}")
    reference = geometries.get("mr")
    report.geometry = reference
    if reference is not None:
        for modality in ("ct", "mask"):
            if modality in geometries:
                differences = geometry_differences(reference, geometries[modality])
                if differences:
                    problems.append(f"{case_id}: {present[modality]}: geometry differs from {present['mr'].name}: "
                                    + "; ".join(differences))
    return report


def load_case(case: Case) -> CaseVolumes:
    """Read a case's voxels. Raises :class:`DatasetError` naming the case and file for an unreadable image, a
    geometry mismatch, non-finite MR/CT values, or an empty mask."""
    problems: list[str] = []
    try:
        mr_image = read_image(case.mr)
    except ImageError as exc:
        raise DatasetError([f"{case.case_id}: {exc}"]) from exc
    mr = sitk.GetArrayFromImage(mr_image).astype(np.float32, copy=False)
    if not np.all(np.isfinite(mr)):
        problems.append(f"{case.case_id}: {case.mr}: MR holds NaN or infinite values")
    ct = None
    mask = None
    for modality, path in (("ct", case.ct), ("mask", case.mask)):
        if path is None:
            continue
        try:
            image = read_image(path)
        except ImageError as exc:
            problems.append(f"{case.case_id}: {exc}")
            continue
        differences = geometry_differences(mr_image, image)
        if differences:
            problems.append(f"{case.case_id}: {path}: geometry differs from {case.mr.name}: " + "; ".join(differences))
            continue
        array = sitk.GetArrayFromImage(image)
        if modality == "ct":
            ct = array.astype(np.float32, copy=False)
            if not np.all(np.isfinite(ct)):
                problems.append(f"{case.case_id}: {path}: CT holds NaN or infinite values")
        else:
            mask = (array > 0).astype(np.uint8)
            if not mask.any():
                problems.append(f"{case.case_id}: {path}: body mask is empty")
    if problems:
        raise DatasetError(problems)
    assert mask is not None
    spacing = mr_image.GetSpacing()
    return CaseVolumes(case.case_id, mr, ct, mask, mr_image, (float(spacing[2]), float(spacing[1]), float(spacing[0])))


def make_split(case_ids: Iterable[str], val_fraction: float = 0.2, seed: int = 0) -> dict[str, Any]:
    """Seeded random train/validation split: ``round(n * val_fraction)`` validation cases, at least 1 and at most
    n - 1. The result depends only on the set of ids, the fraction and the seed (not on the ids' order).

    Raises ``ValueError`` for fewer than 2 distinct cases, duplicate ids or a fraction outside (0, 1).
    """
    ids = list(case_ids)
    unique = sorted(set(ids))
    if len(unique) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"duplicate case ids: {duplicates}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if len(unique) < 2:
        raise ValueError(f"need at least 2 cases to split into train and validation, got {len(unique)}")
    n_val = min(max(1, round(len(unique) * val_fraction)), len(unique) - 1)
    order = np.random.default_rng(seed).permutation(len(unique))
    val = sorted(unique[i] for i in order[:n_val])
    train = sorted(unique[i] for i in order[n_val:])
    return {"seed": int(seed), "val_fraction": float(val_fraction), "train": train, "val": val}


def write_split(path: str | os.PathLike[str], split: dict[str, Any]) -> Path:
    """Write a split as JSON atomically (validated first). Returns the path."""
    _validate_split(split, str(path))
    write_json_atomic(path, split)
    return Path(path)


def read_split(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a split JSON written by :func:`write_split`. Raises :class:`DatasetError` naming the file."""
    path = Path(path)
    try:
        split = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DatasetError([f"{path}: split file not found"]) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError([f"{path}: not a readable JSON split ({exc})"]) from exc
    _validate_split(split, str(path))
    return split


def _validate_split(split: Any, where: str) -> None:
    problems = []
    if not isinstance(split, dict):
        raise DatasetError([f"{where}: split must be a JSON object"])
    for key in ("train", "val"):
        value = split.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append(f"{where}: {key!r} must be a list of case ids")
    if not problems:
        overlap = sorted(set(split["train"]) & set(split["val"]))
        if overlap:
            problems.append(f"{where}: cases in both train and val: {overlap}")
        if not split["val"]:
            problems.append(f"{where}: validation split is empty")
        if not split["train"]:
            problems.append(f"{where}: training split is empty")
    if problems:
        raise DatasetError(problems)


def select_cases(cases: Sequence[Case], case_ids: Iterable[str], what: str = "split") -> list[Case]:
    """The cases with the given ids, in the ids' order. Raises :class:`DatasetError` for ids not in ``cases``."""
    by_id = {case.case_id: case for case in cases}
    ids = list(case_ids)
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DatasetError([f"{what}: case {i} not found in the dataset" for i in missing])
    return [by_id[i] for i in ids]
