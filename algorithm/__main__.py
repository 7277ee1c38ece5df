"""``python -m synthct.algorithm``: the container entry point (no arguments: /input → /output; ``predict ARGS``)."""

import sys

from synthct.algorithm.entrypoint import main

sys.exit(main())
