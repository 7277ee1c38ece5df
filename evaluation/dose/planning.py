"""Plan on the CT, recalculate on the sCT with the same beamlet weights (pyRadPlan pencil-beam engines).

Photons: ``photon_beams`` equidistant coplanar beams (SVD pencil beam, pyRadPlan's generic 6 MV machine). Protons:
the fields of ``proton_gantry_deg`` (Hong pencil beam, generic proton machine, physical dose, no RBE). Objectives:
PTV squared deviation from Rx (priority 1000), each OAR squared overdose above 50 % Rx (priority 100), the body
squared overdose above 80 % Rx (priority 10). One fraction of ``prescription_gy``; after optimisation the weights are
scaled so that the PTV mean dose on the CT equals Rx. The sCT dose is the sCT's own dose-influence matrix (same beams,
same beamlets, computed on the sCT) times those weights — the same method as the CT dose, so an sCT equal to the CT
gives the CT dose (to float32 round-off). pyRadPlan's forward mode was slower than a second influence matrix here.

Images go to pyRadPlan with origin 0 and identity direction (voxel (z, y, x) ↔ (z, y, x)·spacing mm); gantry 0°
enters from −y (anterior for LPS images). CT, sCT and structures are first resampled to ``ct_grid_mm`` when the CT
is finer (linear; masks ≥ 0.5), the same for both. The dose grid is pyRadPlan's resampling of that grid at
``dose_grid_mm``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk
from synthct.evaluation.dose.config import DoseConfig
from synthct.evaluation.dose.structures import Structures

if TYPE_CHECKING:  # imported where used at run time (pyRadPlan takes seconds to import); untyped, so Any to mypy
    from pyRadPlan import CT, Plan, SteeringInformation, StructureSet
    from pyRadPlan.cst import VOI

log = logging.getLogger(__name__)

PTV_PRIORITY, OAR_PRIORITY, BODY_PRIORITY = 1000.0, 100.0, 10.0
OAR_LIMIT_FRACTION, BODY_LIMIT_FRACTION = 0.5, 0.8


class PlanningError(RuntimeError):
    """Dose calculation or optimisation failed; the message says at which stage."""


@dataclass
class DoseGrid:
    """Geometry of the dose grid: (z, y, x) shape, spacing and origin in mm (same frame as the CT voxels)."""

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]


@dataclass
class PlanResult:
    """Doses (Gy, (z, y, x) on the dose grid) on CT and sCT, structures on that grid, timings (s)."""

    ct_gy: np.ndarray
    sct_gy: np.ndarray
    grid: DoseGrid
    ptv: np.ndarray
    oars: dict[str, np.ndarray]
    body: np.ndarray
    weights: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)
    optimiser: dict[str, object] = field(default_factory=dict)


def _image(array_zyx: np.ndarray, spacing_mm: tuple[float, ...]) -> sitk.Image:
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing_mm)))
    return image


def _plan(modality: str, config: DoseConfig) -> Plan:
    from pyRadPlan import IonPlan, PhotonPlan

    grid = {"dose_grid": {"resolution": dict.fromkeys(("x", "y", "z"), config.dose_grid_mm)}}
    solver: dict[str, object] = {"name": config.solver}
    if config.solver == "ipopt":
        solver["display"] = False
        solver["options"] = {"sb": "yes"}  # no IPOPT banner on stdout
    common = {"num_of_fractions": 1, "prescribed_dose": config.prescription_gy}
    if modality == "photon":
        angles = [360.0 * i / config.photon_beams for i in range(config.photon_beams)]
        pln = PhotonPlan(machine="Generic", **common)
        pln.prop_stf = {"gantry_angles": angles, "couch_angles": [0.0] * len(angles),
                        "bixel_width": config.photon_bixel_mm, "generator": "photonIMRT"}
        pln.prop_dose_calc = {**grid, "engine": "SVDPB"}
    elif modality == "proton":
        angles = list(config.proton_gantry_deg)
        pln = IonPlan(radiation_mode="protons", machine="Generic", **common)
        pln.prop_stf = {"gantry_angles": angles, "couch_angles": [0.0] * len(angles),
                        "bixel_width": config.proton_spot_mm, "longitudinal_spot_spacing": config.proton_layer_mm,
                        "generator": "IMPT"}
        pln.prop_dose_calc = {**grid, "engine": "HongPB"}
    else:
        raise ValueError(f"unknown modality {modality!r}")
    pln.prop_opt = {"solver": solver, "max_iter": config.max_iterations}
    return pln


def _structure_set(ct: CT, structures: Structures, body: np.ndarray, spacing_mm: tuple[float, ...],
                   rx: float) -> StructureSet:
    from pyRadPlan.cst import create_voi, validate_cst
    from pyRadPlan.optimization.objectives import SquaredDeviation, SquaredOverdosing

    def voi(name: str, kind: str, mask: np.ndarray, objective: object) -> VOI:
        return create_voi(name=name, voi_type=kind, mask=_image(mask.astype(np.uint8), spacing_mm), ct_image=ct,
                          objectives=[objective])

    vois = [voi("PTV", "TARGET", structures.ptv, SquaredDeviation(priority=PTV_PRIORITY, d_ref=rx))]
    for name, mask in structures.oars.items():
        vois.append(voi(name, "OAR", mask, SquaredOverdosing(priority=OAR_PRIORITY, d_max=OAR_LIMIT_FRACTION * rx)))
    vois.append(voi("BODY", "OAR", body, SquaredOverdosing(priority=BODY_PRIORITY, d_max=BODY_LIMIT_FRACTION * rx)))
    return validate_cst(vois, ct=ct)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence pyRadPlan's warnings, per-beam progress bars and printouts (errors still raise)."""
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        logging.getLogger("pyRadPlan").setLevel(logging.ERROR)
        yield


def _forward(ct: CT, cst: StructureSet, stf: SteeringInformation, pln: Plan, weights: np.ndarray) -> sitk.Image:
    """Dose (sitk, dose grid) of the beamlet ``weights`` on ``ct``: pyRadPlan's forward calculation without its
    final resampling to the CT grid (pyRadPlan 0.5.0 internals: ``_calc_dose_direct``, ``_calc_dose``). Used for
    open fields (the physics tests); plans use influence matrices."""
    from pyRadPlan.dose.engines import get_engine

    engine = get_engine(pln)
    engine._calc_dose_direct = True
    index = 0
    for beam in stf.beams:
        for ray in beam.rays:
            for beamlet in ray.beamlets:
                beamlet.weight = float(weights[index])
                index += 1
    dij = engine._calc_dose(ct, cst, stf)
    return dij.compute_result_dose_grid(np.ones(dij.total_num_of_bixels, dtype=np.float32))["physical_dose"]


def _zyx(xyz: Sequence[float]) -> tuple[float, float, float]:
    """An (x, y, z) SimpleITK triple in (z, y, x) order."""
    x, y, z = xyz
    return (float(z), float(y), float(x))


def _resample(array: np.ndarray, spacing_mm: tuple[float, ...], new_spacing_mm: float) -> np.ndarray:
    """Linear resampling of a (z, y, x) array onto an isotropic grid with the same origin (voxel 0 at 0 mm)."""
    image = _image(array.astype(np.float32, copy=False), spacing_mm)
    size = [max(1, int(np.floor((n - 1) * s / new_spacing_mm)) + 1) for n, s in zip(image.GetSize(), image.GetSpacing(),
                                                                                 strict=True)]
    resampled = sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, (0.0, 0.0, 0.0), (new_spacing_mm,) * 3,
                              image.GetDirection(), 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled)


def _coarsen(
    ct_hu: np.ndarray, sct_hu: np.ndarray, body: np.ndarray, structures: Structures, spacing_mm: tuple[float, ...],
    grid_mm: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Structures, tuple[float, ...]]:
    """CT, sCT, body and structures on the ``grid_mm`` grid when the CT is finer (``grid_mm`` 0: unchanged)."""
    if grid_mm <= 0.0 or min(spacing_mm) >= grid_mm:
        return ct_hu, sct_hu, body, structures, spacing_mm
    coarse = Structures(_resample(structures.ptv, spacing_mm, grid_mm) >= 0.5,
                        {name: _resample(m, spacing_mm, grid_mm) >= 0.5 for name, m in structures.oars.items()},
                        structures.source, structures.details)
    return (_resample(ct_hu, spacing_mm, grid_mm), _resample(sct_hu, spacing_mm, grid_mm),
            _resample(body, spacing_mm, grid_mm) >= 0.5, coarse, (grid_mm,) * 3)


def _to_grid(mask: np.ndarray, spacing_mm: tuple[float, ...], reference: sitk.Image) -> np.ndarray:
    """A CT-grid mask resampled onto the dose grid (linear, ≥ 0.5 inside)."""
    resampled = sitk.Resample(_image(mask.astype(np.float32), spacing_mm), reference, sitk.Transform(),
                              sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled) >= 0.5


def plan_and_recalculate(
    ct_hu: np.ndarray,
    sct_hu: np.ndarray,
    body: np.ndarray,
    spacing_mm: tuple[float, ...],
    structures: Structures,
    modality: str,
    config: DoseConfig,
) -> PlanResult:
    """Optimise a ``modality`` plan on the CT, recalculate it on the sCT; arrays (z, y, x), spacing (z, y, x) mm."""
    from pyRadPlan import calc_dose_influence, fluence_optimization, generate_stf
    from pyRadPlan.ct import validate_ct

    rx = config.prescription_gy
    seconds: dict[str, float] = {}
    stage = "setup"
    try:
        with _quiet():
            start = time.perf_counter()
            ct_hu, sct_hu, body, structures, spacing_mm = _coarsen(ct_hu, sct_hu, body > 0, structures, spacing_mm,
                                                                   config.ct_grid_mm)
            ct_values = np.where(body, ct_hu, config.outside_body_hu).astype(np.float32)
            ct = validate_ct(cube_hu=_image(ct_values, spacing_mm))
            del ct_values
            cst = _structure_set(ct, structures, body, spacing_mm, rx)
            pln = _plan(modality, config)
            stage = "beam geometry"
            stf = generate_stf(ct, cst, pln)
            seconds["setup"] = time.perf_counter() - start
            stage, start = "dose influence", time.perf_counter()
            dij = calc_dose_influence(ct, cst, stf, pln)
            seconds["dose_influence_ct"] = time.perf_counter() - start
            stage, start = "fluence optimisation", time.perf_counter()
            opt_info: dict = {}
            weights = np.asarray(fluence_optimization(ct, cst, stf, dij, pln, opt_info=opt_info), dtype=np.float64)
            seconds["optimisation"] = time.perf_counter() - start
            if not np.all(np.isfinite(weights)) or weights.max(initial=0.0) <= 0.0:
                raise PlanningError("fluence optimisation returned no usable weights")
            dose_grid_image = dij.compute_result_dose_grid(weights)["physical_dose"]
            del dij
            ptv_grid = _to_grid(structures.ptv, spacing_mm, dose_grid_image)
            if not ptv_grid.any():
                raise PlanningError(f"the PTV vanishes on the {config.dose_grid_mm} mm dose grid")
            ct_gy = sitk.GetArrayFromImage(dose_grid_image).astype(np.float32)
            ptv_mean = float(ct_gy[ptv_grid].mean())
            if ptv_mean <= 0.0:
                raise PlanningError("the optimised plan gives the PTV no dose")
            scale = rx / ptv_mean
            weights *= scale
            ct_gy *= np.float32(scale)
            stage, start = "dose on sCT", time.perf_counter()
            sct_values = np.where(body, sct_hu, config.outside_body_hu).astype(np.float32)
            sct = validate_ct(cube_hu=_image(sct_values, spacing_mm))
            del sct_values, ct
            sct_cst = _structure_set(sct, structures, body, spacing_mm, rx)
            sct_dij = calc_dose_influence(sct, sct_cst, stf, pln)
            sct_image = sct_dij.compute_result_dose_grid(weights)["physical_dose"]
            del sct_dij
            sct_gy = sitk.GetArrayFromImage(sct_image).astype(np.float32)
            seconds["dose_influence_sct"] = time.perf_counter() - start
    except PlanningError:
        raise
    except Exception as exc:
        raise PlanningError(f"{modality} {stage} failed: {type(exc).__name__}: {exc}") from exc
    nz, ny, nx = _zyx(dose_grid_image.GetSize())
    grid = DoseGrid((int(nz), int(ny), int(nx)), _zyx(dose_grid_image.GetSpacing()), _zyx(dose_grid_image.GetOrigin()))
    oars = {name: _to_grid(mask, spacing_mm, dose_grid_image) for name, mask in structures.oars.items()}
    body_grid = _to_grid(body, spacing_mm, dose_grid_image)
    optimiser = {"solver": config.solver, "max_iterations": config.max_iterations,
                 "iterations": opt_info.get("num_iter"), "beamlets": int(weights.size), "scale_to_rx": scale}
    return PlanResult(ct_gy, sct_gy, grid, ptv_grid, oars, body_grid, weights, seconds, optimiser)
