"""``python -m semgrad_bench``: the same as the ``semgrad-bench`` command."""

import sys

from .cli import main

sys.exit(main())
