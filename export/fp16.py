"""The GPU's fp16 graph: the generator's ONNX with fp16 weights and activations, normalisations kept in fp32.

InstanceNormalization and LayerNormalization (and their reductions) are where fp16 loses most: a mean and a
variance over 64³ voxels or a token's channels overflow or cancel in half precision. They stay fp32 islands, with
Cast nodes at their borders; the graph's input ``mr`` and output ``sct`` stay float32 (``keep_io_types``), so the
runtime feeds and reads the same arrays as for the fp32 graph. The source graph must carry native
InstanceNormalization nodes (not the axis-wise decomposition of :mod:`synthct.export.accurate_norm`): exported with
:func:`synthct.export.onnx_export.export_onnx` from the unmodified generator.

Used by ONNX Runtime's CUDA execution provider only (``onnxruntime-fp16`` backend); its accuracy can be measured
only where a GPU is present at export time, else the manifest records it as not measured and it is never chosen
by default.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthct.export.errors import ExportError

if TYPE_CHECKING:
    import onnx

log = logging.getLogger("synthct.export")

FP32_OPS = ("InstanceNormalization", "LayerNormalization")
"""Operators kept in float32 inside the fp16 graph."""
FP16_NAME = "model_fp16.onnx"


def convert_to_fp16(source: Path, target: Path, keep_fp32: tuple[str, ...] = FP32_OPS) -> dict[str, Any]:
    """Write ``target``, the fp16 version of the ONNX graph ``source``; returns facts for the manifest.

    Raises :class:`ExportError` when the conversion or the ONNX checker fails, or when an operator of
    ``keep_fp32`` does not end up computing in float32.
    """
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    try:
        model = onnx.load(str(source))
        converted = convert_float_to_float16(model, keep_io_types=True,
                                             op_block_list=[*DEFAULT_OP_BLOCK_LIST, *keep_fp32])
        wrapped = OnnxModel(converted)
        wrapped.topological_sort()  # the converter appends its Cast nodes at the end of the node list
        del wrapped.model.graph.value_info[:]  # stale float32 annotations of converted values; inferred again below
        onnx.save(wrapped.model, str(target))
        onnx.checker.check_model(str(target), full_check=True)
    except ExportError:
        raise
    except Exception as exc:  # onnx / converter errors come in many types
        raise ExportError(f"{source}: fp16 conversion failed ({exc})") from exc
    facts = describe_fp16(target, keep_fp32)
    if facts["fp32_island_violations"]:
        raise ExportError(f"{target}: operators meant to stay fp32 compute in fp16: {facts['fp32_island_violations']}")
    return facts


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every typed value of the graph (inputs, outputs, value_info, initializers)."""
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output, *graph.value_info]}
    types.update({t.name: t.data_type for t in graph.initializer})
    return types


def describe_fp16(path: Path, keep_fp32: tuple[str, ...] = FP32_OPS) -> dict[str, Any]:
    """Facts of an fp16 graph: I/O element types, counts of fp32-island operators, fp16 initializers, and any
    island operator whose first input is not float32 (``fp32_island_violations``; [] for a good graph)."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(path))
    inferred = onnx.shape_inference.infer_shapes(model)
    types = _value_types(inferred)
    graph = model.graph
    violations = [f"{node.op_type} {node.name}" for node in graph.node
                  if node.op_type in keep_fp32 and types.get(node.input[0], TensorProto.FLOAT) != TensorProto.FLOAT]
    ops = Counter(node.op_type for node in graph.node)
    initializer_types = Counter(TensorProto.DataType.Name(t.data_type) for t in graph.initializer)
    return {
        "keep_io_types": True,
        "io_types": {v.name: TensorProto.DataType.Name(v.type.tensor_type.elem_type)
                     for v in [*graph.input, *graph.output]},
        "fp32_ops": list(keep_fp32),
        "fp32_island_nodes": {op: ops.get(op, 0) for op in keep_fp32},
        "casts": ops.get("Cast", 0),
        "initializer_types": dict(initializer_types),
        "fp32_island_violations": violations,
    }
