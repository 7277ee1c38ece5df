"""Find ground-truth cases and predictions on disk and pair them by case id (never by sort order).

Ground-truth folder layouts (``<ext>`` any of :data:`synthct.io.IMAGE_SUFFIXES`):

- flat: ``ct/<ID>.<ext>``, ``mask/<ID>.<ext>`` (optionally ``mr/<ID>.<ext>``) — the evaluation container's layout;
- SynthRAD case folders: ``<ID>/{ct,mask,mr}.<ext>``, also nested, e.g. ``Task1/<region>/<ID>/``.

Predictions: image files named by case id (``1BA001.mha``, or any name holding the id as a ``_``/``-`` separated
token, e.g. ``sct_1BA001.nii.gz``), or case folders ``<ID>/sct.<ext>`` (or ``<ID>/`` holding a single image).
Hidden files and folders (``.name``: among them synthct's temporaries, ``.synthct-tmp-*``) are never cases.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from synthct.io import IMAGE_SUFFIXES, strip_image_suffix

MAX_CASE_DEPTH = 4
"""How deep below the ground-truth folder case folders are looked for (``Task1/<region>/<ID>`` is depth 3)."""


class EvaluationError(RuntimeError):
    """The evaluation cannot run at all (no ground truth, unreadable job list); the message says why."""


@dataclass(frozen=True)
class GroundTruthCase:
    """One ground-truth case: CT (HU) and body mask files, optional MR; ``problem`` if the case is incomplete."""

    case_id: str
    ct: Path | None
    mask: Path | None
    mr: Path | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Job:
    """One case to score: a prediction paired with its ground truth, or the reason it cannot be scored."""

    case_id: str
    prediction: Path | None
    ground_truth: GroundTruthCase | None
    mr: Path | None = None
    pk: str | None = None
    problem: str | None = None


def _is_image(path: Path) -> bool:
    """An image file by its suffix; hidden files (``.name``, e.g. synthct's ``.synthct-tmp-*`` temporaries of an
    interrupted write) are not."""
    return path.is_file() and not path.name.startswith(".") and path.name.lower().endswith(IMAGE_SUFFIXES)


def _images_named(folder: Path, stem: str) -> list[Path]:
    """Image files ``folder/<stem>.<ext>`` for any known suffix (case-insensitive suffix)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _is_image(p) and strip_image_suffix(p.name) == stem)


def index_flat_images(folder: Path) -> dict[str, list[Path]]:
    """Image files directly in ``folder`` keyed by file name without its image suffix."""
    index: dict[str, list[Path]] = {}
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if _is_image(path):
                index.setdefault(strip_image_suffix(path.name), []).append(path)
    return index


def _flat_ground_truth(root: Path) -> dict[str, GroundTruthCase]:
    cts = index_flat_images(root / "ct")
    masks = index_flat_images(root / "mask")
    mrs = index_flat_images(root / "mr")
    cases: dict[str, GroundTruthCase] = {}
    for case_id in sorted(set(cts) | set(masks)):
        ct_files, mask_files, mr_files = cts.get(case_id, []), masks.get(case_id, []), mrs.get(case_id, [])
        problems = []
        if not ct_files:
            problems.append(f"no CT file for case {case_id} in {root / 'ct'}")
        if not mask_files:
            problems.append(f"no mask file for case {case_id} in {root / 'mask'}")
        for kind, files in (("CT", ct_files), ("mask", mask_files)):
            if len(files) > 1:
                problems.append(f"several {kind} files for case {case_id}: {', '.join(p.name for p in files)}")
        cases[case_id] = GroundTruthCase(
            case_id,
            ct_files[0] if ct_files else None,
            mask_files[0] if mask_files else None,
            mr_files[0] if len(mr_files) == 1 else None,
            "; ".join(problems) or None,
        )
    return cases


def _case_folders(root: Path) -> Iterable[Path]:
    """Folders up to :data:`MAX_CASE_DEPTH` below ``root`` that hold a ``ct.<ext>`` image."""
    base_depth = len(root.parts)
    for folder, dirs, files in os.walk(root):
        path = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # hidden: temporaries, .git, …
        if len(path.parts) - base_depth >= MAX_CASE_DEPTH:
            dirs.clear()
        if any(strip_image_suffix(name) == "ct" and name.lower().endswith(IMAGE_SUFFIXES) for name in files):
            yield path


def _case_folder_ground_truth(root: Path) -> dict[str, GroundTruthCase]:
    cases: dict[str, GroundTruthCase] = {}
    for folder in _case_folders(root):
        case_id = folder.name
        ct_files, mask_files, mr_files = (_images_named(folder, stem) for stem in ("ct", "mask", "mr"))
        problems = []
        if not mask_files:
            problems.append(f"no mask file (mask.<ext>) in {folder}")
        for kind, files in (("CT", ct_files), ("mask", mask_files)):
            if len(files) > 1:
                problems.append(f"several {kind} files in {folder}: {', '.join(p.name for p in files)}")
        if case_id in cases:
            problems.append(f"case id {case_id} appears twice: {cases[case_id].ct} and {ct_files[0]}")
        cases[case_id] = GroundTruthCase(
            case_id,
            ct_files[0],
            mask_files[0] if mask_files else None,
            mr_files[0] if len(mr_files) == 1 else None,
            "; ".join(problems) or None,
        )
    return cases


def find_ground_truth(root: str | os.PathLike[str]) -> dict[str, GroundTruthCase]:
    """Ground-truth cases under ``root`` keyed by case id (flat ``ct/``+``mask/`` or case folders).

    Incomplete cases are returned with ``problem`` set, never dropped. Raises :class:`EvaluationError` if ``root``
    is missing or holds no case at all.
    """
    root = Path(root)
    if not root.is_dir():
        raise EvaluationError(f"{root}: ground-truth folder not found")
    cases = _flat_ground_truth(root) if (root / "ct").is_dir() else _case_folder_ground_truth(root)
    if not cases:
        raise EvaluationError(
            f"{root}: no ground-truth cases found (expected ct/<ID>.<ext> and mask/<ID>.<ext>, "
            "or case folders <ID>/ct.<ext> + <ID>/mask.<ext>)"
        )
    return cases


def resolve_case_id(name: str, known_ids: Iterable[str]) -> str:
    """Case id of an image file name: its stem if that is a known id, else the one known id among its tokens.

    ``'1BA001.mha'`` → ``'1BA001'``; ``'mri_1BA001.nii.gz'`` → ``'1BA001'`` (when 1BA001 is known). An unknown
    name gives its stem.
    """
    known = set(known_ids)
    stem = strip_image_suffix(Path(name).name)
    if stem in known:
        return stem
    tokens = [t for t in re.split(r"[_\-\s]+", stem) if t]
    matches = sorted({t for t in tokens if t in known})
    if len(matches) == 1:
        return matches[0]
    lowered = {k.lower(): k for k in known}
    matches = sorted({lowered[t.lower()] for t in [stem, *tokens] if t.lower() in lowered})
    return matches[0] if len(matches) == 1 else stem


def index_images_by_case(folder: Path, known_ids: Iterable[str], preferred_stem: str) -> dict[str, list[Path]]:
    """Image files in ``folder`` keyed by case id: flat files (id from the name) and case folders ``<ID>/``.

    In a case folder the image named ``preferred_stem`` (e.g. ``sct``) is taken, else its only image.
    """
    known = set(known_ids)
    index: dict[str, list[Path]] = {}
    if not folder.is_dir():
        return index
    for path in sorted(folder.iterdir()):
        if _is_image(path):
            index.setdefault(resolve_case_id(path.name, known), []).append(path)
        elif path.is_dir() and not path.name.startswith("."):
            named = _images_named(path, preferred_stem)
            images = named or sorted(p for p in path.iterdir() if _is_image(p))
            if images:
                index.setdefault(path.name, []).extend(images if len(images) > 1 else images[:1])
    return index


def pair_jobs(
    ground_truth: dict[str, GroundTruthCase],
    predictions: dict[str, list[Path]],
    prediction_dir: Path,
    mrs: dict[str, list[Path]] | None = None,
    only_predicted: bool = False,
) -> list[Job]:
    """One job per ground-truth case (sorted by id), then one per prediction with no ground truth.

    A case with no prediction, several predictions or an incomplete ground truth gets a job with ``problem``
    set (skipped instead, for a missing prediction, with ``only_predicted``).
    """
    jobs: list[Job] = []
    for case_id, case in sorted(ground_truth.items()):
        files = predictions.get(case_id, [])
        mr_files = (mrs or {}).get(case_id, [])
        mr = mr_files[0] if len(mr_files) == 1 else case.mr
        if not files:
            if only_predicted:
                continue
            jobs.append(Job(case_id, None, case, mr, problem=f"no prediction for case {case_id} in {prediction_dir}"))
        elif len(files) > 1:
            names = ", ".join(str(p) for p in files)
            jobs.append(Job(case_id, None, case, mr, problem=f"several predictions for case {case_id}: {names}"))
        else:
            jobs.append(Job(case_id, files[0], case, mr, problem=case.problem))
    for case_id in sorted(set(predictions) - set(ground_truth)):
        for path in predictions[case_id]:
            jobs.append(Job(case_id, path, None, problem=f"{path}: no ground-truth case {case_id}"))
    return jobs
