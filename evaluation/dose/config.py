"""Dose-evaluation settings: one validated, flat mapping (YAML file + ``--dose-set key=value``).

Unknown keys, wrong types and out-of-range values are rejected with the key's name. The resolved settings (every
key, defaults filled in) are written into ``metrics.json`` under ``dose.settings``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MODALITIES = ("photon", "proton")
DOSE_CHOICES = ("photon", "proton", "both")
REGION_CHOICES = ("auto", "brain", "pelvis", "hn", "th", "ab")
SOLVERS = ("ipopt", "scipy")


class DoseConfigError(ValueError):
    """A dose-settings problem; the message names the key and what is wrong."""


@dataclass(frozen=True)
class DoseConfig:
    """Plan, dose-grid and metric settings of the dose evaluation (SynthRAD 2023 definitions by default)."""

    region: str = "auto"
    """Virtual-target recipe: ``brain``, ``pelvis``, ``hn``, ``th``, ``ab``, or ``auto`` (from the case id
    ``1B…``/``1P…``/``1HN…``/``1TH…``/``1AB…`` or the region folder in the path)."""
    prescription_gy: float = 2.0
    """Prescription per fraction (Gy); the plan is normalised so that the PTV mean dose on the CT equals it."""
    dose_grid_mm: float = 3.0
    """Isotropic dose-grid spacing (mm); every dose metric is computed on this grid."""
    ct_grid_mm: float = 2.0
    """CT and sCT are resampled (linear HU, origin kept) to this isotropic spacing (mm) for the ray tracing when their
    voxels are finer; 0 keeps the CT grid. Cuts time and memory ~3× on SynthRAD-size pelvis CTs."""
    photon_beams: int = 7
    """Equidistant coplanar photon beams, the first at gantry 0°."""
    photon_bixel_mm: float = 5.0
    """Photon beamlet width at the isocentre (mm)."""
    proton_gantry_deg: tuple[float, ...] = (90.0, 180.0, 270.0)
    """Gantry angles of the proton fields (°, coplanar)."""
    proton_spot_mm: float = 5.0
    """Lateral proton spot spacing (mm)."""
    proton_layer_mm: float = 3.0
    """Longitudinal spot (energy layer) spacing (mm water)."""
    solver: str = "ipopt"
    """Fluence optimiser: ``ipopt`` (IPOPT via ipyopt) or ``scipy`` (L-BFGS-B, stops at ``max_iterations``)."""
    max_iterations: int = 100
    """Iteration cap of the fluence optimiser."""
    target_radius_mm: float = 15.0
    """Radius of the virtual PTV sphere (mm)."""
    oar_radius_mm: float = 10.0
    """Radius of each virtual OAR sphere (mm)."""
    oar_gap_mm: float = 5.0
    """Gap between the virtual PTV surface and each virtual OAR surface (mm)."""
    mae_threshold_pct: float = 90.0
    """Dose MAE over voxels whose CT dose is at least this % of the prescription."""
    gamma_dose_pct: float = 2.0
    """Gamma dose criterion (% of the maximum CT dose: global gamma)."""
    gamma_distance_mm: float = 2.0
    """Gamma distance-to-agreement criterion (mm)."""
    gamma_cutoff_pct: float = 10.0
    """Gamma low-dose cutoff (% of the maximum CT dose)."""
    gamma_interp_fraction: int = 5
    """pymedphys gamma: sub-steps per distance criterion when searching the evaluated dose."""
    outside_body_hu: float = -1000.0
    """HU given to CT and sCT outside the body mask before dose calculation (couch and noise removed alike)."""

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["proton_gantry_deg"] = list(self.proton_gantry_deg)
        return values


_RANGES: dict[str, tuple[float, float]] = {
    "prescription_gy": (0.01, 100.0),
    "dose_grid_mm": (0.5, 10.0),
    "ct_grid_mm": (0.0, 10.0),
    "photon_beams": (1, 36),
    "photon_bixel_mm": (1.0, 20.0),
    "proton_spot_mm": (1.0, 20.0),
    "proton_layer_mm": (0.5, 10.0),
    "max_iterations": (1, 100000),
    "target_radius_mm": (3.0, 80.0),
    "oar_radius_mm": (2.0, 80.0),
    "oar_gap_mm": (0.0, 50.0),
    "mae_threshold_pct": (0.0, 200.0),
    "gamma_dose_pct": (0.1, 20.0),
    "gamma_distance_mm": (0.1, 20.0),
    "gamma_cutoff_pct": (0.0, 100.0),
    "gamma_interp_fraction": (1, 50),
    "outside_body_hu": (-1024.0, 0.0),
}
_CHOICES: dict[str, tuple[str, ...]] = {"region": REGION_CHOICES, "solver": SOLVERS}


def _convert(key: str, value: Any, default: Any) -> Any:
    if isinstance(default, tuple):
        items = value if isinstance(value, list | tuple) else [value]
        if not items:
            raise DoseConfigError(f"{key}: needs at least one value")
        if not all(isinstance(item, int | float) and not isinstance(item, bool) for item in items):
            raise DoseConfigError(f"{key}: expected a list of numbers, got {value!r}")
        converted = tuple(float(item) for item in items)
        if key == "proton_gantry_deg" and not all(-360.0 <= a <= 360.0 for a in converted):
            raise DoseConfigError(f"{key}: angles must lie within -360…360°, got {list(converted)}")
        return converted
    if isinstance(default, bool) or isinstance(value, bool):
        raise DoseConfigError(f"{key}: expected {type(default).__name__}, got {value!r}")
    if isinstance(default, str):
        if not isinstance(value, str) or value not in _CHOICES[key]:
            raise DoseConfigError(f"{key}: expected one of {', '.join(_CHOICES[key])}, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise DoseConfigError(f"{key}: expected an integer, got {value!r}")
    elif isinstance(value, int | float):
        value = float(value)
    else:
        raise DoseConfigError(f"{key}: expected a number, got {value!r}")
    if value != value:  # NaN
        raise DoseConfigError(f"{key}: NaN is not allowed")
    low, high = _RANGES[key]
    if not low <= value <= high:
        raise DoseConfigError(f"{key}: {value} is outside {low}…{high}")
    return value


def dose_config_from_dict(values: Mapping[str, Any] | None) -> DoseConfig:
    """Validated settings from a mapping; unknown keys are rejected naming the closest valid key."""
    defaults = DoseConfig()
    known = {f.name for f in dataclasses.fields(DoseConfig)}
    converted: dict[str, Any] = {}
    for key, value in (values or {}).items():
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise DoseConfigError(f"unknown dose setting {key!r}{hint}; valid: {', '.join(sorted(known))}")
        converted[key] = _convert(key, value, getattr(defaults, key))
    return dataclasses.replace(defaults, **converted)


def parse_assignment(text: str) -> tuple[str, Any]:
    """``'key=value'`` → ``(key, value)`` with the value parsed as YAML (``3``, ``[90, 270]``, ``scipy``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise DoseConfigError(f"--dose-set {text!r}: expected key=value")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise DoseConfigError(f"--dose-set {text!r}: value is not valid YAML ({exc})") from exc
    return key.strip(), value


def load_dose_config(path: str | os.PathLike[str] | None = None, assignments: Sequence[str] = ()) -> DoseConfig:
    """Settings from an optional YAML file (a flat mapping), then ``key=value`` assignments; validated."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise DoseConfigError(f"{path}: dose settings file not found") from exc
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise DoseConfigError(f"{path}: cannot be read as YAML ({exc})") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise DoseConfigError(f"{path}: expected a mapping of dose settings, got {type(loaded).__name__}")
        values.update(loaded or {})
        try:
            dose_config_from_dict(values)
        except DoseConfigError as exc:
            raise DoseConfigError(f"{path}: {exc}") from exc
    for text in assignments:
        key, value = parse_assignment(text)
        values[key] = value
    try:
        return dose_config_from_dict(values)
    except DoseConfigError as exc:
        if not assignments:
            raise
        raise DoseConfigError(f"--dose-set: {exc}") from exc


def modalities(choice: str) -> tuple[str, ...]:
    """``'photon'`` → ``('photon',)``, ``'both'`` → ``('photon', 'proton')``."""
    if choice not in DOSE_CHOICES:
        raise DoseConfigError(f"dose modality {choice!r}: expected one of {', '.join(DOSE_CHOICES)}")
    return MODALITIES if choice == "both" else (choice,)

