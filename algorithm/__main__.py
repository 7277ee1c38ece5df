"""``python -m algorithm``: the container entry point (reads /input, writes /output)."""

import sys

from algorithm.container import main

sys.exit(main())
