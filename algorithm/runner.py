"""Run a list of cases with per-case error capture, shared by the container and ``synthct predict``.

Each case yields one grand-challenge ``results.json`` entry (the evalutils / SynthRAD template contract):
``{"outputs": [{"type": "metaio_image", "filename": …}], "inputs": [...], "error_messages": [...]}``. A failing
case records its error and the others still run.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from algorithm.backends import Backend, Device, Predictor, make_predictor
from algorithm.cases import CaseFiles, RegionError, resolve_region
from algorithm.inference import check_inputs, predict_sct
from synthct.io import read_image, write_image
from synthct.model_package import ModelPackage, load_model_package

log = logging.getLogger(__name__)


@dataclass
class ModelRegistry:
    """Installed packages by region, loaded (verified) and turned into predictors on first use, then cached."""

    packages: dict[str, Path]
    backend: Backend = "auto"
    device: Device = "auto"
    threads: int | None = None
    _loaded: dict[str, tuple[ModelPackage, Predictor] | Exception] = field(default_factory=dict)

    @property
    def regions(self) -> list[str]:
        return sorted(self.packages)

    def get(self, region: str) -> tuple[ModelPackage, Predictor]:
        if region not in self._loaded:
            try:
                if region not in self.packages:
                    raise RegionError(f"no model installed for region {region!r} (installed: {self.regions})")
                package = load_model_package(self.packages[region], expected_region=region)
                predictor = make_predictor(package, self.backend, self.device, self.threads)
                log.info("region %s: model %s on %s (%s)", region, package.directory, predictor.description,
                         predictor.selection)
                self._loaded[region] = (package, predictor)
            except Exception as exc:  # remembered: every case of this region gets the same message
                self._loaded[region] = exc
        loaded = self._loaded[region]
        if isinstance(loaded, Exception):
            raise loaded
        return loaded


def run_cases(
    cases: list[CaseFiles],
    registry: ModelRegistry,
    output_dir: Path,
    declared_region: str | None = None,
    extra_inputs: list[dict[str, str]] | None = None,
    batch_size: int = 4,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], int]:
    """Predict every case into ``output_dir/<case id>.mha``; returns (results.json entries, number failed)."""
    entries: list[dict[str, Any]] = []
    failed = 0
    for index, case in enumerate(cases, start=1):
        inputs = [{"type": "metaio_image", "filename": str(case.mr)}]
        if case.mask is not None:
            inputs.append({"type": "metaio_image", "filename": str(case.mask)})
        entry: dict[str, Any] = {"outputs": [], "inputs": inputs + list(extra_inputs or []), "error_messages": []}
        started = time.perf_counter()
        try:
            if case.problem is not None or case.mask is None:
                raise ValueError(case.problem or f"{case.mr}: no body mask")
            region = resolve_region(case.case_id, declared_region, registry.regions)
            package, predictor = registry.get(region)
            entry["backend"] = {"description": predictor.description, "selection": predictor.selection}
            mr_image, mask_image = read_image(case.mr), read_image(case.mask)
            check_inputs(mr_image, mask_image, str(case.mr), str(case.mask))
            sct = predict_sct(mr_image, mask_image, package, predictor, batch_size=batch_size, progress=progress)
            del mr_image, mask_image
            target = write_image(sct, output_dir / f"{case.case_id}.mha")
            del sct
            entry["outputs"].append({"type": "metaio_image", "filename": str(target)})
            log.info("[%d/%d] %s: %s (%.1f s)", index, len(cases), case.case_id, target, time.perf_counter() - started)
        except Exception as exc:  # one bad case never stops the others
            failed += 1
            message = str(exc) if str(exc) else type(exc).__name__
            entry["error_messages"].append(message)
            log.error("[%d/%d] %s failed: %s", index, len(cases), case.case_id, message)
            log.debug("traceback", exc_info=True)
        entries.append(entry)
        gc.collect()
    return entries, failed
