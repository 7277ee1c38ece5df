"""Data of ``bench_recipes.py``: one dataset and one split per region, made once, used by both recipes.

- **brain**: small brain phantoms (``synthct phantom --size small``: the anatomy at half scale on a 1 mm grid) plus
  cases simulated from Debian's real head CT (invesalius-examples ``Cranium.inv3``, ``synthct phantom --from-ct``).
  That CT (0.96 × 0.96 × 1.5 mm) is first resampled to 2 mm and stored with 1 mm spacing, i.e. the same half-scale
  anatomy on the same 1 mm grid as the small phantoms: training does not resample, so one grid keeps the model's
  training spacing (the median over the training cases) true for every case, and a validation volume stays
  ~1.2 M voxels. Its cases are renamed ``1BR001…`` (R: real CT) next to the phantoms' ``1BA001…``.
- **pelvis**: small pelvis phantoms only (no real pelvis CT here).
- The split is stratified: a seeded fraction of each source goes to validation (at least one case of each).
- The real-size case for the speed figure is the real head CT at its own size and spacing with a simulated MR.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))

from from_ct_example import read_inv3  # noqa: E402

from synthct.dataset import make_split, write_split  # noqa: E402
from synthct.io import array_to_image, write_image  # noqa: E402

INV3 = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
HEAD_SCALE_MM = 2.0
"""The real head CT is resampled to this spacing (mm), then labelled 1 mm: half-scale like the small phantoms."""
REAL_PREFIX = "1BR"


def synthct(arguments: list[str], log_path: Path) -> None:
    """Run ``python -m synthct ARGS`` with its output in ``log_path``; raise with the log's tail on failure."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as handle:
        code = subprocess.call([sys.executable, "-m", "synthct", *arguments], stdout=handle,
                               stderr=subprocess.STDOUT)
    if code != 0:
        tail = "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-25:])
        raise RuntimeError(f"synthct {arguments[0]} failed (exit {code}); {log_path}:\n{tail}")


def region_dir(data_root: Path, region: str) -> Path:
    """Where a region's cases are: ``DATA/Task1/<region>/<ID>/{mr,ct,mask}.mha``."""
    return data_root / "Task1" / region


def make_phantoms(data_root: Path, region: str, cases: int, seed: int, logs: Path) -> list[str]:
    """``cases`` small phantoms of ``region``; returns their ids."""
    synthct(["phantom", "--out", str(data_root), "--region", region, "--cases", str(cases), "--seed", str(seed),
             "--size", "small", "--no-progress"], logs / f"phantom_{region}.log")
    return sorted(p.name for p in region_dir(data_root, region).iterdir() if p.is_dir()
                  and not p.name.startswith(REAL_PREFIX))


def head_ct_half_scale(inv3: Path, out: Path) -> Path:
    """The real head CT resampled to :data:`HEAD_SCALE_MM` (linear, −1024 HU outside) and stored with 1 mm
    spacing; returns the .mha path."""
    source = read_inv3(inv3)
    size = [max(1, round(n * s / HEAD_SCALE_MM)) for n, s in zip(source.GetSize(), source.GetSpacing(), strict=True)]
    resampled = sitk.Resample(source, size, sitk.Transform(), sitk.sitkLinear, source.GetOrigin(),
                              (HEAD_SCALE_MM,) * 3, source.GetDirection(), -1024.0, sitk.sitkInt16)
    resampled.SetSpacing((1.0, 1.0, 1.0))
    return write_image(resampled, out)


def make_head_cases(inv3: Path, data_root: Path, cases: int, seed: int, work: Path, logs: Path) -> list[str]:
    """``cases`` brain cases simulated from the half-scale real head CT, moved in as ``1BR001…``; returns ids."""
    ct_path = head_ct_half_scale(inv3, work / "head_ct_half_scale.mha")
    staging = work / "from_ct_staging"
    shutil.rmtree(staging, ignore_errors=True)
    synthct(["phantom", "--from-ct", str(ct_path), "--out", str(staging), "--region", "brain", "--cases",
             str(cases), "--seed", str(seed), "--no-progress"], logs / "phantom_from_ct.log")
    target = region_dir(data_root, "brain")
    target.mkdir(parents=True, exist_ok=True)
    ids = []
    for index, folder in enumerate(sorted(p for p in region_dir(staging, "brain").iterdir() if p.is_dir()), 1):
        identifier = f"{REAL_PREFIX}{index:03d}"
        shutil.move(str(folder), str(target / identifier))
        ids.append(identifier)
    shutil.rmtree(staging)
    return ids


def stratified_split(groups: dict[str, list[str]], val_fraction: float, seed: int, path: Path) -> dict:
    """One seeded split per source group (each with ≥ 1 validation case when it has ≥ 2 cases), merged; written
    to ``path``."""
    train: list[str] = []
    val: list[str] = []
    for name in sorted(groups):
        ids = groups[name]
        if len(ids) == 1:
            train.extend(ids)
            continue
        part = make_split(ids, val_fraction, seed)
        train.extend(part["train"])
        val.extend(part["val"])
    split = {"seed": seed, "val_fraction": val_fraction, "train": sorted(train), "val": sorted(val),
             "groups": {k: sorted(v) for k, v in groups.items()}}
    write_split(path, split)
    return split


def link_inputs(data_root: Path, region: str, case_ids: list[str], out: Path) -> tuple[Path, Path]:
    """``out/mr/<ID>.mha`` and ``out/mask/<ID>.mha`` links to the cases' files (``synthct predict``'s input)."""
    for kind in ("mr", "mask"):
        (out / kind).mkdir(parents=True, exist_ok=True)
        for case_id in case_ids:
            link = out / kind / f"{case_id}.mha"
            if not link.exists():
                link.symlink_to((region_dir(data_root, region) / case_id / f"{kind}.mha").resolve())
    return out / "mr", out / "mask"


def real_size_head(inv3: Path, out: Path, seed: int) -> dict[str, object]:
    """The real head CT at full size with a simulated MR and body mask: ``out/mr/head.mha``, ``out/mask/head.mha``
    (``out/ct.mha`` for reference). Returns its size (x, y, z) and spacing (x, y, z) mm."""
    from synthct.phantom.from_ct import simulate_pair

    source = read_inv3(inv3)
    hu = sitk.GetArrayFromImage(source).astype(np.float32)
    ct, mr, mask, _ = simulate_pair(hu, tuple(float(s) for s in source.GetSpacing()[::-1]), "brain", seed)
    write_image(array_to_image(mr, source), out / "mr" / "head.mha")
    write_image(array_to_image(mask, source), out / "mask" / "head.mha")
    write_image(array_to_image(ct, source), out / "ct.mha")
    return {"size_xyz": list(source.GetSize()), "spacing_xyz_mm": [round(s, 4) for s in source.GetSpacing()],
            "source": str(inv3)}
