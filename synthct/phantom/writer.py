"""Write a phantom dataset in the SynthRAD layout: ``OUT/Task1/<folder>/<ID>/{mr,ct,mask}.mha``.

Folders and ids as SynthRAD's: 2023 ``brain``/``pelvis`` with ``1BA001``/``1PA001``; 2025 ``HN``/``TH``/``AB`` with
``1HNA001``/``1THA001``/``1ABA001``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from synthct import __version__
from synthct.atomic import write_json_atomic
from synthct.dataset import REGION_FOLDERS
from synthct.io import write_image
from synthct.phantom.generate import REGIONS, generate_volumes

log = logging.getLogger(__name__)

ID_PREFIX = {"brain": "1BA", "pelvis": "1PA", "hn": "1HNA", "th": "1THA", "ab": "1ABA"}
MANIFEST = "phantom.json"


def case_id(region: str, index: int) -> str:
    """SynthRAD-style id of the ``index``-th case (from 1): ``1BA001`` (brain), ``1PA001`` (pelvis), ``1HNA001``
    (head and neck), ``1THA001`` (thorax), ``1ABA001`` (abdomen)."""
    return f"{ID_PREFIX[region]}{index:03d}"


def case_seed(seed: int, region: str, index: int) -> int:
    """Seed of case ``index`` of a dataset with ``seed``: independent of how many cases are generated."""
    state = np.random.SeedSequence([int(seed), REGIONS.index(region), int(index)]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


def write_phantom_dataset(out_dir: str | os.PathLike[str], region: str, n_cases: int, seed: int = 0,
                          size: str = "small", progress: bool = True) -> list[Path]:
    """Generate ``n_cases`` cases into ``out_dir/Task1/<folder>/`` (compressed .mha, atomic writes) and a
    ``phantom.json`` manifest (region, size, seed, each case's id and seed). Returns the case folders."""
    if region not in REGIONS:
        raise ValueError(f"phantom region must be one of {REGIONS}, got {region!r}")
    if n_cases < 1:
        raise ValueError(f"number of cases must be at least 1, got {n_cases}")
    region_dir = Path(out_dir) / "Task1" / REGION_FOLDERS[region][0]
    expected = {case_id(region, index) for index in range(1, n_cases + 1)}
    stale = sorted(p.name for p in region_dir.glob(f"{ID_PREFIX[region]}*") if p.is_dir() and p.name not in expected)
    if stale:
        log.warning("%s already holds other cases (%s): they are not part of this dataset's manifest", region_dir,
                    ", ".join(stale[:5]) + (" ..." if len(stale) > 5 else ""))
    folders = []
    entries = []
    for index in tqdm(range(1, n_cases + 1), desc=f"phantom {region}", unit="case", disable=not progress):
        identifier, seed_k = case_id(region, index), case_seed(seed, region, index)
        volumes = generate_volumes(region, seed_k, size)
        folder = region_dir / identifier
        write_image(volumes.image(volumes.mr), folder / "mr.mha")
        write_image(volumes.image(volumes.ct_hu), folder / "ct.mha")
        write_image(volumes.image(volumes.mask), folder / "mask.mha")
        folders.append(folder)
        entries.append({"id": identifier, "seed": seed_k})
    write_json_atomic(region_dir / MANIFEST, {"generator": f"synthct {__version__}", "region": region, "size": size,
                                              "seed": int(seed), "cases": entries})
    return folders
