"""Tissue classes of the phantoms, with CT (HU) and T1-weighted MR properties per region.

For each tissue a case draws its mean HU uniformly from ``hu_mean``; CT texture adds a correlated deviation of
standard deviation ``hu_texture``; ``hu_range`` is the range tests hold the tissue's voxels to (before
partial-volume smoothing). MR intensities are relative to the region's reference tissue (white matter in the
brain and head-and-neck, fat in the pelvis, thorax and abdomen) and drawn per case from ``mr_relative``, so
contrast varies between cases. Cortical bone, teeth, air, bowel gas and lung are all dark in T1 MR (lung has
almost no proton signal): intensity alone cannot tell bone from air or lung. The couch (thorax, abdomen) is in
the CT only, as on real planning CTs; MR shows no couch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BACKGROUND = 0
SKIN = 1
FAT = 2
MUSCLE = 3
SOFT_TISSUE = 4
GREY_MATTER = 5
WHITE_MATTER = 6
CSF = 7
CORTICAL_BONE = 8
CANCELLOUS_BONE = 9
INTERNAL_AIR = 10
EYE = 11
LENS = 12
URINE = 13
BOWEL = 14
TEETH = 15
MARROW = 16
BLOOD = 17
FAECES = 18
LUNG = 19
LIVER = 20
KIDNEY = 21
SPLEEN = 22
HEART = 23
FLUID = 24
CARTILAGE = 25
TABLE_SHELL = 26
TABLE_FOAM = 27

TISSUE_NAMES: dict[int, str] = {
    BACKGROUND: "background",
    SKIN: "skin",
    FAT: "fat",
    MUSCLE: "muscle",
    SOFT_TISSUE: "soft_tissue",
    GREY_MATTER: "grey_matter",
    WHITE_MATTER: "white_matter",
    CSF: "csf",
    CORTICAL_BONE: "cortical_bone",
    CANCELLOUS_BONE: "cancellous_bone",
    INTERNAL_AIR: "internal_air",
    EYE: "eye",
    LENS: "lens",
    URINE: "urine",
    BOWEL: "bowel",
    TEETH: "teeth",
    MARROW: "marrow",
    BLOOD: "blood",
    FAECES: "faeces",
    LUNG: "lung",
    LIVER: "liver",
    KIDNEY: "kidney",
    SPLEEN: "spleen",
    HEART: "heart",
    FLUID: "fluid",
    CARTILAGE: "cartilage",
    TABLE_SHELL: "table_shell",
    TABLE_FOAM: "table_foam",
}
N_LABELS = max(TISSUE_NAMES) + 1

SIGNAL_VOID = (0.0, 0.015)
"""MR intensity (relative to the reference tissue) of tissues with no usable T1/T2 signal: air and gas (no protons),
cortical bone and teeth (T2* below 1 ms, gone by any clinical echo time). All sit at the noise floor, so their MR
values overlap almost entirely (see :func:`synthct.phantom.contrast.mr_overlap`), and only anatomy can tell them
apart."""


@dataclass(frozen=True)
class Tissue:
    """CT and MR properties of one tissue (see the module docstring)."""

    hu_mean: tuple[float, float]
    hu_texture: float
    hu_range: tuple[float, float]
    mr_relative: tuple[float, float]
    mr_texture: float = 0.03


_COMMON: dict[int, Tissue] = {
    BACKGROUND: Tissue((-1000, -1000), 0.0, (-1024, -950), (0.0, 0.0), 0.0),
    SKIN: Tissue((30, 60), 8.0, (-20, 110), (0.55, 0.75)),
    FAT: Tissue((-110, -80), 10.0, (-160, -30), (1.0, 1.0)),
    MUSCLE: Tissue((40, 60), 8.0, (0, 100), (0.35, 0.5)),
    SOFT_TISSUE: Tissue((30, 55), 8.0, (-10, 95), (0.45, 0.65)),
    CSF: Tissue((3, 15), 3.0, (-15, 35), (0.12, 0.25)),
    INTERNAL_AIR: Tissue((-990, -940), 15.0, (-1024, -850), SIGNAL_VOID, 0.0),
    BLOOD: Tissue((35, 50), 5.0, (10, 75), (0.15, 0.45)),
}

BRAIN_TISSUES: dict[int, Tissue] = {
    **_COMMON,
    FAT: Tissue((-110, -80), 10.0, (-160, -30), (1.1, 1.45)),
    MUSCLE: Tissue((40, 60), 8.0, (0, 100), (0.45, 0.6)),
    GREY_MATTER: Tissue((35, 45), 3.0, (20, 60), (0.55, 0.75)),
    WHITE_MATTER: Tissue((24, 32), 3.0, (10, 45), (1.0, 1.0)),
    CORTICAL_BONE: Tissue((1400, 1700), 110.0, (1200, 1900), SIGNAL_VOID, 0.0),
    CANCELLOUS_BONE: Tissue((420, 580), 60.0, (300, 700), (0.55, 0.9), 0.08),
    EYE: Tissue((5, 18), 3.0, (-10, 35), (0.12, 0.25)),
    LENS: Tissue((75, 105), 5.0, (50, 130), (0.5, 0.75)),
    TEETH: Tissue((2100, 2600), 120.0, (1800, 3000), SIGNAL_VOID, 0.0),
}

PELVIS_TISSUES: dict[int, Tissue] = {
    **_COMMON,
    MUSCLE: Tissue((40, 60), 8.0, (0, 100), (0.3, 0.45)),
    CORTICAL_BONE: Tissue((1100, 1450), 100.0, (850, 1750), SIGNAL_VOID, 0.0),
    CANCELLOUS_BONE: Tissue((170, 300), 50.0, (60, 420), (0.55, 0.85), 0.08),
    MARROW: Tissue((-40, 40), 12.0, (-90, 90), (0.75, 0.95)),
    URINE: Tissue((2, 15), 4.0, (-15, 35), (0.06, 0.18)),
    BOWEL: Tissue((25, 45), 8.0, (-10, 80), (0.35, 0.55)),
    FAECES: Tissue((-60, 20), 25.0, (-140, 90), (0.25, 0.6), 0.1),
}

HN_TISSUES: dict[int, Tissue] = {
    **BRAIN_TISSUES,
    CANCELLOUS_BONE: Tissue((250, 380), 45.0, (120, 520), (0.55, 0.85), 0.08),
    CARTILAGE: Tissue((120, 200), 20.0, (50, 280), (0.25, 0.4)),
    LUNG: Tissue((-880, -820), 30.0, (-970, -720), (0.01, 0.05), 0.3),
}
"""Head and neck: the brain phantom's head (diploë and vertebrae less dense than the brain's skull diploë),
laryngeal and tracheal cartilage, lung apices."""

_TRUNK: dict[int, Tissue] = {
    **_COMMON,
    MUSCLE: Tissue((40, 60), 8.0, (0, 100), (0.3, 0.45)),
    CORTICAL_BONE: Tissue((1050, 1450), 100.0, (800, 1800), SIGNAL_VOID, 0.0),
    CANCELLOUS_BONE: Tissue((200, 320), 45.0, (80, 450), (0.55, 0.85), 0.08),
    INTERNAL_AIR: Tissue((-1000, -980), 8.0, (-1024, -900), SIGNAL_VOID, 0.0),
    LUNG: Tissue((-880, -810), 35.0, (-980, -700), (0.01, 0.05), 0.3),
    LIVER: Tissue((55, 65), 6.0, (30, 90), (0.5, 0.7)),
    KIDNEY: Tissue((28, 40), 6.0, (5, 65), (0.35, 0.55)),
    SPLEEN: Tissue((45, 55), 6.0, (25, 80), (0.35, 0.5)),
    HEART: Tissue((40, 55), 6.0, (15, 80), (0.35, 0.5)),
    FLUID: Tissue((0, 20), 5.0, (-20, 40), (0.06, 0.2)),
    CARTILAGE: Tissue((120, 200), 20.0, (50, 280), (0.25, 0.4)),
    BOWEL: Tissue((25, 45), 8.0, (-10, 80), (0.35, 0.55)),
    FAECES: Tissue((-60, 20), 25.0, (-140, 90), (0.25, 0.6), 0.1),
    TABLE_SHELL: Tissue((250, 450), 30.0, (100, 600), (0.0, 0.0), 0.0),
    TABLE_FOAM: Tissue((-960, -920), 8.0, (-1000, -850), (0.0, 0.0), 0.0),
}
"""Thorax and abdomen (unenhanced CT: liver 55-65 HU, blood ~40 HU, lung ~-850 HU, gas ~-1000 HU)."""

TISSUES: dict[str, dict[int, Tissue]] = {"brain": BRAIN_TISSUES, "pelvis": PELVIS_TISSUES, "hn": HN_TISSUES,
                                         "th": _TRUNK, "ab": _TRUNK}


def draw_table(tissues: dict[int, Tissue], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                              np.ndarray]:
    """Per-case look-up tables indexed by label: (HU mean, HU texture sd, MR relative intensity, MR texture sd).

    Signal-void tissues (:data:`SIGNAL_VOID`) all take the first one's draw: one noise floor per case."""
    hu_mean = np.zeros(N_LABELS, dtype=np.float32)
    hu_texture = np.zeros(N_LABELS, dtype=np.float32)
    mr = np.zeros(N_LABELS, dtype=np.float32)
    mr_texture = np.zeros(N_LABELS, dtype=np.float32)
    hu_mean[:] = -1000.0
    void: float | None = None
    for label in sorted(tissues):
        tissue = tissues[label]
        hu_mean[label] = rng.uniform(*tissue.hu_mean)
        hu_texture[label] = tissue.hu_texture
        mr[label] = rng.uniform(*tissue.mr_relative)
        if tissue.mr_relative == SIGNAL_VOID:  # one noise floor per case, shared by every signal-void tissue
            void = float(mr[label]) if void is None else void
            mr[label] = void
        mr_texture[label] = tissue.mr_texture
    return hu_mean, hu_texture, mr, mr_texture
