"""synthct — MR → synthetic CT for radiotherapy (shared core).

The core holds what every stage shares and needs no PyTorch: image I/O (:mod:`synthct.io`), intensity
conventions (:mod:`synthct.intensity`), the sliding-window patch engine (:mod:`synthct.sliding_window`), the
SynthRAD metrics (:mod:`synthct.metrics`), the dataset reader (:mod:`synthct.dataset`) and the model package
manifest (:mod:`synthct.model_package`).
"""

__version__ = "0.1.0"

from synthct.telemetry import quiet_third_parties as _quiet_third_parties

_quiet_third_parties()  # before any stage imports ONNX Runtime, OpenVINO or matplotlib
