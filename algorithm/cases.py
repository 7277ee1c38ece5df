"""Input discovery for the algorithm: MR/mask pairing by case id, anatomical region, installed model packages.

Pairing is by case id (file name without its image suffix), never by sort order. One exception: a folder pair
holding exactly one MR and one mask is paired whatever the names (grand-challenge may name inputs by UUID).

``synthct predict`` also takes DICOM (SPEC §9, §12): ``--mr`` may be a series folder, a study folder (all series in
one folder), a tree of series folders (``PATIENT/STUDY/SERIES``), a DICOMDIR file or the folder holding one (CD/USB
export), the ``PT*/ST*/SE*`` tree without its DICOMDIR, or a folder whose sub-folders are separate cases, beside image
files directly in it (one case each). DICOM files are grouped into cases by StudyInstanceUID, the planning MR of a
case is chosen by a documented rule (``--series``: UID, SeriesNumber or description text) and the case id is the
case folder's name or ``<PatientID>_<SeriesNumber>``: see :mod:`synthct.dicom.study`. Without ``--mask`` every case
gets the automatic body mask (:mod:`synthct.body_mask`).

Region (which model): ``/input/region.json`` (a bare JSON string, e.g. ``"Head and Neck"``) when present; else the
only installed model; else the SynthRAD case-id prefix (``1B…``/``2B…`` brain, ``1P…``/``2P…`` pelvis,
``1HN…``/``1TH…``/``1AB…`` for SynthRAD 2025). Without region.json a case whose id names another region than the
single installed model is refused rather than processed with the wrong model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from synthct.io import IMAGE_SUFFIXES, is_image_path, strip_image_suffix
from synthct.model_package import MANIFEST_NAME, ModelPackageError
from synthct.regions import (
    RegionError,
    canonical_region,
    region_from_case_id,
    region_or_none,
)

if TYPE_CHECKING:
    from synthct.dicom.study import DicomStudy

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class CaseFiles:
    """One case's inputs; ``problem`` is set when the case cannot run (e.g. no mask).

    ``mask`` None with ``auto_mask`` True: the body mask is computed from the MR. ``dicom``: ``mr`` is the case's DICOM
    folder or DICOMDIR; ``study`` its scanned content (None: scan ``mr`` when read); ``series_uid`` the ``--series``
    selector (a SeriesInstanceUID, SeriesNumber or SeriesDescription text; None: the documented automatic choice).
    """

    case_id: str
    mr: Path
    mask: Path | None
    problem: str | None = None
    auto_mask: bool = False
    dicom: bool = False
    series_uid: str | None = None
    warning: str | None = None
    study: DicomStudy | None = None


def read_region_file(path: Path) -> str | None:
    """Canonical region named by ``path`` (a bare JSON string), or ``None`` if the file does not exist."""
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegionError(f"{path}: not readable as JSON ({exc})") from exc
    if not isinstance(value, str):
        raise RegionError(f"{path}: expected a JSON string such as \"Brain\", got {value!r}")
    try:
        return canonical_region(value)
    except RegionError as exc:
        raise RegionError(f"{path}: {exc}") from exc


_REGION_HINT = {"region.json": '/input/region.json (e.g. "Brain")', "--region": "--region (e.g. --region brain)"}


def resolve_region(case_id: str, declared: str | None, installed: list[str], source: str = "region.json") -> str:
    """The model region for a case: ``declared`` wins; see the module docstring for the fallbacks.

    ``source`` names where a declared region comes from in the messages: ``"region.json"`` (the container) or
    ``"--region"`` (``synthct predict``).
    """
    hint = _REGION_HINT.get(source, source)
    if declared is not None:
        implied = region_from_case_id(case_id)
        if implied is not None and implied != declared:
            log.warning("case %s: id suggests %s but %s says %s; using %s", case_id, implied, source, declared,
                        declared)
        return declared
    implied = region_from_case_id(case_id)
    if len(installed) == 1:
        if implied is not None and implied != installed[0]:
            raise RegionError(
                f"case {case_id}: no {source}; the case id suggests region {implied!r} but the only installed "
                f"model is for {installed[0]!r}; add {hint} to choose the model explicitly"
            )
        return installed[0]
    if implied is None:
        raise RegionError(
            f"case {case_id}: no {source} and the region cannot be derived from the case id; installed models: "
            f"{installed}; provide {hint}"
        )
    return implied


def find_model_packages(models_dir: Path, problems: list[str] | None = None) -> dict[str, Path]:
    """Installed model packages by region: ``models_dir/model.json`` (one package) or ``models_dir/<region>/``.

    Only the manifest's ``region`` field is read here; files are verified when a package is loaded. A single
    package whose ``model.json`` is not valid JSON (or names no region) raises :class:`ModelPackageError` naming
    the file and the parse error; in a folder of packages such a package is skipped, its message logged and
    appended to ``problems`` (for the "no model installed" message of the cases that needed it).
    """
    if (models_dir / MANIFEST_NAME).is_file():
        return {_peek_region(models_dir / MANIFEST_NAME): models_dir}
    found: dict[str, Path] = {}
    if not models_dir.is_dir():
        return found
    for folder in sorted(p for p in models_dir.iterdir() if p.is_dir() and (p / MANIFEST_NAME).is_file()):
        name = folder.name.lower()
        try:
            region = region_or_none(name) or _peek_region(folder / MANIFEST_NAME)
        except ModelPackageError as exc:
            log.error("%s; package ignored", exc)
            if problems is not None:
                problems.append(str(exc))
            continue
        if region in found:
            log.warning("%s: a second package for region %s (keeping %s)", folder, region, found[region])
            continue
        found[region] = folder
    return found


def _peek_region(manifest_path: Path) -> str:
    """The canonical ``region`` of a manifest; :class:`ModelPackageError` naming the file if it is not JSON or names
    no known region."""
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelPackageError(f"{manifest_path}: model manifest not readable ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise ModelPackageError(f"{manifest_path}: model manifest is not valid JSON ({exc})") from exc
    region = manifest.get("region") if isinstance(manifest, dict) else None
    if not isinstance(region, str) or not region:
        found = "not a JSON object" if not isinstance(manifest, dict) else f"region = {region!r}"
        raise ModelPackageError(f"{manifest_path}: model manifest names no region ({found}; expected e.g. "
                                f"\"region\": \"brain\")")
    try:
        return canonical_region(region)
    except RegionError as exc:
        raise ModelPackageError(f"{manifest_path}: {exc}") from exc


def list_images(folder: Path) -> list[Path]:
    """Image files (known suffixes) directly in ``folder``, sorted; hidden files skipped."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and is_image_path(p))


def pair_cases(mr_paths: list[Path], mask_paths: list[Path], missing_mask: str = "error") -> list[CaseFiles]:
    """Pair MR and mask files by case id (sorted by id); duplicated MRs or masks carry a ``problem``.

    An MR without a mask carries a ``problem`` (``missing_mask="error"``), or is marked for the automatic body mask
    with a ``warning`` saying so (``missing_mask="auto"``: the container's fallback). The fallback is for masks that
    are missing, not misnamed: when a given mask pairs with no MR, the MRs without a mask carry a ``problem``.
    """
    mrs: dict[str, list[Path]] = {}
    masks: dict[str, list[Path]] = {}
    for path in mr_paths:
        mrs.setdefault(strip_image_suffix(path.name), []).append(path)
    for path in mask_paths:
        masks.setdefault(strip_image_suffix(path.name), []).append(path)
    if len(mr_paths) == 1 and len(mask_paths) == 1 and not set(mrs) & set(masks):
        log.info("one MR (%s) and one mask (%s): paired although their names differ", mr_paths[0].name,
                 mask_paths[0].name)
        return [CaseFiles(strip_image_suffix(mr_paths[0].name), mr_paths[0], mask_paths[0])]
    cases = []
    stray = sorted(p.name for case_id in set(masks) - set(mrs) for p in masks[case_id])
    for case_id in sorted(mrs):
        mr_files, mask_files = mrs[case_id], masks.get(case_id, [])
        problem = None
        if len(mr_files) > 1:
            problem = f"several MR files for case {case_id}: {[p.name for p in mr_files]}"
        elif not mask_files and missing_mask == "auto" and stray:  # masks were given, just not named to pair
            problem = (f"{mr_files[0]}: no body mask with case id {case_id!r}, and the given masks {stray} pair with "
                       "no MR by case id; not falling back to an automatic mask (name each mask like its MR, e.g. "
                       f"{case_id}{mr_files[0].name[len(case_id):]}; only one MR with one mask pairs whatever the "
                       "names)")
        elif not mask_files and missing_mask == "auto":
            warning = (f"{mr_files[0]}: no body mask with case id {case_id!r}; the body mask was computed from the MR "
                       "(automatic body mask, synthct.body_mask)")
            cases.append(CaseFiles(case_id, mr_files[0], None, auto_mask=True, warning=warning))
            continue
        elif not mask_files:
            problem = f"{mr_files[0]}: no body mask with case id {case_id!r} (expected e.g. {case_id}.mha)"
        elif len(mask_files) > 1:
            problem = f"several body masks for case {case_id}: {[p.name for p in mask_files]}"
        cases.append(CaseFiles(case_id, mr_files[0], mask_files[0] if mask_files else None, problem))
    for case_id in sorted(set(masks) - set(mrs)):
        log.warning("body mask %s has no MR with case id %r: ignored", masks[case_id][0], case_id)
    return cases


def collect_cases(mr: Path, mask: Path | None, series_uid: str | None = None) -> list[CaseFiles]:
    """Cases for ``synthct predict``: ``mr`` an image file, a DICOMDIR file, or a folder (image files directly in it,
    DICOM anywhere below it: see the module docstring); ``mask`` a file (one case), a folder (paired by case id) or
    None (automatic masks).

    ``series_uid`` (``--series``) is passed to every DICOM case. The DICOM headers are read here, once; the chosen
    series' pixels when the case runs.
    """
    from synthct.dicom import discover_cases, is_dicom_file
    from synthct.dicom.scan import is_dicomdir

    if not mr.exists():
        raise FileNotFoundError(f"--mr {mr}: not found")
    if mask is not None and not mask.exists():
        raise FileNotFoundError(f"--mask {mask}: not found")
    dicom_cases = []
    if mr.is_file() and not mr.name.lower().endswith(IMAGE_SUFFIXES) and is_dicomdir(mr):
        dicom_cases = discover_cases(mr, series_uid)
        mr_cases = []
    elif mr.is_file():
        if mask is not None and not mask.is_file():
            raise FileNotFoundError(f"--mr {mr} is a file, so --mask {mask} must be a file too")
        if not mr.name.lower().endswith(IMAGE_SUFFIXES) and is_dicom_file(mr):
            raise FileNotFoundError(f"--mr {mr} is one DICOM file: give the folder holding its series ({mr.parent})")
        return [CaseFiles(strip_image_suffix(mr.name), mr, mask, auto_mask=mask is None)]
    else:
        mr_cases = [CaseFiles(strip_image_suffix(p.name), p, None) for p in list_images(mr)]
        dicom_cases = discover_cases(mr, series_uid)
        used = [folder for case in dicom_cases for folder in case.study.folders]
        for folder in sorted(p for p in mr.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not any(f == folder or folder in f.parents for f in used):
                log.warning("%s: no DICOM file inside; ignored", folder)
    mr_cases += [CaseFiles(case.case_id, case.study.root, None, dicom=True, series_uid=series_uid, study=case.study)
                 for case in dicom_cases]
    if mask is None:
        return [replace(case, auto_mask=True) for case in _unique_ids(mr_cases)]
    if mask.is_file():
        if len(mr_cases) != 1:
            raise FileNotFoundError(f"--mask {mask} is one file but --mr {mr} holds {len(mr_cases)} cases; "
                                    "give a folder of masks named by case id, or no --mask (automatic masks)")
        return [replace(mr_cases[0], mask=mask)]
    masks = {strip_image_suffix(p.name): p for p in list_images(mask)}
    dicom_ids = {c.case_id for c in mr_cases if c.dicom}
    image_masks = [p for p in list_images(mask) if strip_image_suffix(p.name) not in dicom_ids]
    paired = {case.case_id: case for case in pair_cases([c.mr for c in mr_cases if not c.dicom], image_masks)}
    cases = []
    for case in _unique_ids(mr_cases):
        if case.problem is not None:
            cases.append(case)
        elif not case.dicom:
            cases.append(paired.get(case.case_id, case))
        elif case.case_id in masks:
            cases.append(replace(case, mask=masks[case.case_id]))
        else:
            cases.append(replace(case, problem=f"{case.mr}: no body mask with case id {case.case_id!r} in {mask} "
                                               f"(expected e.g. {case.case_id}.mha; or leave out --mask)"))
    return cases


def _unique_ids(cases: list[CaseFiles]) -> list[CaseFiles]:
    """Cases sorted by id; two inputs with the same id (e.g. ``A.mha`` and a DICOM folder ``A/``) both get a problem."""
    counts: dict[str, int] = {}
    for case in cases:
        counts[case.case_id] = counts.get(case.case_id, 0) + 1
    return [case if counts[case.case_id] == 1 else
            replace(case, problem=f"case id {case.case_id!r} is used by several inputs (an image file and a DICOM "
                                  f"folder?): {case.mr}")
            for case in sorted(cases, key=lambda c: (c.case_id, str(c.mr)))]
