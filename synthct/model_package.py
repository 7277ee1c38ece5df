"""The model package: ``model.onnx`` (+ optional fp16 graph, TensorRT engine) described by ``model.json``.

Optional fields: ``trust`` (the training record of the out-of-distribution check and the uncertainty's
calibration, :mod:`synthct.trust`), ``geometry`` (the training orientation and spacing,
:class:`synthct.geometry.NetworkGeometry`; inference brings every MR to it), ``onnx_fp16`` (the GPU's fp16
graph, hashed like ``onnx``) and ``backend_accuracy`` (per runtime backend, its measured deviation from the fp32
sCT on validation phantoms and whether it held the bound; a backend without a passing record is not chosen
automatically, see ``synthct.algorithm.backends``).

``model.json`` says how to use the network (region, patch size, intensity conventions) and pins the files by
sha256. :func:`load_model_package` refuses a package whose fields or hashes do not check out, so a wrong or
tampered model is never applied silently. Written by ``export/``, read by ``algorithm/``; no torch here.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthct.atomic import write_json_atomic
from synthct.geometry import NetworkGeometry
from synthct.intensity import BACKGROUND_HU, HU_MAX, HU_MIN, MR_RULES, MrRule
from synthct.regions import (
    Region,
    RegionError,
    canonical_region,
    region_or_none,
)

MANIFEST_NAME = "model.json"
FORMAT = "synthct-model"
FORMAT_VERSION = 1


class ModelPackageError(ValueError):
    """A model package is missing, malformed, or its files do not match their recorded hashes."""


def sha256_of(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelPackage:
    """A verified model package. Paths are absolute; ``manifest`` is the parsed ``model.json``."""

    directory: Path
    manifest: dict[str, Any]

    @property
    def region(self) -> Region:
        """The canonical region (:mod:`synthct.regions`), whatever spelling ``model.json`` uses."""
        return canonical_region(self.manifest["region"])

    @property
    def patch_size(self) -> tuple[int, int, int]:
        """Patch size (z, y, x) in voxels."""
        z, y, x = (int(v) for v in self.manifest["patch_size"])
        return z, y, x

    @property
    def overlap(self) -> float:
        return float(self.manifest["overlap"])

    @property
    def mr_rule(self) -> MrRule:
        """The MR normalisation rule the network was trained with (:func:`synthct.intensity.normalise_mr`)."""
        return self.manifest["mr_normalisation"]["rule"]

    @property
    def mr_percentile(self) -> float:
        return float(self.manifest["mr_normalisation"].get("percentile") or 99.5)

    @property
    def geometry(self) -> NetworkGeometry | None:
        """The training geometry (orientation, spacing) the network expects; None for packages exported before it
        was recorded (inference then runs on the MR's grid as stored, with a warning)."""
        record = self.manifest.get("geometry")
        return NetworkGeometry.from_dict(record) if record is not None else None

    @property
    def trust(self) -> dict[str, Any] | None:
        """The training record of the out-of-distribution check and the uncertainty calibration
        (:mod:`synthct.trust`); None for packages exported without it (the check is then skipped, and said so)."""
        record = self.manifest.get("trust")
        return record if isinstance(record, dict) else None

    @property
    def onnx_path(self) -> Path:
        return self.directory / self.manifest["onnx"]["file"]

    @property
    def input_name(self) -> str:
        return str(self.manifest["input_name"])

    @property
    def output_name(self) -> str:
        return str(self.manifest["output_name"])

    @property
    def onnx_fp16_path(self) -> Path | None:
        """The fp16 graph for the GPU (InstanceNormalization / LayerNormalization kept fp32), if the package has one."""
        entry = self.manifest.get("onnx_fp16")
        return self.directory / entry["file"] if entry else None

    @property
    def tensorrt_path(self) -> Path | None:
        trt = self.manifest.get("tensorrt")
        return self.directory / trt["file"] if trt else None


def write_manifest(directory: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Validate ``manifest`` (hashes are recomputed from the files and must match) and write ``model.json``."""
    directory = Path(directory)
    _validate(directory, manifest, check_hashes=True)
    target = directory / MANIFEST_NAME
    write_json_atomic(target, manifest)
    return target


def file_entry(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{"file": name, "sha256": hex}`` for a file of the package (name relative to the package folder)."""
    path = Path(path)
    return {"file": path.name, "sha256": sha256_of(path)}


def load_model_package(
    directory: str | os.PathLike[str], expected_region: str | None = None, check_hashes: bool = True
) -> ModelPackage:
    """Read and verify ``directory/model.json``: format, required fields, region, and every file's sha256."""
    directory = Path(directory).resolve()
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ModelPackageError(f"{manifest_path}: model manifest not found")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelPackageError(f"{manifest_path}: not valid JSON ({exc})") from exc
    _validate(directory, manifest, check_hashes=check_hashes)
    if expected_region is not None and canonical_region(manifest["region"]) != (region_or_none(expected_region)
                                                                                or expected_region):
        raise ModelPackageError(
            f"{manifest_path}: model is for region {manifest['region']!r}, expected {expected_region!r}"
        )
    return ModelPackage(directory, manifest)


def _validate(directory: Path, manifest: Any, check_hashes: bool) -> None:
    where = directory / MANIFEST_NAME
    if not isinstance(manifest, dict):
        raise ModelPackageError(f"{where}: manifest must be a JSON object")
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ModelPackageError(
            f"{where}: not a {FORMAT} v{FORMAT_VERSION} manifest "
            f"(format={manifest.get('format')!r}, format_version={manifest.get('format_version')!r})"
        )
    required = ("region", "patch_size", "overlap", "input_name", "output_name", "ct_normalisation",
                "mr_normalisation", "background_hu", "onnx")
    missing = [key for key in required if key not in manifest]
    if missing:
        raise ModelPackageError(f"{where}: missing fields {missing}")
    try:
        canonical_region(manifest["region"])
    except RegionError as exc:
        raise ModelPackageError(f"{where}: {exc}") from exc
    patch = manifest["patch_size"]
    if not (isinstance(patch, list) and len(patch) == 3 and all(isinstance(v, int) and v > 0 and v % 32 == 0
                                                               for v in patch)):
        raise ModelPackageError(f"{where}: patch_size must be 3 positive multiples of 32, got {patch!r}")
    overlap = manifest["overlap"]
    if not (isinstance(overlap, int | float) and 0.0 <= overlap < 1.0):
        raise ModelPackageError(f"{where}: overlap must be in [0, 1), got {overlap!r}")
    ct_norm = manifest["ct_normalisation"]
    if not isinstance(ct_norm, dict) or ct_norm.get("hu_min") != HU_MIN or ct_norm.get("hu_max") != HU_MAX:
        raise ModelPackageError(
            f"{where}: ct_normalisation {ct_norm!r} differs from this synthct's [{HU_MIN}, {HU_MAX}] HU"
        )
    mr_norm = manifest["mr_normalisation"]
    if not isinstance(mr_norm, dict) or mr_norm.get("rule") not in MR_RULES:
        raise ModelPackageError(f"{where}: mr_normalisation.rule must be one of {', '.join(map(repr, MR_RULES))}, "
                                f"got {mr_norm!r}")
    if manifest["background_hu"] != BACKGROUND_HU:
        raise ModelPackageError(f"{where}: background_hu {manifest['background_hu']!r} != {BACKGROUND_HU}")
    if manifest.get("geometry") is not None:
        try:
            NetworkGeometry.from_dict(manifest["geometry"])
        except ValueError as exc:
            raise ModelPackageError(f"{where}: {exc}") from exc
    if manifest.get("trust") is not None:  # the training record of the out-of-distribution check (synthct.trust)
        from synthct.trust import validate_record

        try:
            validate_record(manifest["trust"])
        except ValueError as exc:
            raise ModelPackageError(f"{where}: {exc}") from exc
    entries = [("onnx", manifest["onnx"])]
    if manifest["onnx"].get("external_data") if isinstance(manifest["onnx"], dict) else False:
        entries.append(("onnx.external_data", manifest["onnx"]["external_data"]))
    if manifest.get("tensorrt"):
        entries.append(("tensorrt", manifest["tensorrt"]))
    if manifest.get("onnx_fp16"):
        entries.append(("onnx_fp16", manifest["onnx_fp16"]))
    accuracy = manifest.get("backend_accuracy")
    if accuracy is not None and not (isinstance(accuracy, dict) and isinstance(accuracy.get("results"), dict)
                                     and all(isinstance(r, dict) for r in accuracy["results"].values())):
        raise ModelPackageError(f"{where}: backend_accuracy must be an object with a 'results' object per backend")
    for name, entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not isinstance(
            entry.get("sha256"), str
        ):
            raise ModelPackageError(f"{where}: {name} must be an object with 'file' and 'sha256'")
        file_path = directory / entry["file"]
        if Path(entry["file"]).name != entry["file"]:
            raise ModelPackageError(f"{where}: {name}.file must be a plain file name, got {entry['file']!r}")
        if not file_path.is_file():
            raise ModelPackageError(f"{where}: {name} file {file_path} not found")
        if check_hashes:
            actual = sha256_of(file_path)
            if actual != entry["sha256"]:
                raise ModelPackageError(
                    f"{file_path}: sha256 {actual[:16]}… does not match the manifest's {entry['sha256'][:16]}…"
                    " (file changed or corrupted)"
                )
