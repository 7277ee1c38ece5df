"""The algorithm image's entry point (``python -m synthct.algorithm``): the grand-challenge job, or ``synthct predict``.

    python -m synthct.algorithm                   # no arguments: the grand-challenge job, /input → /output (SPEC §5)
    python -m synthct.algorithm predict ARGS      # ``synthct predict ARGS`` (SPEC §9); --model defaults to
    $SYNTHCT_MODELS
    python -m synthct.algorithm --help            # this usage; ``predict --help`` lists predict's options
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """\
usage: docker run IMAGE                  the grand-challenge job: /input → /output
       docker run IMAGE predict ARGS     synthct predict ARGS (offline use; --model defaults to the image's models)
       docker run IMAGE predict --help   predict's options
       (outside a container: python -m synthct.algorithm [predict ARGS])

Grand-challenge job (no arguments): reads /input/images/mri/<name>.mha, /input/images/body/<name>.mha and
/input/region.json; writes /output/images/synthetic-ct/<name>.mha and /output/results.json. Model packages:
/opt/ml/model (grand-challenge's algorithm model) when it holds any file, else the image's. Environment:
SYNTHCT_INPUT, SYNTHCT_OUTPUT, SYNTHCT_ALGORITHM_MODEL, SYNTHCT_MODELS, SYNTHCT_BACKEND (auto|onnxruntime|openvino|
openvino-bf16|onnxruntime-fp16|tensorrt), SYNTHCT_DEVICE (auto|cpu|cuda), SYNTHCT_BATCH_SIZE, SYNTHCT_THREADS,
SYNTHCT_PROGRESS (1|0), SYNTHCT_RESAMPLE (auto|never: bring the MR to the model's training spacing).

Offline, e.g. a DICOM MR series to a DICOM CT series (mount the folders; run as yourself so the files are yours):
  docker run --rm --network none --user "$(id -u):$(id -g)" -v "$PWD/mr:/data:ro" -v "$PWD/out:/out" IMAGE \\
    predict --mr /data/<series folder> --out /out --dicom-out
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch on the first argument; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        from synthct.algorithm.container import main as container_main

        return container_main()
    if args[0] == "predict":
        from synthct.cli import main as synthct_main

        return synthct_main(args)
    if args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    print(f"unknown command {args[0]!r}\n\n{USAGE}", end="", file=sys.stderr)
    return 2
