"""Multi-frame MR (Enhanced MR, Legacy Converted Enhanced MR): frames from the functional groups into one volume.

Every frame's geometry comes from its functional groups, the per-frame item first, else the shared one:
PlanePositionSequence → ImagePositionPatient, PlaneOrientationSequence → ImageOrientationPatient,
PixelMeasuresSequence → PixelSpacing / SliceThickness, PixelValueTransformationSequence → RescaleSlope /
RescaleIntercept (else the top-level values; else none). A series may be one multi-frame file or several of them:
their frames are pooled.

Stacks. The frames are split into stacks by what tells volumes apart: StackID (FrameContentSequence), effective
echo time (MREchoSequence; EchoTime of a converted object), frame type values 3-4 (MRImageFrameTypeSequence),
ComplexImageComponent, AcquisitionContrast, TemporalPositionIndex, diffusion b-value, matrix size, the index of
any further dimension in DimensionIndexValues, and, for frames without a StackID, the orientation. Each stack is
ordered along its slice normal and checked exactly as a classic series (one orientation and matrix, even spacing,
no missing or duplicated positions; errors name the file and frame numbers). One stack: it is the volume. Several:
when exactly one of them is a 3-D volume it is taken, with a note naming the others; otherwise
:class:`DicomError` lists the stacks (number, label, frames, echo time, frame type, orientation).

Choosing a stack: the series selector (``--series``, the ``series_uid`` of
:func:`synthct.dicom.read_dicom_series`) takes ``SERIES#STACK``: SERIES is what selects the series (may be empty
when the folder holds one series), STACK a stack's number in the listing (``#2``) or its label or a part of it,
case-insensitive (``#TE=4.92ms``, ``#water``), which must match exactly one stack.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset

from synthct.dicom.errors import DicomError
from synthct.dicom.geometry import image_from_slices
from synthct.dicom.identity import identity_of
from synthct.dicom.read import DicomVolume, _ordered, _Slice, _slice_of, _slice_spacing, slice_thickness_mm

STACK_SEPARATOR = "#"
"""Separates the series from the stack in a selector: ``SERIES#STACK``."""
ORIENTATION_GROUP_TOL = 1e-3
"""Frames without StackID whose direction cosines differ by more than this form different stacks."""

_GEOMETRY_GROUPS = {
    "ImagePositionPatient": "PlanePositionSequence",
    "ImageOrientationPatient": "PlaneOrientationSequence",
    "PixelSpacing": "PixelMeasuresSequence",
}
_STACK_DIMENSIONS = frozenset({
    "StackID", "InStackPositionNumber", "ImagePositionPatient", "SliceLocation", "EffectiveEchoTime", "EchoTime",
    "TemporalPositionIndex", "DiffusionBValue", "FrameType", "ComplexImageComponent", "AcquisitionContrast",
})
"""Dimensions that are spatial or already a stack feature: not repeated as a further dimension."""
_BASE_FEATURES = ("stack", "TE", "type", "component", "contrast", "phase", "b", "matrix")
"""Stack features of every frame: StackID, echo time, frame type values 3-4, ComplexImageComponent,
AcquisitionContrast, TemporalPositionIndex, diffusion b-value, Columns x Rows."""


def split_selector(selector: str | None) -> tuple[str | None, str | None]:
    """``SERIES#STACK`` → (SERIES or None, STACK or None); a selector without ``#`` is all series."""
    if selector is None:
        return None, None
    series, separator, stack = selector.rpartition(STACK_SEPARATOR)
    if not separator:
        return selector, None
    return series.strip() or None, stack.strip() or None


def is_multi_frame(dataset: Dataset) -> bool:
    """True for an object with functional groups (Enhanced / Legacy Converted Enhanced MR, CT, ...)."""
    return "PerFrameFunctionalGroupsSequence" in dataset or "SharedFunctionalGroupsSequence" in dataset


@dataclass(frozen=True)
class _Frame:
    slice: _Slice  # geometry, file, 1-based frame number; dataset = the frame's flattened attributes
    index: int  # 0-based frame index into the file's pixel data
    features: tuple[tuple[str, object], ...]  # what tells stacks apart, as (name, value) pairs
    frame_type: str  # FrameType (MRImageFrameTypeSequence) or ImageType, values joined by backslashes


@dataclass
class _Stack:
    number: int
    frames: list[_Frame]
    label: str
    ordered: list[_Slice] | None = None
    spacing_mm: float | None = None
    problem: str | None = None

    def describe(self) -> str:
        """One line for the listing: number, label, frames, echo time, frame type, orientation, usable or not."""
        first = self.frames[0].slice
        flat = first.dataset
        echo = flat.get("EffectiveEchoTime")
        parts = [f"{len(self.frames)} frame(s)",
                 f"echo time {float(echo):g} ms" if echo is not None else "echo time ?",
                 f"frame type {self.frames[0].frame_type or '?'}",
                 f"orientation {orientation_name(first.orientation)}"]
        status = "3-D volume" if self.problem is None else f"not usable: {self.problem}"
        return f"#{self.number}  {self.label or '-'}: {', '.join(parts)}; {status}"


def read_enhanced(folder: Path, files: list[tuple[Path, Dataset]], series_uid: str, stack_selector: str | None,
                  notes: list[str]) -> DicomVolume:
    """The volume of one multi-frame series (its files already read), the stack chosen by ``stack_selector``.

    ``notes`` (the folder's notes) is extended and returned in the volume. DicomError names the file and frames.
    """
    _check_consistent(folder, files)
    frames = [frame for path, dataset in files for frame in _frames(path, dataset)]
    where = str(files[0][0]) if len(files) == 1 else f"{folder} ({len(files)} multi-frame files)"
    stacks = _stacks(frames)
    for stack in stacks:
        _build(stack, where if len(stacks) == 1 else f"{where} stack #{stack.number} {stack.label}".rstrip())
    listing = "\n".join(f"  {stack.describe()}" for stack in stacks)
    how = (f"choose one with --series '{series_uid}{STACK_SEPARATOR}<stack>' (its number, e.g. '#2', or its label "
           "or a part of it, e.g. '#TE=4.92ms')")
    if stack_selector is not None:
        chosen = _select(where, stacks, stack_selector, listing, how)
        if chosen.problem is not None:
            raise DicomError(_with_notes(chosen.problem, notes))
        if len(stacks) > 1:
            notes.append(f"chose stack #{chosen.number} ({chosen.label}) of {len(stacks)} in {where}")
    elif len(stacks) == 1:
        chosen = stacks[0]
        if chosen.problem is not None:
            raise DicomError(_with_notes(chosen.problem, notes))
    else:
        volumes = [stack for stack in stacks if stack.problem is None]
        if len(volumes) != 1:
            count = "several 3-D volumes" if volumes else "no usable 3-D volume"
            raise DicomError(f"{where}: multi-frame series {series_uid} holds {len(stacks)} stacks of frames "
                             f"({count}); {how}:\n{listing}")
        chosen = volumes[0]
        skipped = "; ".join(f"#{s.number} {s.label} ({len(s.frames)} frame(s), {s.problem})" for s in stacks
                            if s is not chosen)
        notes.append(f"took stack #{chosen.number} ({chosen.label}, {len(chosen.frames)} frames) of {where}, the only "
                     f"3-D volume among {len(stacks)} stacks; skipped {skipped}")
    return _volume(chosen, dict(files), series_uid, files[0][1], notes)


def _with_notes(problem: str, notes: list[str]) -> str:
    """A stack's problem, with what else was found (ignored objects, skipped series) as the classic reader does."""
    return f"{problem} (also {'; '.join(notes)})" if notes else problem


def orientation_name(orientation: np.ndarray) -> str:
    """'axial', 'coronal' or 'sagittal' for a plane within 1° of it, else 'oblique' (LPS patient axes)."""
    normal = np.abs(np.cross(*orientation))
    axis = int(np.argmax(normal))
    name = ("sagittal", "coronal", "axial")[axis]
    return name if normal[axis] >= np.cos(np.radians(1.0)) else f"oblique (near {name})"


def _check_consistent(folder: Path, files: list[tuple[Path, Dataset]]) -> None:
    """The files of one series: one study and frame of reference, and greyscale frames."""
    first_path, first = files[0]
    for path, dataset in files:
        if int(dataset.get("SamplesPerPixel", 1) or 1) != 1:
            raise DicomError(f"{path}: colour image (SamplesPerPixel {dataset.SamplesPerPixel}); need greyscale")
        for keyword in ("StudyInstanceUID", "FrameOfReferenceUID"):
            if str(dataset.get(keyword, "")) != str(first.get(keyword, "")):
                raise DicomError(f"{folder}: {keyword} differs between the multi-frame files {first_path.name} and "
                                 f"{path.name} of one series")


def _frames(path: Path, dataset: Dataset) -> list[_Frame]:
    """Each frame of a multi-frame file with its flattened attributes and checked geometry."""
    count = int(dataset.get("NumberOfFrames", 1) or 1)
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence") or []
    if per_frame and len(per_frame) != count:
        raise DicomError(f"{path}: {len(per_frame)} per-frame functional group items for {count} frames "
                         "(NumberOfFrames)")
    shared_items = dataset.get("SharedFunctionalGroupsSequence") or []
    shared = shared_items[0] if shared_items else Dataset()
    dimensions = _dimension_names(dataset)
    frames = []
    for index in range(count):
        own = per_frame[index] if per_frame else Dataset()
        flat = _flatten(path, dataset, own, shared, index + 1)
        frame_type = _frame_type(dataset, own, shared)
        features = _features(flat, "\\".join(frame_type[2:4]), dimensions)
        frames.append(_Frame(_slice_of(path, flat, index + 1), index, features, "\\".join(frame_type)))
    return frames


def _group(own: Dataset, shared: Dataset) -> Callable[[str], Dataset | None]:
    """A lookup of a functional group's (first) item: the frame's own, else the shared one, else None."""
    def lookup(keyword: str) -> Dataset | None:
        for container in (own, shared):
            items = container.get(keyword)
            if items:
                return items[0]
        return None
    return lookup


def _flatten(path: Path, dataset: Dataset, own: Dataset, shared: Dataset, frame: int) -> Dataset:
    """One frame's attributes as a single-frame dataset (geometry, rescale, echo time, frame type, stack)."""
    group = _group(own, shared)
    flat = Dataset()
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "SOPClassUID"):
        if keyword in dataset:
            flat[keyword] = dataset[keyword]
    missing = []
    for keyword, sequence in (*_GEOMETRY_GROUPS.items(), ("SliceThickness", "PixelMeasuresSequence")):
        item = group(sequence)
        if item is not None and keyword in item and item[keyword].value not in (None, "", []):
            flat[keyword] = item[keyword]
        elif keyword in _GEOMETRY_GROUPS:
            missing.append(f"{keyword} ({sequence})")
    if missing:
        raise DicomError(f"{path} frame {frame}: missing {', '.join(missing)} in both the per-frame and the shared "
                         "functional groups; cannot place the frame in space")
    transform = group("PixelValueTransformationSequence")
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        source = transform if transform is not None and keyword in transform else dataset
        if keyword in source:
            flat[keyword] = source[keyword]
    unassigned = group("UnassignedPerFrameConvertedAttributesSequence") or Dataset()
    unassigned_shared = group("UnassignedSharedConvertedAttributesSequence") or Dataset()
    echo_item = group("MREchoSequence")
    for candidate, keyword in ((echo_item, "EffectiveEchoTime"), (unassigned, "EchoTime"),
                               (unassigned_shared, "EchoTime"), (dataset, "EchoTime")):
        if candidate is not None and candidate.get(keyword) not in (None, ""):
            flat.EffectiveEchoTime = float(candidate.get(keyword))
            break
    frame_type = group("MRImageFrameTypeSequence") or Dataset()
    for keyword in ("ComplexImageComponent", "AcquisitionContrast"):
        value = frame_type.get(keyword) or dataset.get(keyword)
        if value:
            setattr(flat, keyword, str(value))
    content = group("FrameContentSequence") or Dataset()
    for keyword in ("StackID", "InStackPositionNumber", "TemporalPositionIndex", "DimensionIndexValues"):
        if content.get(keyword) not in (None, ""):
            flat[keyword] = content[keyword]
    diffusion = group("MRDiffusionSequence")
    if diffusion is not None and diffusion.get("DiffusionBValue") is not None:
        flat.DiffusionBValue = diffusion.DiffusionBValue
    return flat


def _frame_type(dataset: Dataset, own: Dataset, shared: Dataset) -> list[str]:
    """FrameType of MRImageFrameTypeSequence, else a converted object's per-frame ImageType, else ImageType."""
    group = _group(own, shared)
    frame_type = group("MRImageFrameTypeSequence") or Dataset()
    unassigned = group("UnassignedPerFrameConvertedAttributesSequence") or Dataset()
    types = frame_type.get("FrameType") or unassigned.get("ImageType") or dataset.get("ImageType") or []
    return [str(v) for v in ([types] if isinstance(types, str) else types)]


def _dimension_names(dataset: Dataset) -> list[str | None]:
    """Per DimensionIndexValues position: a name for a dimension that is a further stack feature, else None."""
    names: list[str | None] = []
    for item in dataset.get("DimensionIndexSequence") or []:
        pointer = item.get("DimensionIndexPointer")
        keyword = keyword_for_tag(int(pointer)) if pointer is not None else ""
        label = str(item.get("DimensionDescriptionLabel", "") or keyword or "dimension").replace(" ", "")
        names.append(None if keyword in _STACK_DIMENSIONS else label)
    return names


def _features(flat: Dataset, frame_type_tail: str, dimensions: list[str | None]) -> tuple[tuple[str, object], ...]:
    """What tells this frame's stack apart from others (the orientation is added later, for frames w/o StackID)."""
    echo = flat.get("EffectiveEchoTime")
    features: list[tuple[str, object]] = list(zip(_BASE_FEATURES, (
        str(flat.get("StackID", "")).strip() or None,
        round(float(echo), 3) if echo is not None else None,
        frame_type_tail or None,
        str(flat.get("ComplexImageComponent", "")) or None,
        str(flat.get("AcquisitionContrast", "")) or None,
        int(flat.TemporalPositionIndex) if "TemporalPositionIndex" in flat else None,
        float(flat.DiffusionBValue) if "DiffusionBValue" in flat else None,
        f"{flat.get('Columns', '?')}x{flat.get('Rows', '?')}",
    ), strict=True))
    values = flat.get("DimensionIndexValues")
    values = [] if values is None else [values] if isinstance(values, int) else list(values)
    for name, value in zip(dimensions, values, strict=False):
        if name is not None:
            features.append((name, int(value)))
    return tuple(features)


def _stacks(frames: list[_Frame]) -> list[_Stack]:
    """Frames grouped by their features (and, without StackID, by orientation), sorted, numbered from 1.

    A further dimension with at least as many values as there are slice positions counts slices or frames, not
    stacks (e.g. a vendor's private slice index): it is not used.
    """
    positions = len({tuple(np.round(frame.slice.position_mm, 2)) for frame in frames})
    counts: dict[str, set[object]] = {}
    for frame in frames:
        for name, value in frame.features[len(_BASE_FEATURES):]:
            counts.setdefault(name, set()).add(value)
    spatial = {name for name, values in counts.items() if positions > 1 and len(values) >= positions}
    orientations: list[np.ndarray] = []
    groups: dict[tuple, list[_Frame]] = {}
    for frame in frames:
        key = tuple(feature for feature in frame.features if feature[0] not in spatial)
        if dict(key)["stack"] is None:
            key = (*key, ("orientation", _orientation_group(orientations, frame.slice.orientation)))
        groups.setdefault(key, []).append(frame)
    keys = sorted(groups, key=lambda k: tuple((v is None, _sortable(v)) for _, v in k))
    varying = {name for name, _ in keys[0] if len({dict(k).get(name) for k in keys}) > 1} if keys else set()
    stacks = []
    for number, key in enumerate(keys, start=1):
        label = " ".join(_label_part(name, value, orientations) for name, value in key if name in varying)
        stacks.append(_Stack(number, groups[key], label))
    return stacks


def _orientation_group(orientations: list[np.ndarray], orientation: np.ndarray) -> int:
    for number, reference in enumerate(orientations):
        if np.abs(reference - orientation).max() <= ORIENTATION_GROUP_TOL:
            return number
    orientations.append(orientation)
    return len(orientations) - 1


def _sortable(value: object) -> tuple[int, float, str]:
    if isinstance(value, int | float):
        return 0, float(value), ""
    text = "" if value is None else str(value)
    return (0, float(text), "") if text.isdigit() else (1, 0.0, text)


def _label_part(name: str, value: object, orientations: list[np.ndarray]) -> str:
    if value is None:
        return f"{name}=none"
    if name == "TE":
        return f"TE={value:g}ms"
    if name == "orientation" and isinstance(value, int):  # an index into ``orientations``
        return f"orientation={orientation_name(orientations[int(value)]).split(' ')[0]}{int(value) + 1}"
    if name == "b":
        return f"b={value:g}"
    return f"{name}={value}"


def _build(stack: _Stack, where: str) -> None:
    """Order and check the stack like a classic series; a failure is kept as the stack's problem."""
    try:
        ordered = _ordered(where, [frame.slice for frame in stack.frames])
        stack.spacing_mm = _slice_spacing(where, ordered)
        stack.ordered = ordered
    except DicomError as exc:
        stack.problem = str(exc)


def _select(where: str, stacks: list[_Stack], selector: str, listing: str, how: str) -> _Stack:
    """The stack named by ``selector``: its number, else its label, a label part or a part of its label."""
    text = selector.strip().lower().replace(" ", "")
    if text.isdigit():
        number = int(text)
        if 1 <= number <= len(stacks):
            return stacks[number - 1]
        raise DicomError(f"{where}: no stack #{number}; the series holds {len(stacks)} stack(s); {how}:\n{listing}")
    labels = [stack.label.lower().replace(" ", "") for stack in stacks]
    for test in (lambda label, parts: label == text, lambda label, parts: text in parts,
                 lambda label, parts: text in label):
        matches = [stack for stack, label in zip(stacks, labels, strict=True)
                   if test(label, stack.label.lower().split())]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise DicomError(f"{where}: stack '{selector}' matches {len(matches)} stacks "
                             f"({', '.join(f'#{s.number}' for s in matches)}); {how}:\n{listing}")
    raise DicomError(f"{where}: no stack matches '{selector}'; {how}:\n{listing}")


def _volume(stack: _Stack, datasets: dict[Path, Dataset], series_uid: str, first: Dataset,
            notes: list[str]) -> DicomVolume:
    assert stack.ordered is not None and stack.spacing_mm is not None
    by_slice = {id(frame.slice): frame for frame in stack.frames}
    stored: dict[Path, np.ndarray] = {}
    voxels = []
    for item in stack.ordered:
        frame = by_slice[id(item)]
        if item.path not in stored:
            stored[item.path] = _file_pixels(item.path, datasets[item.path])
        slope = float(item.dataset.get("RescaleSlope", 1) or 1)
        intercept = float(item.dataset.get("RescaleIntercept", 0) or 0)
        voxels.append((stored[item.path][frame.index].astype(np.float64) * slope + intercept).astype(np.float32))
    reference = stack.ordered[0]
    row_spacing, column_spacing = (float(v) for v in reference.dataset.PixelSpacing)
    image = image_from_slices(np.stack(voxels), np.concatenate(reference.orientation), reference.position_mm,
                              (column_spacing, row_spacing, stack.spacing_mm))
    return DicomVolume(image, series_uid, identity_of(first), notes, slice_thickness_mm(reference.dataset))


def _file_pixels(path: Path, dataset: Dataset) -> np.ndarray:
    """All frames' stored values (frames, y, x) of a multi-frame file; DicomError if they cannot be decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stored = np.asarray(dataset.pixel_array)
    except Exception as exc:  # damaged pixel data, or a compressed syntax without a pydicom decoder
        raise DicomError(f"{path}: multi-frame pixel data cannot be read ({type(exc).__name__}: {exc}); "
                         "export the series uncompressed") from exc
    frames, rows, columns = int(dataset.get("NumberOfFrames", 1) or 1), int(dataset.Rows), int(dataset.Columns)
    if stored.size != frames * rows * columns:
        raise DicomError(f"{path}: pixel data has shape {stored.shape}, expected ({frames}, {rows}, {columns})")
    return stored.reshape(frames, rows, columns)
