"""``python -m wheelflow``: the same as the ``wheelflow`` command (the start-over first)."""

import sys

from wheelflow.launcher import main

sys.exit(main())
