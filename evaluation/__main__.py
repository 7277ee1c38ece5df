"""``python -m synthct.evaluation``: the grand-challenge evaluation container's entry point."""

import sys

from synthct.evaluation.container import main

sys.exit(main())
