"""The grand-challenge algorithm container (SPEC §5): ``/input`` → ``/output``; ``python -m synthct.algorithm``.

Reads ``/input/images/mri/<name>.{mha,nii.gz,nii,nrrd,mhd}``, the body masks in ``/input/images/body/`` (paired by
case id; a case without one falls back to the automatic body mask of :mod:`synthct.body_mask`, with a warning in the
log and in its results.json entry's ``warnings`` list, unless a given mask pairs with no MR: then the MRs without a
mask fail, as the masks were meant for them) and ``/input/region.json``; writes
``/output/images/synthetic-ct/<name>.mha`` (int16 HU, MR geometry) and ``/output/results.json``. Exit status 0 when
every case succeeded, 1 when any case failed, 2 when nothing could run (among others: an output folder that is
not a writable folder, or is in use by another run; an unexpected error, whose traceback is written to
``/output/synthct-errors.log``). A second run into the same output folder merges results.json per case.

Model packages (SPEC §13): from the grand-challenge "algorithm model", the uploaded tarball extracted to
``/opt/ml/model/`` (``SYNTHCT_ALGORITHM_MODEL``; an empty value turns it off), when that folder holds anything;
else the packages baked into the image (``SYNTHCT_MODELS``). Either holds one package (``model.json`` at its root)
or ``<region>/`` packages. Which one was used is logged and recorded in every results.json entry
(``model_source``). An ``/opt/ml/model`` without a package, a package whose files fail their sha256, or one for
another region than region.json names fail every case with a message saying what was found (exit status 1); so
does a job with no package anywhere.

Environment: ``SYNTHCT_INPUT`` (default /input), ``SYNTHCT_OUTPUT`` (/output), ``SYNTHCT_ALGORITHM_MODEL``
(/opt/ml/model), ``SYNTHCT_MODELS`` (/opt/app/models: ``<region>/model.json`` or one package),
``SYNTHCT_BACKEND`` (auto|onnxruntime|openvino|…), ``SYNTHCT_DEVICE`` (auto|cpu|cuda), ``SYNTHCT_BATCH_SIZE`` (4),
``SYNTHCT_THREADS`` (ONNX Runtime threads), ``SYNTHCT_PROGRESS`` (1/0: progress bar), ``SYNTHCT_RESAMPLE``
(auto|never: bring the MR to the model's training spacing, see :mod:`synthct.geometry`), ``SYNTHCT_UNCERTAINTY``
(off by default; on or a mode of :data:`synthct.trust.UNCERTAINTY_MODES`: also write
``/output/images/synthetic-ct-uncertainty/<MR file name>``), ``SYNTHCT_REFUSE_OOD`` (0/1: a case flagged out of
distribution fails instead of running).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from synthct.algorithm.backends import BACKENDS, DEVICES
from synthct.algorithm.cases import RegionError, find_model_packages, list_images, pair_cases, read_region_file
from synthct.algorithm.model_archive import describe_contents, visible_entries
from synthct.algorithm.runner import ExtraOutputs, ModelRegistry, run_cases, write_results

from synthct.atomic import write_json_atomic
from synthct.geometry import RESAMPLE_MODES
from synthct.model_package import ModelPackageError
from synthct.outputs import OutputError, output_session, report_unexpected

log = logging.getLogger("algorithm")
_Choice = TypeVar("_Choice", bound=str)

EXIT_OK, EXIT_CASE_FAILED, EXIT_FATAL = 0, 1, 2
ALGORITHM_MODEL_DIR = "/opt/ml/model"
"""Where grand-challenge extracts the algorithm's uploaded model tarball."""
BAKED_MODELS_DIR = "/opt/app/models"


@dataclass(frozen=True)
class ModelSource:
    """Where this job's model packages come from; ``problem`` says why none can be used."""

    kind: str
    """``algorithm-model`` (the uploaded tarball in /opt/ml/model) or ``image`` (baked in at build time)."""
    folder: Path
    packages: dict[str, Path]
    problem: str | None = None
    problems: list[str] = field(default_factory=list)
    """Packages found but unusable (e.g. ``model.json`` not JSON), for the "no model installed" message."""

    @property
    def label(self) -> str:
        return "algorithm model" if self.kind == "algorithm-model" else "packages baked into the image"

    def record(self) -> dict[str, Any]:
        """The ``model_source`` of each results.json entry."""
        return {"source": self.kind, "folder": str(self.folder), "regions": sorted(self.packages)}


def _packages_in(folder: Path) -> tuple[dict[str, Path], list[str], str | None]:
    problems: list[str] = []
    try:
        return find_model_packages(folder, problems), problems, None
    except ModelPackageError as exc:
        return {}, problems, str(exc)


def locate_models(env: Mapping[str, str]) -> ModelSource:
    """The algorithm model at ``/opt/ml/model`` when that folder holds anything, else the image's packages."""
    mounted_value = env.get("SYNTHCT_ALGORITHM_MODEL", ALGORITHM_MODEL_DIR).strip()
    baked = Path(env.get("SYNTHCT_MODELS") or BAKED_MODELS_DIR)
    absent = "no algorithm model (SYNTHCT_ALGORITHM_MODEL is empty)"
    if mounted_value:
        mounted = Path(mounted_value)
        try:
            entries = visible_entries(mounted)
        except OSError as exc:
            return ModelSource("algorithm-model", mounted, {}, f"{mounted} (algorithm model): not readable ({exc})")
        if entries:  # an uploaded model wins, and is never silently replaced by the image's
            packages, problems, error = _packages_in(mounted)
            if error is None and not packages:
                error = (f"{mounted} (algorithm model): no model package: {describe_contents(mounted)}; expected "
                         "model.json at its root or in <region>/ sub-folders (write the tarball with `synthct "
                         "package`)" + (f"; unusable: {'; '.join(problems)}" if problems else ""))
            return ModelSource("algorithm-model", mounted, packages, error, problems)
        absent = f"no algorithm model ({mounted} {'is empty' if mounted.is_dir() else 'does not exist'})"
    packages, problems, error = _packages_in(baked)
    if error is None and not packages:
        error = (f"no model package: {absent} and none baked into the image at {baked}; upload the tarball "
                 "written by `synthct package` as the algorithm's model"
                 + (f" (unusable: {'; '.join(problems)})" if problems else ""))
    return ModelSource("image", baked, packages, error, problems)


def _env_int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer") from None
    if number < 1:
        raise ValueError(f"{name}={value!r} must be at least 1")
    return number


def _env_choice(env: Mapping[str, str], name: str, choices: tuple[_Choice, ...]) -> _Choice:
    value = env.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise ValueError(f"{name}={value!r}: expected one of {choices}")
    return choices[choices.index(value)]


def run_container(env: Mapping[str, str] | None = None) -> int:
    """Process every case under the input folder; writes results.json (unless /output is unusable: exit 2 then).

    The output folder is checked (a writable folder), locked and cleaned of stale temporaries before any case is
    read (:mod:`synthct.outputs`); results.json is merged per case with an earlier run's in the same folder.
    """
    env = os.environ if env is None else env
    output_dir = Path(env.get("SYNTHCT_OUTPUT") or "/output")
    images_out = output_dir / "images" / "synthetic-ct"
    try:
        with output_session([output_dir, images_out], "algorithm job"):
            try:
                return _run_locked(env, output_dir)
            except Exception as exc:  # a bug or an unreadable /input: one line, the traceback in the error log
                report_unexpected(log, exc, "algorithm job failed before finishing its cases")
                with contextlib.suppress(OSError):  # still leave a results.json
                    if not (output_dir / "results.json").exists():
                        write_json_atomic(output_dir / "results.json", [])
                return EXIT_FATAL
    except OutputError as exc:
        log.error("%s", exc)
        return EXIT_FATAL


def _trust_env(env: Mapping[str, str]) -> tuple[str | None, bool]:
    """``SYNTHCT_UNCERTAINTY`` (off | on | a mode of synthct.trust; default off) and ``SYNTHCT_REFUSE_OOD`` (0/1)."""
    from synthct.trust import DEFAULT_UNCERTAINTY_MODE, UNCERTAINTY_MODES

    value = env.get("SYNTHCT_UNCERTAINTY", "").strip().lower()
    if value in ("", "0", "off", "false", "no"):
        uncertainty = None
    elif value in ("1", "on", "true", "yes"):
        uncertainty = DEFAULT_UNCERTAINTY_MODE
    elif value in UNCERTAINTY_MODES:
        uncertainty = value
    else:
        raise ValueError(f"SYNTHCT_UNCERTAINTY={value!r}: expected off, on or one of {sorted(UNCERTAINTY_MODES)}")
    refuse = env.get("SYNTHCT_REFUSE_OOD", "").strip().lower()
    if refuse not in ("", "0", "1", "true", "false", "yes", "no"):
        raise ValueError(f"SYNTHCT_REFUSE_OOD={refuse!r}: expected 0 or 1")
    return uncertainty, refuse in ("1", "true", "yes")


def _run_locked(env: Mapping[str, str], output_dir: Path) -> int:
    input_dir = Path(env.get("SYNTHCT_INPUT") or "/input")
    results_path = output_dir / "results.json"
    images_out = output_dir / "images" / "synthetic-ct"
    try:
        backend = _env_choice(env, "SYNTHCT_BACKEND", BACKENDS)
        device = _env_choice(env, "SYNTHCT_DEVICE", DEVICES)
        batch_size = _env_int(env, "SYNTHCT_BATCH_SIZE", 4) or 4
        threads = _env_int(env, "SYNTHCT_THREADS", None)
        resample = _env_choice(env, "SYNTHCT_RESAMPLE", RESAMPLE_MODES)
        uncertainty, refuse_ood = _trust_env(env)
    except ValueError as exc:
        log.error("%s", exc)
        write_results(results_path, [])
        return EXIT_FATAL
    progress = env.get("SYNTHCT_PROGRESS", "1").strip() not in ("0", "false", "no")

    mr_dir, mask_dir = input_dir / "images" / "mri", input_dir / "images" / "body"
    region_path = input_dir / "region.json"
    cases = pair_cases(list_images(mr_dir), list_images(mask_dir), missing_mask="auto")
    if not cases:
        log.error("no MR images found in %s (accepted: .mha, .mhd, .nii.gz, .nii, .nrrd)", mr_dir)
        write_results(results_path, [])
        return EXIT_FATAL

    source = locate_models(env)
    log.info("%d case(s) in %s; models: %s in %s: %s", len(cases), input_dir, source.label, source.folder,
             sorted(source.packages) or "none")
    extra_inputs = [{"type": "String", "filename": str(region_path)}] if region_path.exists() else []
    try:
        declared = read_region_file(region_path)
        region_problem = source.problem
        if region_problem is None and declared is not None and declared not in source.packages:
            region_problem = (f"no model installed for region {declared!r}: {region_path} names it, but the "
                              f"{source.label} in {source.folder} hold(s) package(s) for {sorted(source.packages)} "
                              "only")
    except RegionError as exc:
        declared, region_problem = None, str(exc)
    if region_problem is not None:
        log.error("%s", region_problem)
        entries = [
            {"outputs": [], "inputs": [{"type": "metaio_image", "filename": str(p)} for p in (c.mr, c.mask) if p]
             + extra_inputs, "error_messages": [region_problem], "model_source": source.record()}
            for c in cases
        ]
        write_results(results_path, entries)
        return EXIT_CASE_FAILED

    registry = ModelRegistry(source.packages, backend, device, threads, source.problems)
    extra = ExtraOutputs(uncertainty=uncertainty, refuse_ood=refuse_ood,
                         uncertainty_dir=output_dir / "images" / "synthetic-ct-uncertainty" if uncertainty else None)
    entries, failed = run_cases(cases, registry, images_out, declared, extra_inputs, batch_size, progress,
                                extra, resample)
    for entry in entries:
        entry["model_source"] = source.record()
    write_results(results_path, entries)
    log.info("%d of %d case(s) written to %s; results in %s", len(cases) - failed, len(cases), images_out,
             results_path)
    return EXIT_CASE_FAILED if failed else EXIT_OK


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    try:
        return run_container()
    except Exception as exc:  # a bug outside the output session (the traceback goes to the temp folder)
        report_unexpected(log, exc, "algorithm job failed")
        return EXIT_FATAL
