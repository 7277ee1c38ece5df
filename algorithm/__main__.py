"""``python -m algorithm``: the container entry point (no arguments: /input → /output; ``predict ARGS``)."""

import sys

from algorithm.entrypoint import main

sys.exit(main())
