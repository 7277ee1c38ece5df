"""Physics sanity of the dose evaluation (pyRadPlan pencil beams, pymedphys gamma) on small water phantoms.

Needs the dose extra (``make install`` puts it into .venv); skipped with the install command otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest
from synthct.evaluation.dose import INSTALL_HINT, missing_modules

pytestmark = pytest.mark.skipif(bool(missing_modules()), reason=INSTALL_HINT)

SPACING = (2.0, 2.0, 2.0)
AIR, WATER = -1000.0, 0.0


def water_box(shape: tuple[int, int, int], y_start: int, y_stop: int) -> tuple[np.ndarray, np.ndarray]:
    """HU (z, y, x): water for y in [y_start, y_stop), air elsewhere; beams at gantry 0 enter from −y."""
    hu = np.full(shape, AIR, dtype=np.float32)
    hu[:, y_start:y_stop, :] = WATER
    return hu, hu > -500


def _config(**values: object):
    from synthct.evaluation.dose.config import dose_config_from_dict

    return dose_config_from_dict({"dose_grid_mm": 2.0, "max_iterations": 150, **values})


def test_photon_depth_dose_in_water() -> None:
    """An open 10 × 10 cm photon field: maximum at 10–20 mm depth, 60–75 % of it at 10 cm."""
    from pyRadPlan import generate_stf
    from pyRadPlan.ct import validate_ct
    from synthct.evaluation.dose.planning import _forward, _image, _plan, _structure_set
    from synthct.evaluation.dose.structures import Structures

    shape, y_start = (60, 80, 60), 10
    hu, body = water_box(shape, y_start, 78)
    ptv = np.zeros(shape, dtype=bool)
    ptv[5:55, 38:43, 5:55] = True  # 100 mm wide: the beamlets cover a 10 × 10 cm field
    config = _config(photon_beams=1, photon_bixel_mm=10.0)  # 10 × 10 beamlets: an open field, quicker
    ct = validate_ct(cube_hu=_image(hu, SPACING))
    cst = _structure_set(ct, Structures(ptv, {}, "test"), body, SPACING, config.prescription_gy)
    pln = _plan("photon", config)
    stf = generate_stf(ct, cst, pln)
    import SimpleITK as sitk

    dose = sitk.GetArrayFromImage(_forward(ct, cst, stf, pln, np.ones(stf.total_number_of_bixels)))
    axis = dose[30, :, 30]
    depth_mm = (np.arange(shape[1]) - y_start + 0.5) * SPACING[1]  # voxel centre depth below the water surface
    depth_max = depth_mm[int(np.argmax(axis))]
    relative_10cm = float(np.interp(100.0, depth_mm, axis / axis.max()))
    print(f"photon: maximum at {depth_max:.1f} mm, {100 * relative_10cm:.1f} % at 10 cm")
    assert 10.0 <= depth_max <= 20.0, depth_max
    assert 0.60 <= relative_10cm <= 0.75, relative_10cm


@pytest.fixture(scope="module")
def proton_plan():
    """One proton field (gantry 0) on a water slab target 40–80 mm deep; sCT = water + 60 HU."""
    from synthct.evaluation.dose.planning import plan_and_recalculate
    from synthct.evaluation.dose.structures import Structures

    shape, y_start = (30, 70, 30), 5
    hu, body = water_box(shape, y_start, 68)
    ptv = np.zeros(shape, dtype=bool)
    ptv[10:20, y_start + 20 : y_start + 40, 10:20] = True  # depth 40…80 mm
    sct = np.where(body, hu + 60.0, hu).astype(np.float32)
    config = _config(proton_gantry_deg=[0.0], proton_spot_mm=4.0)
    plan = plan_and_recalculate(hu, sct, body, SPACING, Structures(ptv, {}, "test"), "proton", config)
    return plan, y_start, config


def test_proton_distal_80_percent_at_target_depth(proton_plan) -> None:
    """The distal 80 % of the central-axis dose lies within 3 mm of the target's distal edge (80 mm)."""
    plan, y_start, _ = proton_plan
    assert plan.grid.spacing_mm == SPACING and plan.grid.origin_mm == (0.0, 0.0, 0.0)
    axis = plan.ct_gy[15, :, 15]
    peak = int(np.argmax(axis))
    level = 0.8 * float(axis[peak])
    beyond = np.nonzero(axis[peak:] < level)[0][0] + peak  # first voxel below 80 % behind the maximum
    y0, y1 = (beyond - 1) * SPACING[1], beyond * SPACING[1]
    r80_mm = y0 + (axis[beyond - 1] - level) / (axis[beyond - 1] - axis[beyond]) * (y1 - y0)
    distal_edge_mm = (y_start + 40 - 0.5) * SPACING[1]
    print(f"proton: distal 80 % at {r80_mm:.1f} mm, target distal edge {distal_edge_mm:.1f} mm")
    assert abs(r80_mm - distal_edge_mm) <= 3.0, (r80_mm, distal_edge_mm)


def test_proton_soft_tissue_plus_60_hu(proton_plan) -> None:
    """Soft tissue +60 HU in the sCT: proton dose MAE above 2 % Rx and a gamma pass rate below 100 %."""
    from synthct.evaluation.dose.dose_metrics import dose_mae_pct
    from synthct.evaluation.dose.gamma import gamma_pass_rate

    plan, _, config = proton_plan
    mae = dose_mae_pct(plan.ct_gy, plan.sct_gy, config.prescription_gy)
    gamma = gamma_pass_rate(plan.ct_gy, plan.sct_gy, plan.grid.spacing_mm)
    print(f"proton, soft tissue +60 HU: dose MAE {mae:.2f} % Rx, gamma {gamma:.1f} %")
    assert mae > 2.0, mae
    assert gamma < 100.0, gamma
    assert float(plan.ct_gy[plan.ptv].mean()) == pytest.approx(config.prescription_gy, rel=1e-4)


def test_gamma_identical_and_shifted_dose() -> None:
    """Gamma wrapper: identical doses pass 100 %; the same dose shifted by 3 mm fails clearly (< 90 %)."""
    from scipy import ndimage
    from synthct.evaluation.dose.gamma import gamma_pass_rate

    dose = np.zeros((30, 40, 40))
    dose[8:22, 10:30, 12:28] = 2.0
    dose = ndimage.gaussian_filter(dose, 1.5)
    assert gamma_pass_rate(dose, dose, (3.0, 3.0, 3.0)) == 100.0
    shifted = np.roll(dose, 1, axis=2)  # one 3 mm voxel
    rate = gamma_pass_rate(dose, shifted, (3.0, 3.0, 3.0))
    print(f"gamma of a 3 mm shifted dose: {rate:.1f} %")
    assert rate < 90.0, rate
    assert gamma_pass_rate(dose, np.roll(dose, 1, axis=2), (1.0, 1.0, 1.0)) == 100.0  # 1 mm: within 2 mm


def test_gamma_rejects_bad_input() -> None:
    from synthct.evaluation.dose.gamma import gamma_pass_rate

    dose = np.ones((4, 4, 4))
    with pytest.raises(ValueError, match="shape"):
        gamma_pass_rate(dose, np.ones((4, 4, 5)), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="NaN"):
        gamma_pass_rate(dose, np.full((4, 4, 4), np.nan), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="zero"):
        gamma_pass_rate(np.zeros((4, 4, 4)), dose, (1.0, 1.0, 1.0))
