"""Generator → ONNX: input ``mr`` (N, 1, pz, py, px) float32, output ``sct`` same shape; only N is dynamic.

Exporter choice (measured on SwinUNETR, torch 2.13, MONAI 1.6.1, feature_size 24, 64³): both torch exporters give
the same numbers (max |ORT − eager| ≈ 0.008 HU) and the same ONNX Runtime CPU speed once ORT has optimised the graph
(≈ 0.8 s per patch on 2 shared cores). The default ``dynamo`` exporter (``torch.export`` + onnxscript) is kept: it is
the maintained one (``dynamo=False`` is deprecated), its graph is 8× smaller (1237 vs 9328 nodes: the window-shift
masks come out as a small constant subgraph instead of thousands of shape ops) and it loads faster after offline
folding (0.23 vs 0.34 s). Its cost: ≈ 30 s to export instead of ≈ 6 s, and it writes opset ≥ 18 (its down-converter
has no Pad adapter to 17). ``legacy`` (TorchScript tracing) stays available for opset 17.

The residual-encoder U-Net (``model.architecture: resenc_unet``) goes through the same path: its convolutions,
instance norms (swapped like SwinUNETR's, :mod:`synthct.export.accurate_norm`) and trilinear up-sampling (ONNX
``Resize``) export at any patch the config takes (checked at 64³, 64 × 96 × 64 and 128³ with the dynamo exporter).

The spatial size is fixed, so SwinUNETR's window padding and shift masks are constants of the graph; the batch axis
stays symbolic. Weights go to an external ``<file>.data`` only when they exceed ``EXTERNAL_DATA_BYTES`` (protobuf's
2 GiB limit); the package manifest then hashes both files. The usage conventions are also written into the ONNX
file's own metadata (key ``synthct``), so the file alone says what it expects.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from synthct.export.errors import ExportError

INPUT_NAME = "mr"
OUTPUT_NAME = "sct"
DEFAULT_OPSET = 18
MIN_OPSET = 17
EXPORTERS = ("dynamo", "legacy")
Exporter = Literal["dynamo", "legacy"]
EXTERNAL_DATA_BYTES = 1 << 30
"""Weights (bytes, float32) above which the ONNX file keeps its tensors in an external data file."""
METADATA_KEY = "synthct"
EXAMPLE_BATCH = 2
"""Batch size of the traced example: 2, not 1, so the exporter cannot specialise the batch axis to a constant."""


@dataclass(frozen=True)
class OnnxFiles:
    """An exported model: the graph file, its external data file (or None), opset, exporter and seconds taken."""

    model: Path
    external_data: Path | None
    opset: int
    exporter: str
    seconds: float


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """Silence the exporters' INFO chatter (initializer deduplication, optional torchvision ops) while exporting."""
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def check_opset(opset: int, exporter: str) -> None:
    """Refuse an opset the exporter cannot write (ONNX LayerNormalization needs ≥ 17; dynamo writes ≥ 18)."""
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r} (expected one of {EXPORTERS})")
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old: at least {MIN_OPSET} is needed (LayerNormalization)")
    if exporter == "dynamo" and opset < 18:
        raise ExportError(f"the dynamo exporter writes opset ≥ 18 (it cannot down-convert Pad to {opset}); "
                          "use --exporter legacy for opset 17")


def parameter_bytes(module: torch.nn.Module) -> int:
    """Bytes of the module's parameters and buffers."""
    tensors = [*module.parameters(), *module.buffers()]
    return int(sum(t.numel() * t.element_size() for t in tensors))


def _opset_of(model_opsets: Mapping[str, int]) -> int:
    return int(model_opsets.get("", model_opsets.get("ai.onnx", 0)))


def export_onnx(
    generator: torch.nn.Module,
    path: str | os.PathLike[str],
    patch_size: Sequence[int],
    opset: int = DEFAULT_OPSET,
    exporter: Exporter = "dynamo",
    external_data: bool | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> OnnxFiles:
    """Export ``generator`` (eval mode, CPU) to ``path`` at the fixed ``patch_size`` (z, y, x) with a dynamic batch.

    ``external_data=None`` chooses by size (:data:`EXTERNAL_DATA_BYTES`). ``metadata`` is stored as JSON under the
    ONNX metadata key ``synthct``. The file is checked with :func:`check_graph` before returning.
    """
    check_opset(opset, exporter)
    path = Path(path)
    patch = tuple(int(v) for v in patch_size)
    generator = generator.eval()
    example = torch.zeros((EXAMPLE_BATCH, 1, *patch), dtype=torch.float32).uniform_(-1.0, 1.0)
    if external_data is None:
        external_data = parameter_bytes(generator) > EXTERNAL_DATA_BYTES
    data_name = f"{path.name}.data"
    metadata_json = json.dumps(dict(metadata or {}), sort_keys=True)
    started = time.perf_counter()
    with warnings.catch_warnings(), torch.no_grad(), _quiet_exporter_logs():
        warnings.simplefilter("ignore")  # tracer/deprecation chatter about SwinUNETR's shape arithmetic
        if exporter == "dynamo":
            program = torch.onnx.export(
                generator, (example,), None, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                opset_version=opset, dynamo=True, verbose=False,
                dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch", min=1)}},
            )
            if program is None:  # pragma: no cover - torch returns the program when f is None
                raise ExportError("torch.onnx.export (dynamo) returned no program")
            program.model.metadata_props[METADATA_KEY] = metadata_json
            written_opset = _opset_of(program.model.opset_imports)
            program.save(str(path), external_data=external_data)
        else:
            import onnx

            buffer = io.BytesIO()
            torch.onnx.export(
                generator, (example,), buffer,  # type: ignore[arg-type]  # torch's stub: f also takes a BytesIO
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                opset_version=opset, dynamo=False,
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
            model = onnx.load_from_string(buffer.getvalue())
            del buffer
            onnx.helper.set_model_props(model, {METADATA_KEY: metadata_json})
            written_opset = _opset_of({o.domain: o.version for o in model.opset_import})
            (path.parent / data_name).unlink(missing_ok=True)  # onnx appends to an existing data file
            onnx.save_model(model, str(path), save_as_external_data=external_data, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
    seconds = time.perf_counter() - started
    if written_opset != opset:
        raise ExportError(f"{path}: the {exporter} exporter wrote opset {written_opset}, {opset} was requested")
    data_path = path.parent / data_name
    files = OnnxFiles(path, data_path if external_data else None, opset, exporter, seconds)
    if external_data and not data_path.is_file():
        raise ExportError(f"{path}: external data was requested but {data_path.name} was not written")
    check_graph(path, patch)
    return files


def _dims(value_info: Any) -> list[int | str]:
    return [d.dim_param if d.HasField("dim_param") or not d.HasField("dim_value") else int(d.dim_value)
            for d in value_info.type.tensor_type.shape.dim]


def check_graph(path: str | os.PathLike[str], patch_size: Sequence[int]) -> dict[str, Any]:
    """Check an ONNX file (ONNX checker, external data included): one float32 input ``mr`` and one output ``sct``,
    both (N, 1, pz, py, px) with N symbolic and the rest fixed. Returns ``{"opset", "inputs", "outputs"}``."""
    import onnx

    path = Path(path)
    try:
        onnx.checker.check_model(str(path))
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises ValidationError, DecodeError, OSError
        raise ExportError(f"{path}: not a valid ONNX model ({type(exc).__name__}: {exc})") from exc
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    outputs = list(model.graph.output)
    expected = [1, *(int(v) for v in patch_size)]
    found: dict[str, Any] = {"opset": _opset_of({o.domain: o.version for o in model.opset_import}),
                             "inputs": {i.name: _dims(i) for i in inputs},
                             "outputs": {o.name: _dims(o) for o in outputs}}
    for role, values, name in (("input", inputs, INPUT_NAME), ("output", outputs, OUTPUT_NAME)):
        if [v.name for v in values] != [name]:
            raise ExportError(f"{path}: graph {role}s are {[v.name for v in values]}, expected exactly [{name!r}]")
        value = values[0]
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise ExportError(f"{path}: {role} {name!r} is not float32")
        dims = _dims(value)
        if len(dims) != 5 or not isinstance(dims[0], str) or dims[1:] != expected:
            raise ExportError(f"{path}: {role} {name!r} has shape {dims}, expected [N (symbolic), {expected}]")
    return found


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``synthct`` usage metadata stored in an ONNX file ({} when absent)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return dict(json.loads(prop.value))
    return {}
