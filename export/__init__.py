"""Export: a training checkpoint → a self-describing model package (``model.onnx`` + ``model.json``).

Steps (:func:`synthct.export.package.export_package`): rebuild the generator from the checkpoint's config
(:mod:`synthct.export.source`), export it to ONNX with a fixed patch and a dynamic batch axis
(:mod:`synthct.export.onnx_export`;
instance norms as per-axis means, :mod:`synthct.export.accurate_norm`), check ONNX Runtime against PyTorch eager in HU
(:mod:`synthct.export.parity`), keep an offline-optimised graph only if it measured faster or smaller
(:mod:`synthct.export.optimise`), optionally build a TensorRT 10.x engine (:mod:`synthct.export.tensorrt_build`), and
write
``model.json`` (:mod:`synthct.export.manifest`, via :func:`synthct.model_package.write_manifest`). The package is
assembled
in a temporary folder and renamed into place only when every check passed.
"""
