"""``synthct package``: model packages → the grand-challenge "algorithm model" tarball (SPEC §13).

Grand-challenge extracts an algorithm's uploaded model (``model.tar.gz``) into ``/opt/ml/model/``, where the
algorithm container looks first (:func:`synthct.algorithm.container.locate_models`). The tarball holds one package at
its
root (``model.json``, ``model.onnx``, …) or ``<region>/`` packages: exactly ``model.json`` and the files it lists,
each verified against its sha256 first, so it extracts to what ``synthct predict --model`` and the container load.
Files the manifest does not list are left out (and named). It is deterministic: entries sorted, mtime 0, owner
0:0 without names, modes 0644/0755, no name or time in the gzip header — the same packages give the same bytes
whatever the files' dates. A layout that would not load (no ``model.json``, a hash mismatch, two packages for one
region, a ``<region>/`` folder holding another region's package) is refused and nothing is written.

    synthct package models/brain --out model.tar.gz        # one package (at the tarball's root)
    synthct package models --out model.tar.gz              # models/<region>/ packages
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from synthct.algorithm.cases import find_model_packages

from synthct.atomic import temp_prefix
from synthct.model_package import MANIFEST_NAME, ModelPackageError, load_model_package, sha256_of

log = logging.getLogger(__name__)

FIXED_MTIME = 0
"""Every entry's modification time (and the gzip header's): the tarball's bytes depend on the files only."""


class ArchiveError(ValueError):
    """A package folder or tarball whose layout would not load; the message names the file and the problem."""


@dataclass(frozen=True)
class TarballInfo:
    """A written (or checked) algorithm-model tarball."""

    path: Path
    size: int
    sha256: str
    packages: dict[str, str]
    """Region → the package's folder inside the tarball (``""``: its root)."""
    files: list[str]
    left_out: list[str]


def visible_entries(folder: Path) -> list[Path]:
    """The folder's entries without hidden names (``.name``), sorted; empty when it is no folder."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def describe_contents(folder: Path, limit: int = 8) -> str:
    """What a folder without a usable package holds: its first entries and any ``model.json`` found deeper."""
    entries = visible_entries(folder)
    if not entries:
        return "it is empty" if folder.is_dir() else "it does not exist"
    names = [p.name + ("/" if p.is_dir() else "") for p in entries[:limit]]
    more = f" and {len(entries) - limit} more" if len(entries) > limit else ""
    text = f"found {', '.join(names)}{more}"
    deeper = sorted(str(p.relative_to(folder)) for p in folder.rglob(MANIFEST_NAME)
                    if len(p.relative_to(folder).parts) > 2)
    if deeper:
        text += (f"; model.json only deeper down ({', '.join(deeper[:3])}): make the tarball from the folder that "
                 "holds the package(s)")
    return text


def manifest_files(manifest: dict[str, Any]) -> list[str]:
    """The file names a manifest pins by sha256 (``onnx``, its external data, ``onnx_fp16``, ``tensorrt``, …)."""
    names: list[str] = []
    for value in manifest.values():
        if not isinstance(value, dict):
            continue
        for entry in (value, value.get("external_data")):
            if isinstance(entry, dict) and isinstance(entry.get("file"), str) and isinstance(entry.get("sha256"), str):
                names.append(entry["file"])
    return sorted(set(names))


def check_package_folder(source: Path) -> tuple[dict[str, Path], list[str]]:
    """Verified packages under ``source`` (region → folder) and the files not listed by any manifest.

    Raises :class:`ArchiveError` for a layout that would not load (see the module docstring).
    """
    if not source.is_dir():
        raise ArchiveError(f"{source}: not a folder")
    problems: list[str] = []
    try:
        found = find_model_packages(source, problems)
    except ModelPackageError as exc:
        raise ArchiveError(str(exc)) from exc
    if problems:
        raise ArchiveError("; ".join(problems))
    if not found:
        raise ArchiveError(f"{source}: no model package (model.json at its root or in <region>/ sub-folders); "
                           f"{describe_contents(source)}")
    if not (source / MANIFEST_NAME).is_file():
        candidates = [p for p in visible_entries(source) if p.is_dir() and (p / MANIFEST_NAME).is_file()]
        extra = sorted(set(candidates) - set(found.values()))
        if extra:
            raise ArchiveError(f"{source}: several packages for one region ({', '.join(p.name for p in extra)} "
                               f"duplicate {', '.join(sorted(found))}); keep one package per region")
    left_out: list[str] = []
    for region, folder in sorted(found.items()):
        try:
            package = load_model_package(folder, expected_region=region)
        except ModelPackageError as exc:
            raise ArchiveError(str(exc)) from exc
        listed = {MANIFEST_NAME, *manifest_files(package.manifest)}
        left_out += [str(path.relative_to(source)) for path in sorted(folder.rglob("*"))
                     if path.is_file() and str(path.relative_to(folder)) not in listed]
    return found, left_out


def _tar_info(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.size, info.mode, info.mtime = size, 0o755 if directory else 0o644, FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_tarball(source: str | os.PathLike[str], out: str | os.PathLike[str]) -> TarballInfo:
    """Write the algorithm-model tarball of the packages under ``source`` to ``out`` (atomically), then re-read
    and verify it. Raises :class:`ArchiveError` (nothing written) for a layout that would not load."""
    source, out = Path(source).resolve(), Path(out)
    packages, left_out = check_package_folder(source)
    members: list[tuple[str, Path]] = []
    prefixes: dict[str, str] = {}
    for region, folder in sorted(packages.items()):
        prefix = "" if folder == source else folder.name + "/"
        prefixes[region] = prefix.rstrip("/")
        manifest = load_model_package(folder, expected_region=region).manifest
        members += [(prefix + name, folder / name) for name in (MANIFEST_NAME, *manifest_files(manifest))]
    members.sort()
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=temp_prefix(out.name), suffix=".tar.gz", dir=out.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=FIXED_MTIME, compresslevel=6) as zipped, \
                tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for folder_name in sorted({p for p in prefixes.values() if p}):
                tar.addfile(_tar_info(folder_name, directory=True))
            for name, path in members:
                with open(path, "rb") as data:
                    tar.addfile(_tar_info(name, path.stat().st_size), data)
        with tempfile.TemporaryDirectory(prefix="synthct-package-check-") as scratch:
            extract_tarball(temp, Path(scratch))
        os.replace(temp, out)
    finally:
        temp.unlink(missing_ok=True)
    return TarballInfo(out, out.stat().st_size, sha256_of(out), prefixes, [name for name, _ in members], left_out)


def extract_tarball(tarball: str | os.PathLike[str], dest: str | os.PathLike[str]) -> dict[str, Path]:
    """Extract an algorithm-model tarball into ``dest`` (as grand-challenge does into ``/opt/ml/model``) and verify
    the packages it holds; region → folder. Raises :class:`ArchiveError` naming the tarball and the problem."""
    tarball, dest = Path(tarball), Path(dest)
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar.getmembers():
                parts = PurePosixPath(member.name).parts
                if not (member.isfile() or member.isdir()):
                    raise ArchiveError(f"{tarball}: {member.name}: not a regular file or folder (links and devices "
                                       "are refused)")
                if PurePosixPath(member.name).is_absolute() or ".." in parts:
                    raise ArchiveError(f"{tarball}: {member.name}: path outside the model folder")
            tar.extractall(dest, filter="data")
    except ArchiveError:
        raise
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise ArchiveError(f"{tarball}: not a readable .tar.gz ({exc})") from exc
    try:
        packages, _ = check_package_folder(dest)
    except ArchiveError as exc:
        raise ArchiveError(f"{tarball}: {str(exc).replace(str(dest), '<tarball root>')}") from exc
    return packages


def tarball_info(tarball: str | os.PathLike[str]) -> TarballInfo:
    """Check an existing tarball (extracted into a scratch folder) and describe it."""
    tarball = Path(tarball)
    if not tarball.is_file():
        raise ArchiveError(f"{tarball}: file not found")
    with tempfile.TemporaryDirectory(prefix="synthct-package-check-") as scratch:
        packages = extract_tarball(tarball, Path(scratch))
        root = Path(scratch).resolve()
        prefixes = {region: "" if folder.resolve() == root else str(folder.resolve().relative_to(root))
                    for region, folder in packages.items()}
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    return TarballInfo(tarball, tarball.stat().st_size, sha256_of(tarball), prefixes, files, [])


def human_size(size: int) -> str:
    """``1536`` → ``"1.5 kB"`` (decimal units, as the 10 GB limit is stated)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"  # pragma: no cover - the loop returns


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("package", type=Path, metavar="PACKAGE_DIR",
                        help="a model package folder (model.json) or a folder of <region>/ packages")
    parser.add_argument("--out", type=Path, required=True, help="the tarball to write (e.g. model.tar.gz)")


def run(args: argparse.Namespace) -> int:
    try:
        info = write_tarball(args.package, args.out)
    except (ArchiveError, OSError) as exc:
        log.error("%s; no tarball written", exc)
        return 2
    regions = ", ".join(f"{region} ({prefix + '/' if prefix else 'root'})" for region, prefix in info.packages.items())
    print(f"wrote {info.path}: {human_size(info.size)} ({info.size} bytes), sha256 {info.sha256}")
    print(f"  package(s): {regions}; {len(info.files)} file(s): {', '.join(info.files)}")
    if info.left_out:
        print(f"  left out (not listed in model.json): {', '.join(info.left_out)}")
    print("  upload it as the algorithm's model on grand-challenge (extracted to /opt/ml/model/ at inference)")
    return 0
