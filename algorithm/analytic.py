"""A tiny analytic model package, ``sct = tanh(a · mr + b)`` per voxel, built without torch.

For tests, benchmarks and container smoke runs: the output of the whole pipeline is known in closed form
(:func:`expected_hu`), so the algorithm's plumbing (I/O, normalisation, sliding window, HU, mask) can be checked
exactly. A voxel-wise model does not depend on the voxel spacing, so its package declares an orientation and no
training spacing (never resampled). With ``kernel`` the MR is first convolved with a small 3-D kernel (z, y, x):
the output then depends on the orientation (which patient axis is which), on flips (an asymmetric kernel) and on
the spacing (the kernel spans voxels, not mm) — the stand-in for a trained network in the geometry
tests; such a package records a training spacing. Needs the ``onnx`` package (``export`` extra), imported only
when a package is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from synthct.geometry import CANONICAL_ORIENTATION, NetworkGeometry
from synthct.intensity import BACKGROUND_HU, HU_MAX, HU_MIN, MrRule, denormalise_ct, finalise_sct, normalise_mr
from synthct.model_package import file_entry, write_manifest


def build_analytic_package(
    directory: str | Path,
    region: str = "brain",
    scale: float = 1.5,
    shift: float = 0.25,
    patch_size: tuple[int, int, int] = (64, 64, 64),
    fixed_batch: int | None = None,
    mr_rule: MrRule = "max",
    kernel: np.ndarray | None = None,
    spacing_zyx_mm: tuple[float, float, float] | None = None,
    geometry: bool = True,
) -> Path:
    """Write ``model.onnx`` (input "mr" (N, 1, *patch), output "sct") and a verified ``model.json``; returns the dir.

    ``fixed_batch`` makes the batch axis static (to exercise batch splitting); default: dynamic N. ``kernel``:
    a convolution kernel (z, y, x; odd sizes) applied before the voxel-wise map (zero padding). ``geometry``
    False writes a package without the geometry record (as exported before synthct recorded it);
    ``spacing_zyx_mm`` is the training spacing it records (None: spacing-independent, never resampled).
    """
    import onnx
    from onnx import TensorProto, helper

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    batch: int | str = fixed_batch if fixed_batch else "N"
    shape = [batch, 1, *patch_size]
    nodes = [
        helper.make_node("Mul", ["mr", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "shift"], ["shifted"]),
        helper.make_node("Tanh", ["shifted"], ["sct"]),
    ]
    initializer = [
        helper.make_tensor("scale", TensorProto.FLOAT, [], [float(scale)]),
        helper.make_tensor("shift", TensorProto.FLOAT, [], [float(shift)]),
    ]
    if kernel is not None:
        weights = np.asarray(kernel, dtype=np.float32)
        if weights.ndim != 3 or any(n % 2 != 1 for n in weights.shape):
            raise ValueError(f"kernel needs 3 odd sizes (z, y, x), got shape {weights.shape}")
        half = [n // 2 for n in weights.shape]
        nodes.insert(0, helper.make_node("Conv", ["mr", "kernel"], ["blurred"], pads=half + half))
        nodes[1] = helper.make_node("Mul", ["blurred", "scale"], ["scaled"])
        initializer.append(helper.make_tensor("kernel", TensorProto.FLOAT, [1, 1, *weights.shape],
                                              weights.ravel().tolist()))
    graph = helper.make_graph(
        nodes,
        "analytic_sct",
        [helper.make_tensor_value_info("mr", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("sct", TensorProto.FLOAT, shape)],
        initializer=initializer,
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
        "training": {"config": {"analytic": {"scale": scale, "shift": shift,
                                             "kernel_zyx": None if kernel is None else np.asarray(kernel).tolist()}},
                     "metrics": {}, "epoch": 0, "step": 0},
        "parity": {},
    }
    if geometry:
        manifest["geometry"] = NetworkGeometry(CANONICAL_ORIENTATION, spacing_zyx_mm).to_dict()
    write_manifest(directory, manifest)
    return directory


def expected_hu(mr: np.ndarray, mask: np.ndarray, scale: float = 1.5, shift: float = 0.25) -> np.ndarray:
    """The int16 sCT the analytic package must produce for ``mr`` (z, y, x) and ``mask`` (rule "max")."""
    normalised = normalise_mr(mr, mask, "max")
    return finalise_sct(denormalise_ct(np.tanh(np.float32(scale) * normalised + np.float32(shift))), mask)
