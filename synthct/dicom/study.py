"""DICOM studies as scanners and PACS export them: discovery, the planning MR's choice, case ids (headers only).

**Accepted input** (``synthct predict --mr``; :func:`discover_cases`): a folder with all files of a study in it
(flat), a tree of series folders at any depth (``PATIENT/STUDY/SERIES``), a DICOMDIR file or the folder holding one
(a CD/USB export: the files it lists, resolved relative to it, upper/lower case as found on the medium), the same
``PT*/ST*/SE*`` tree without its DICOMDIR, and a folder whose sub-folders are separate cases. Every file is read
once, header only (pixel data skipped); any file name, suffix or none.

**Cases** (deterministic):

1. *Units*: the DICOM files directly in one folder form one unit and are never split; a DICOMDIR's files form
   one unit per StudyInstanceUID.
2. Units sharing a StudyInstanceUID (of any object: images, RTSTRUCT, ...) are merged: one study spread over
   series folders is one case.
3. A group with no MR image series other than localizers (a CT study, a folder holding only an RTSTRUCT, ...) is
   attached to the case of the same PatientID when there is exactly one, else to the only MR case when there is
   exactly one; otherwise it stays a case of its own (which then fails: "no 3-D MR series" / "no image series").
4. The *case folder*: when the input holds a single case, the input itself, or its sub-folder when all of the
   case's own files (those attached by rule 3 aside) lie below one sub-folder; else the highest folder below the
   input that holds all of the case's own files and none of another case's (one case per sub-folder: the
   sub-folder).

**Case id**: the case folder's name, except when that name is generic (:data:`GENERIC_FOLDER_NAMES`, or ``PT0``,
``ST000000``, ``SE0000``, ``IM0001``-like or ``S0000001``-like: :data:`GENERIC_FOLDER_PATTERN`), when the case
folder holds a DICOMDIR (or the input is one), or when no folder holds the case alone: then
``<PatientID>_<SeriesNumber>`` of the chosen MR series (``<PatientID>`` when no series could be chosen), reduced
to letters, digits, ``.``, ``_`` and ``-``; repeated ids get ``_2``, ``_3``, ...

**The planning MR** (:func:`choose_series`): *candidates* are image series of modality MR with at least
:data:`MIN_SLICES` slices (frames of a multi-frame object count as slices), one orientation (a 3-plane localizer has
several; a multi-frame series qualifies when one orientation holds :data:`MIN_SLICES` frames, its stacks being
chosen by :mod:`synthct.dicom.enhanced`) and no ``LOCALIZER`` in ImageType. Exactly one candidate is taken, with a
note naming it and what was skipped; several are an error listing each (SeriesNumber, SeriesDescription, slices,
plane, spacing, UID) and how to pick; none is an error "no 3-D MR series" listing what was found. ``--series`` picks
explicitly among all image series of the case: a SeriesInstanceUID (dotted digits), a SeriesNumber (digits), or else
a case-insensitive SeriesDescription substring, optionally followed by ``#STACK`` for a stack of a multi-frame
series (:mod:`synthct.dicom.enhanced`); matching none or several is an error listing the series. Non-image objects
(RTSTRUCT, RTPLAN, PR, SR, KO, SEG, ...), DICOMDIR files and non-DICOM files are skipped with a note; localizers and
other modalities (CT, PT, ...) are named in the choice's note. Notes go to the case's warnings; none of these makes
a failed case.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from synthct.dicom.errors import DicomError
from synthct.dicom.scan import (
    FileRecord,
    SeriesSummary,
    file_record,
    ignored_notes,
    is_dicom_file,
    is_dicomdir,
    scan_files,
    summarize,
)
from synthct.io import IMAGE_SUFFIXES

MIN_SLICES = 10
"""A candidate planning MR has at least this many slices (files, or frames of a multi-frame object)."""

PLANNING_MODALITY = "MR"

GENERIC_FOLDER_NAMES = frozenset({
    "IMAGE", "IMAGES", "IMG", "DICOM", "DCM", "DICOMDIR", "DATA", "EXPORT", "SERIES", "STUDY", "STUDIES", "PATIENT",
    "MR", "MRI", "CD", "DVD", "USB",
})
"""Folder names (any case) that say nothing about the case: the case id is then ``<PatientID>_<SeriesNumber>``."""

GENERIC_FOLDER_PATTERN = re.compile(r"^(?:PT|ST|SE|IM|PAT|STU|SER)_?\d+$|^S\d{4,}$", re.IGNORECASE)
"""Export folder names such as ``PT0``, ``ST000000``, ``SE0000``, ``IM0001``, ``S0000001``: generic too."""

_UID = re.compile(r"^\d+(?:\.\d+)+$")
_SHOWN_MISSING = 3


@dataclass(frozen=True)
class DicomStudy:
    """The DICOM content of one case: its image series, notes on what was skipped, and errors found while scanning.

    ``root``: the case folder or DICOMDIR file (messages, results.json); ``folders``: the folders its files lie in.
    """

    root: Path
    series: tuple[SeriesSummary, ...]
    notes: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    folders: tuple[Path, ...] = ()
    records: tuple[FileRecord, ...] = field(default=(), repr=False)

    def check(self) -> None:
        """Raise the first scanning error (a damaged file, files missing from a DICOMDIR) as :class:`DicomError`."""
        if self.errors:
            more = f" (and {len(self.errors) - 1} more error(s))" if len(self.errors) > 1 else ""
            raise DicomError(self.errors[0] + more)

    @property
    def patient_id(self) -> str:
        """The PatientID of its first image series (else of any object); '' when none has one."""
        for value in [s.patient_id for s in self.series] + [r.patient_id for r in self.records]:
            if value:
                return value
        return ""


@dataclass(frozen=True)
class DicomCase:
    """One case found by :func:`discover_cases`."""

    case_id: str
    study: DicomStudy


@dataclass
class _Unit:
    """Files read together: one folder's DICOM files, or one study's files listed in a DICOMDIR."""

    folder: Path
    records: list[FileRecord]
    notes: list[str]
    errors: list[str]
    dicomdir: Path | None = None


# ---------------------------------------------------------------- scanning


def scan_study(source: Path) -> DicomStudy:
    """Everything under ``source`` (a folder, scanned recursively, or a DICOMDIR file) as one study."""
    source = Path(source)
    if not source.is_dir() and not (source.is_file() and is_dicomdir(source)):
        raise DicomError(f"{source}: not a folder{'' if source.exists() else ' (not found)'} nor a DICOMDIR")
    return _study(source, _scan_units(source))


def discover_cases(source: Path, series: str | None = None, skip_image_files: bool = True) -> list[DicomCase]:
    """The DICOM cases under ``source`` (a folder or a DICOMDIR file), by the rules in the module docstring.

    ``series`` (``--series``) only matters for the case id of a case whose folder name is not used. With
    ``skip_image_files``, image files (.mha, .nii.gz, ...) directly in ``source`` are left to the caller.
    """
    source = Path(source)
    scanned = _scan_units(source, skip_image_files)
    units = [unit for unit in scanned if unit.records or unit.errors]
    holders = [unit for unit in scanned if not (unit.records or unit.errors)]  # notes for the cases below them
    groups = _attach_orphans(_merge_by_study(units))
    primaries = [primary for primary, _ in groups]
    cases: list[DicomCase] = []
    for primary, attached in groups:
        root, own_folder = _case_folder(source, primary, primaries)
        group = [holder for holder in holders
                 if any(holder.folder == unit.folder or holder.folder in unit.folder.parents for unit in primary)]
        group += primary + attached
        study = _study(root, group)
        if own_folder and not _is_generic(root) and not _holds_dicomdir(root, group):
            case_id = root.name
        else:
            case_id = _fallback_id(study, series)
        cases.append(DicomCase(case_id, study))
    return _distinct_ids(cases)


def _scan_units(source: Path, skip_image_files: bool = False) -> list[_Unit]:
    if not source.is_dir():
        try:
            return _dicomdir_units(source)
        except DicomError as exc:
            return [_Unit(source.parent, [], [], [str(exc)], source)]
    units: list[_Unit] = []
    for top, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        folder = Path(top)
        paths = [folder / name for name in sorted(files) if not name.startswith(".")]
        dicomdir = next((p for p in paths if p.name.upper() == "DICOMDIR" and p.is_file()), None)
        unreadable = None
        if dicomdir is not None:
            try:
                units.extend(_dicomdir_units(dicomdir))
                dirs[:] = []
                continue
            except DicomError as exc:
                unreadable = f"{exc}; the folders were read instead"
                paths.remove(dicomdir)
        if skip_image_files and folder == source:
            paths = [p for p in paths if not p.name.lower().endswith(IMAGE_SUFFIXES)]
        paths = [p for p in paths if p.is_file()]
        records, notes, errors = scan_files(folder, paths)
        if unreadable is not None:
            notes.append(unreadable)
        if records or errors or unreadable is not None:  # the last: a holder of the note for the cases below
            units.append(_Unit(folder, records, notes, errors))
    return units


def _dicomdir_units(dicomdir: Path) -> list[_Unit]:
    """The files a DICOMDIR lists, one unit per study; DicomError when it cannot be read as a DICOMDIR."""
    from pydicom.fileset import FileSet

    try:
        with warnings.catch_warnings():  # FileSet warns for each missing file: they are reported below
            warnings.simplefilter("ignore")
            directory = pydicom.dcmread(dicomdir)
            file_set = FileSet()
            file_set.load(directory)  # checks the SOP class (Media Storage Directory) and the records
            root = file_set.root_path
    except Exception as exc:  # not a DICOMDIR, or a damaged one: the caller reads the folders instead
        raise DicomError(f"{dicomdir}: not a readable DICOMDIR ({type(exc).__name__}: {exc})") from exc
    present = {Path(instance.path) for instance in file_set}
    listed: list[Path] = []
    missing: list[Path] = []
    listings: dict[Path, dict[str, str]] = {}
    for record in directory.get("DirectoryRecordSequence", []):
        if "ReferencedFileID" not in record:
            continue
        parts = [str(p) for p in ([record.ReferencedFileID] if isinstance(record.ReferencedFileID, str)
                                  else record.ReferencedFileID)]
        path = root.joinpath(*parts)
        if path not in present:
            path = _resolve_any_case(root, parts, listings) or path
        (listed if path.is_file() else missing).append(path)
    listed = sorted(set(listed))
    errors = []
    if missing:
        shown = ", ".join(str(p.relative_to(root)) for p in missing[:_SHOWN_MISSING])
        errors.append(f"{dicomdir}: {len(missing)} of {len(missing) + len(listed)} files listed in the DICOMDIR are "
                      f"missing (first: {shown}); copy the whole export (every folder beside the DICOMDIR)")
    by_study: dict[str, list[FileRecord]] = {}
    read_errors: list[str] = []
    not_dicom: list[str] = []
    for path in listed:
        if not is_dicom_file(path):
            not_dicom.append(str(path.relative_to(root)))
            continue
        try:
            record = file_record(path)
        except DicomError as exc:
            read_errors.append(str(exc))
            continue
        by_study.setdefault(record.study_uid, []).append(record)
    note = f"read the {len(listed)} file(s) listed in {dicomdir}"
    units = [_Unit(root, records, [note, *ignored_notes(root, records)], [*errors, *read_errors], dicomdir)
             for _, records in sorted(by_study.items())]
    if not units:
        units = [_Unit(root, [], [note], [*errors, *read_errors] or [f"{dicomdir}: lists no DICOM file"], dicomdir)]
    if not_dicom:
        units[0].notes.extend(ignored_notes(root, [], not_dicom))
    return units


def _resolve_any_case(root: Path, parts: Sequence[str], listings: dict[Path, dict[str, str]]) -> Path | None:
    """``root/parts`` matching names case-insensitively (a CD mounted with lower-case names); None if absent."""
    current = root
    for part in parts:
        if (current / part).exists():
            current = current / part
            continue
        if current not in listings:
            try:
                listings[current] = {name.upper(): name for name in os.listdir(current)}
            except OSError:
                return None
        name = listings[current].get(part.upper())
        if name is None:
            return None
        current = current / name
    return current


# ---------------------------------------------------------------- grouping into cases


def _merge_by_study(units: list[_Unit]) -> list[list[_Unit]]:
    """Units sharing a StudyInstanceUID, merged (union-find); groups in order of their first unit."""
    parent = list(range(len(units)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for index, unit in enumerate(units):
        for uid in sorted({r.study_uid for r in unit.records if r.study_uid}):
            if uid in owner:
                parent[find(index)] = find(owner[uid])
            else:
                owner[uid] = index
    groups: dict[int, list[_Unit]] = {}
    for index, unit in enumerate(units):
        groups.setdefault(find(index), []).append(unit)
    return sorted(groups.values(), key=lambda g: units.index(g[0]))


def _has_mr(group: list[_Unit]) -> bool:
    return any(r.image and r.modality == PLANNING_MODALITY and "LOCALIZER" not in r.image_type
               for unit in group for r in unit.records)


def _attach_orphans(groups: list[list[_Unit]]) -> list[tuple[list[_Unit], list[_Unit]]]:
    """(own units, attached units) per case: groups without an MR series join the MR case of their patient (or the
    only MR case); see rule 3. In order of the cases' first units."""
    mr_groups = [g for g in groups if _has_mr(g)]
    result: list[tuple[list[_Unit], list[_Unit]]] = [(g, []) for g in mr_groups]
    for group in groups:
        if _has_mr(group):
            continue
        patients = {r.patient_id for unit in group for r in unit.records if r.patient_id}
        same = [i for i, g in enumerate(mr_groups)
                if patients & {r.patient_id for unit in g for r in unit.records if r.patient_id}]
        if len(same) == 1:
            result[same[0]][1].extend(group)
        elif not same and len(mr_groups) == 1:
            result[0][1].extend(group)
        else:
            result.append((group, []))
    order = {id(unit): k for k, g in enumerate(groups) for unit in g}
    return sorted(result, key=lambda pair: min(order[id(u)] for u in pair[0] + pair[1]))


def _case_folder(source: Path, group: list[_Unit], groups: list[list[_Unit]]) -> tuple[Path, bool]:
    """(case folder, whether it holds this case alone): rule 4 of the module docstring, for the case's own units
    (``group``) among every case's own units (``groups``); attached groups (rule 3) do not move it."""
    if not source.is_dir():  # a DICOMDIR file
        return source, len(groups) == 1
    folders = [unit.folder for unit in group]
    common = Path(os.path.commonpath([str(f) for f in folders]))
    if len(groups) == 1:  # the input, or its only sub-folder holding the case (a batch folder of one case)
        return (source / common.relative_to(source).parts[0] if common != source else source), True
    others = [unit.folder for g in groups if g is not group for unit in g]

    def holds_other(folder: Path) -> bool:
        return any(other == folder or folder in other.parents for other in others)

    if common == source or holds_other(common):
        return common, False
    while common.parent != source and not holds_other(common.parent):
        common = common.parent
    return common, True


def _study(root: Path, group: list[_Unit]) -> DicomStudy:
    records = [r for unit in group for r in unit.records]
    notes = [note for unit in group for note in unit.notes]
    errors = [error for unit in group for error in unit.errors]
    folders = sorted({unit.folder for unit in group})
    return DicomStudy(root, tuple(summarize(records)), tuple(dict.fromkeys(notes)), tuple(dict.fromkeys(errors)),
                      tuple(folders), tuple(records))


# ---------------------------------------------------------------- case ids


def _is_generic(folder: Path) -> bool:
    name = folder.name
    return not name or name.upper() in GENERIC_FOLDER_NAMES or bool(GENERIC_FOLDER_PATTERN.match(name))


def _holds_dicomdir(folder: Path, group: list[_Unit]) -> bool:
    return not folder.is_dir() or any(unit.dicomdir is not None and unit.dicomdir.parent == folder
                                      for unit in group) or (folder / "DICOMDIR").is_file()


def _fallback_id(study: DicomStudy, series: str | None) -> str:
    """``<PatientID>_<SeriesNumber>`` of the chosen series (``<PatientID>`` if none can be chosen), file-name safe."""
    from synthct.dicom.enhanced import split_selector  # imports the reader, which imports this module

    patient = study.patient_id
    number: int | None = None
    try:
        chosen, _ = choose_series(study, split_selector(series)[0], PLANNING_MODALITY)
        patient = chosen.patient_id or patient
        number = chosen.series_number
    except DicomError:
        pass
    text = patient or "UNKNOWN"
    if number is not None:
        text = f"{text}_{number}"
    return safe_case_id(text)


def safe_case_id(text: str) -> str:
    """``text`` reduced to letters, digits, ``.``, ``_`` and ``-`` (runs of others become ``_``), usable as a file
    name; ``UNKNOWN`` if nothing is left."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return cleaned or "UNKNOWN"


def _distinct_ids(cases: list[DicomCase]) -> list[DicomCase]:
    seen: dict[str, int] = {}
    result = []
    for case in cases:
        count = seen.get(case.case_id, 0) + 1
        seen[case.case_id] = count
        result.append(case if count == 1 else DicomCase(f"{case.case_id}_{count}", case.study))
    return result


# ---------------------------------------------------------------- the series choice


def candidate_problem(summary: SeriesSummary, modality: str | None = PLANNING_MODALITY) -> str | None:
    """Why ``summary`` is not a candidate planning series (None: it is one)."""
    if modality is not None and summary.modality != modality:
        return f"{summary.modality or 'no modality'}, not {modality}"
    if summary.is_localizer:
        return "localizer"
    if len(summary.orientations) > 1 and not (summary.multi_frame and
                                              max(summary.slices_per_orientation) >= MIN_SLICES):
        return f"{len(summary.orientations)} orientations (a multi-plane localizer?)"
    if summary.n_slices < MIN_SLICES:
        return f"{summary.n_slices} slice{'s' if summary.n_slices != 1 else ''}, fewer than {MIN_SLICES}"
    return None


def match_series(series: Sequence[SeriesSummary], spec: str) -> list[SeriesSummary]:
    """The series ``spec`` names: a SeriesInstanceUID (dotted digits), a SeriesNumber (digits), or else a
    case-insensitive SeriesDescription substring."""
    spec = spec.strip()
    if _UID.match(spec):
        return [s for s in series if s.series_uid == spec]
    if spec.isdigit():
        return [s for s in series if s.series_number == int(spec)]
    return [s for s in series if spec.casefold() in s.description.casefold()]


def _spec_kind(spec: str) -> str:
    spec = spec.strip()
    if _UID.match(spec):
        return f"SeriesInstanceUID {spec}"
    if spec.isdigit():
        return f"SeriesNumber {int(spec)}"
    return f"SeriesDescription containing {spec!r}"


def choose_series(study: DicomStudy, series: str | None = None,
                  modality: str | None = PLANNING_MODALITY) -> tuple[SeriesSummary, list[str]]:
    """The series to read from ``study`` and a note on the choice (empty when nothing else was there to skip).

    ``series``: the ``--series`` string (see :func:`match_series`); without it the only candidate (see
    :func:`candidate_problem`). ``modality`` None (the generic reader): any modality; and a study holding exactly one
    image series is read whatever it is (its checks then apply). Raises :class:`DicomError` listing the series.
    """
    where = study.root
    found = list(study.series)
    listing = "\n".join(f"  {s.describe()}" for s in found)
    if not found:
        ignored = "; ".join(study.notes) if study.notes else "no DICOM files"
        raise DicomError(f"{where}: no image series; {ignored.replace('ignored', 'ignored:', 1)}")
    if series is not None:
        if not series.strip():
            raise DicomError(f"{where}: --series is empty; give a SeriesInstanceUID, SeriesNumber or part of the "
                             f"SeriesDescription; the case holds:\n{listing}")
        matches = match_series(found, series)
        if not matches:
            raise DicomError(f"{where}: no image series with {_spec_kind(series)}; the case holds:\n{listing}")
        if len(matches) > 1:
            shown = "\n".join(f"  {s.describe()}" for s in matches)
            raise DicomError(f"{where}: --series {series!r} matches {len(matches)} image series; give its "
                             f"SeriesInstanceUID or SeriesNumber, or more of its description:\n{shown}")
        chosen = matches[0]
        notes = []
        others = [s for s in found if s is not chosen]
        if others:
            notes.append(f"chose series {chosen.series_uid} ({_short(chosen)}) by --series {series!r}; skipped "
                         f"{len(others)} other image series in {where}: " + "; ".join(_short(s) for s in others))
        problem = candidate_problem(chosen, modality)
        if problem is not None:
            notes.append(f"the chosen series {_short(chosen)} is not a 3-D {modality or 'image'} series by the "
                         f"automatic rule ({problem}); read as asked")
        return chosen, notes
    candidates = [s for s in found if candidate_problem(s, modality) is None]
    if len(candidates) == 1:
        chosen = candidates[0]
        others = [s for s in found if s is not chosen]
        if not others:
            return chosen, []
        skipped = "; ".join(f"{_short(s)} ({candidate_problem(s, modality)})" for s in others)
        return chosen, [f"chose series {_short(chosen)}, the only 3-D {modality or 'image'} series in {where}; "
                        f"skipped {len(others)} other image series: {skipped}"]
    how = ("choose one with --series UID|NUMBER|TEXT (its SeriesInstanceUID, its SeriesNumber, or part of its "
           "SeriesDescription)")
    if len(candidates) > 1:
        shown = "\n".join(f"  {s.describe()}" for s in candidates)
        others = [s for s in found if s not in candidates]
        also = ("\nalso found (not candidates):\n" + "\n".join(f"  {s.describe()} ({candidate_problem(s, modality)})"
                                                               for s in others)) if others else ""
        example = candidates[0].series_number if candidates[0].series_number is not None else candidates[0].series_uid
        raise DicomError(f"{where}: {len(candidates)} 3-D {modality or 'image'} series could be the planning MR; "
                         f"{how}, e.g. --series {example}:\n{shown}{also}")
    if modality is None and len(found) == 1:
        return found[0], []
    shown = "\n".join(f"  {s.describe()} ({candidate_problem(s, modality)})" for s in found)
    raise DicomError(f"{where}: no 3-D {modality or 'image'} series (at least {MIN_SLICES} slices, one orientation, "
                     f"not a localizer); found:\n{shown}\nto read one of them anyway, {how}")


def _short(summary: SeriesSummary) -> str:
    number = "?" if summary.series_number is None else str(summary.series_number)
    return (f"[{number}] '{summary.description}' ({summary.modality or '?'}, {summary.n_slices} slice"
            f"{'s' if summary.n_slices != 1 else ''}, {summary.plane})")
