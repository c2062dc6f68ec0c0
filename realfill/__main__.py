"""``python -m realfill`` is the ``realfill`` command."""

import sys

from realfill.cli import main

sys.exit(main())
