"""Dose-evaluation settings: one validated, flat mapping (YAML file + ``--dose-set key=value``), a pydantic model on
:mod:`synthct.settings`.

Unknown keys, wrong types and out-of-range values are rejected with the key's name. The resolved settings (every
key, defaults filled in) are written into ``metrics.json`` under ``dose.settings``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, field_validator

from synthct import settings
from synthct.regions import REGIONS, region_or_none
from synthct.settings import Float, Int, Settings, in_range, length

MODALITIES = ("photon", "proton")
DOSE_CHOICES = ("photon", "proton", "both")
REGION_CHOICES = ("auto", *REGIONS)
SOLVERS = ("ipopt", "scipy")


class DoseConfigError(settings.SettingsError):
    """A dose-settings problem; the message names the key and what is wrong."""


Angle = Annotated[Float, in_range(-360.0, 360.0)]


class DoseConfig(Settings):
    """Plan, dose-grid and metric settings of the dose evaluation (SynthRAD 2023 definitions by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    unknown_key_label: ClassVar[str] = "dose setting"

    region: Literal["auto", "brain", "pelvis", "hn", "th", "ab"] = "auto"
    """Virtual-target recipe: ``brain``, ``pelvis``, ``hn``, ``th``, ``ab`` (any spelling of
    :func:`synthct.regions.canonical_region`), or ``auto`` (from the case id ``1B…``/``2B…``/``1P…``/``1HN…``/
    ``1TH…``/``1AB…`` or the region folder in the path)."""
    prescription_gy: Annotated[Float, in_range(0.01, 100.0)] = 2.0
    """Prescription per fraction (Gy); the plan is normalised so that the PTV mean dose on the CT equals it."""
    dose_grid_mm: Annotated[Float, in_range(0.5, 10.0)] = 3.0
    """Isotropic dose-grid spacing (mm); every dose metric is computed on this grid."""
    ct_grid_mm: Annotated[Float, in_range(0.0, 10.0)] = 2.0
    """CT and sCT are resampled (linear HU, origin kept) to this isotropic spacing (mm) for the ray tracing when their
    voxels are finer; 0 keeps the CT grid. Cuts time and memory ~3× on SynthRAD-size pelvis CTs."""
    photon_beams: Annotated[Int, in_range(1, 36)] = 7
    """Equidistant coplanar photon beams, the first at gantry 0°."""
    photon_bixel_mm: Annotated[Float, in_range(1.0, 20.0)] = 5.0
    """Photon beamlet width at the isocentre (mm)."""
    proton_gantry_deg: Annotated[tuple[Angle, ...], length(at_least=1)] = (90.0, 180.0, 270.0)
    """Gantry angles of the proton fields (°, coplanar, within -360…360)."""
    proton_spot_mm: Annotated[Float, in_range(1.0, 20.0)] = 5.0
    """Lateral proton spot spacing (mm)."""
    proton_layer_mm: Annotated[Float, in_range(0.5, 10.0)] = 3.0
    """Longitudinal spot (energy layer) spacing (mm water)."""
    solver: Literal["ipopt", "scipy"] = "ipopt"
    """Fluence optimiser: ``ipopt`` (IPOPT via ipyopt) or ``scipy`` (L-BFGS-B, stops at ``max_iterations``)."""
    max_iterations: Annotated[Int, in_range(1, 100000)] = 100
    """Iteration cap of the fluence optimiser."""
    target_radius_mm: Annotated[Float, in_range(3.0, 80.0)] = 15.0
    """Radius of the virtual PTV sphere (mm)."""
    oar_radius_mm: Annotated[Float, in_range(2.0, 80.0)] = 10.0
    """Radius of each virtual OAR sphere (mm)."""
    oar_gap_mm: Annotated[Float, in_range(0.0, 50.0)] = 5.0
    """Gap between the virtual PTV surface and each virtual OAR surface (mm)."""
    mae_threshold_pct: Annotated[Float, in_range(0.0, 200.0)] = 90.0
    """Dose MAE over voxels whose CT dose is at least this % of the prescription."""
    gamma_dose_pct: Annotated[Float, in_range(0.1, 20.0)] = 2.0
    """Gamma dose criterion (% of the maximum CT dose: global gamma)."""
    gamma_distance_mm: Annotated[Float, in_range(0.1, 20.0)] = 2.0
    """Gamma distance-to-agreement criterion (mm)."""
    gamma_cutoff_pct: Annotated[Float, in_range(0.0, 100.0)] = 10.0
    """Gamma low-dose cutoff (% of the maximum CT dose)."""
    gamma_interp_fraction: Annotated[Int, in_range(1, 50)] = 5
    """pymedphys gamma: sub-steps per distance criterion when searching the evaluated dose."""
    outside_body_hu: Annotated[Float, in_range(-1024.0, 0.0)] = -1000.0
    """HU given to CT and sCT outside the body mask before dose calculation (couch and noise removed alike)."""

    @field_validator("region", mode="before")
    @classmethod
    def _canonical_region(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() != "auto":
            return region_or_none(value) or value
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("proton_gantry_deg", mode="before")
    @classmethod
    def _angles(cls, value: Any) -> Any:
        return value if isinstance(value, list | tuple) else [value]


def dose_config_from_dict(values: Mapping[str, Any] | None) -> DoseConfig:
    """Validated settings from a mapping; unknown keys are rejected naming the closest valid key."""
    return settings.validate(DoseConfig, values, DoseConfigError, "dose settings")


def parse_assignment(text: str) -> tuple[str, Any]:
    """``'key=value'`` → ``(key, value)`` with the value parsed as YAML (``3``, ``[90, 270]``, ``scipy``)."""
    parts, value = settings.parse_override(text, DoseConfigError, "--dose-set")
    return ".".join(parts), value


def load_dose_config(path: str | os.PathLike[str] | None = None, assignments: Sequence[str] = ()) -> DoseConfig:
    """Settings from an optional YAML file (a flat mapping), then ``key=value`` assignments; validated."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(settings.read_yaml_mapping(path, DoseConfigError, "dose settings"))
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

