"""``python -m aiosched``: see :mod:`aiosched.cli`."""

from __future__ import annotations

import sys

from aiosched.cli import main  # absolute: worker processes re-import this file as __mp_main__

# The guard matters: process-pool workers re-import the parent's __main__ module.
if __name__ == "__main__":
    sys.exit(main())
