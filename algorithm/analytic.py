"""A tiny analytic model package, ``sct = tanh(a · mr + b)`` per voxel, built without torch.

For tests, benchmarks and container smoke runs: the output of the whole pipeline is known in closed form
(:func:`expected_hu`), so the algorithm's plumbing (I/O, normalisation, sliding window, HU, mask) can be checked
exactly. Needs the ``onnx`` package (``export`` extra), imported only when a package is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from synthct.intensity import BACKGROUND_HU, HU_MAX, HU_MIN, denormalise_ct, finalise_sct, normalise_mr
from synthct.model_package import file_entry, write_manifest


def build_analytic_package(
    directory: str | Path,
    region: str = "brain",
    scale: float = 1.5,
    shift: float = 0.25,
    patch_size: tuple[int, int, int] = (64, 64, 64),
    fixed_batch: int | None = None,
    mr_rule: str = "max",
) -> Path:
    """Write ``model.onnx`` (input "mr" (N, 1, *patch), output "sct") and a verified ``model.json``; returns the dir.

    ``fixed_batch`` makes the batch axis static (to exercise batch splitting); default: dynamic N.
    """
    import onnx
    from onnx import TensorProto, helper

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    batch: int | str = fixed_batch if fixed_batch else "N"
    shape = [batch, 1, *patch_size]
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["mr", "scale"], ["scaled"]),
            helper.make_node("Add", ["scaled", "shift"], ["shifted"]),
            helper.make_node("Tanh", ["shifted"], ["sct"]),
        ],
        "analytic_sct",
        [helper.make_tensor_value_info("mr", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("sct", TensorProto.FLOAT, shape)],
        initializer=[
            helper.make_tensor("scale", TensorProto.FLOAT, [], [float(scale)]),
            helper.make_tensor("shift", TensorProto.FLOAT, [], [float(shift)]),
        ],
    )
    opset = 17
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="synthct")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx_path = directory / "model.onnx"
    onnx.save(model, str(onnx_path))
    manifest: dict[str, Any] = {
        "format": "synthct-model",
        "format_version": 1,
        "region": region,
        "patch_size": list(patch_size),
        "overlap": 0.5,
        "blend": "gaussian",
        "sigma_scale": 0.125,
        "input_name": "mr",
        "output_name": "sct",
        "ct_normalisation": {"hu_min": HU_MIN, "hu_max": HU_MAX},
        "mr_normalisation": {"rule": mr_rule, "percentile": 99.5},
        "background_hu": BACKGROUND_HU,
        "onnx": {**file_entry(onnx_path), "opset": opset, "external_data": None},
        "tensorrt": None,
        "versions": {"onnx": onnx.__version__},
        "training": {"config": {"analytic": {"scale": scale, "shift": shift}}, "metrics": {}, "epoch": 0, "step": 0},
        "parity": {},
    }
    write_manifest(directory, manifest)
    return directory


def expected_hu(mr: np.ndarray, mask: np.ndarray, scale: float = 1.5, shift: float = 0.25) -> np.ndarray:
    """The int16 sCT the analytic package must produce for ``mr`` (z, y, x) and ``mask`` (rule "max")."""
    normalised = normalise_mr(mr, mask, "max")
    return finalise_sct(denormalise_ct(np.tanh(np.float32(scale) * normalised + np.float32(shift))), mask)
