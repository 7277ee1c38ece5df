"""``python -m synthct`` is the ``synthct`` command."""

import sys

from synthct.cli import main

sys.exit(main())
