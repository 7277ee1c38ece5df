"""``python -m evaluation``: the grand-challenge evaluation container's entry point."""

import sys

from evaluation.container import main

sys.exit(main())
