"""The anatomical regions: one vocabulary for every stage (dataset reader, trainer, model package, algorithm, dose).

Canonical names: ``brain``, ``pelvis`` (SynthRAD 2023), ``hn`` (head and neck), ``th`` (thorax), ``ab`` (abdomen)
(SynthRAD 2025). :func:`canonical_region` accepts every spelling the challenges use: ``"Brain"``, ``"Pelvis"``,
``"Head and Neck"``, ``"Head-and-Neck"``, ``"head_and_neck"``, ``"HN"``, ``"Thorax"``, ``"TH"``, ``"Abdomen"``,
``"AB"`` (any case, spaces, ``-``, ``_`` or ``&``), and a release folder such as ``Task1/HN`` (its last part).
:func:`region_from_case_id` reads the region code of a SynthRAD case id: ``1BA001``/``2BA001`` brain,
``1PA001``/``2PC012`` pelvis, ``1HNA001`` hn, ``1THA001`` th, ``1ABA001`` ab (task 1 or 2, then the code, an optional
centre letter and a digit).
"""

from __future__ import annotations

import re
from typing import Literal, get_args

Region = Literal["brain", "pelvis", "hn", "th", "ab"]
REGIONS: tuple[Region, ...] = get_args(Region)
"""The canonical region names, SynthRAD 2023 first."""
REGION_FOLDERS: dict[Region, tuple[str, ...]] = {
    "brain": ("brain",),
    "pelvis": ("pelvis",),
    "hn": ("HN",),
    "th": ("TH",),
    "ab": ("AB",),
}
"""Folder names SynthRAD's releases use for each region (2023 lower case, 2025 upper case)."""
REGION_LABELS: dict[Region, str] = {
    "brain": "Brain", "pelvis": "Pelvis", "hn": "Head and Neck", "th": "Thorax", "ab": "Abdomen",
}
"""The spelling of grand-challenge's ``region.json``."""

_ALIASES: dict[str, Region] = {
    "brain": "brain",
    "pelvis": "pelvis",
    "hn": "hn",
    "head and neck": "hn",
    "headandneck": "hn",
    "head neck": "hn",
    "th": "th",
    "thorax": "th",
    "ab": "ab",
    "abdomen": "ab",
}
"""Normalised spelling (lower case, ``&`` → ``and``, runs of spaces/``-``/``_`` → one space) → canonical name."""
_CASE_ID = re.compile(r"^[12](HN|TH|AB|B|P)[A-Z]?\d", re.IGNORECASE)
_CASE_ID_CODES: dict[str, Region] = {"B": "brain", "P": "pelvis", "HN": "hn", "TH": "th", "AB": "ab"}
KNOWN_SPELLINGS = ", ".join([*REGIONS, *REGION_LABELS.values(), "Head-and-Neck", "head_and_neck", "HN", "TH", "AB"])
"""The spellings an unknown-region message lists."""


class RegionError(ValueError):
    """A region is unknown, unreadable or cannot be decided; the message says which spellings are known."""


def _key(name: str) -> str:
    last = re.split(r"[/\\]", name.strip().rstrip("/\\"))[-1]
    return re.sub(r"[\s_\-]+", " ", last.lower().replace("&", " and ")).strip()


def region_or_none(name: str) -> Region | None:
    """The canonical region ``name`` spells (see :func:`canonical_region`), or None."""
    key = _key(name)
    return _ALIASES.get(key) or _ALIASES.get(key.replace(" ", ""))


def canonical_region(name: str) -> Region:
    """``"Head and Neck"`` / ``"HN"`` / ``"Task1/HN"`` → ``"hn"``, ``"Brain"`` → ``"brain"``, …

    Raises :class:`RegionError` (a ``ValueError``) listing the known spellings.
    """
    region = region_or_none(name) if isinstance(name, str) else None
    if region is None:
        raise RegionError(f"unknown region {name!r} (known: {KNOWN_SPELLINGS})")
    return region


def region_of_folder(name: str) -> Region | None:
    """The region a SynthRAD release folder names (``brain``, ``pelvis``, ``HN``, ``TH``, ``AB``, any case), or None."""
    lowered = name.lower()
    for region, folders in REGION_FOLDERS.items():
        if lowered == region or lowered in {f.lower() for f in folders}:
            return region
    return None


def region_from_case_id(case_id: str) -> Region | None:
    """The region code of a SynthRAD case id (``1BA001``, ``2BA001`` → brain; ``1HNA001`` → hn), or None
    (``patient7``, ``3BA001``)."""
    match = _CASE_ID.match(case_id)
    return _CASE_ID_CODES[match.group(1).upper()] if match else None
