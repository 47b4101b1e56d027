#!/usr/bin/env python3
"""zetl benchmark harness, the entry point kept for bench/run.sh, `zetl bench`
(replicator/main.c) and `make bench`: the code is the zetlbench package next
to this file (see bench/zetlbench/__init__.py)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from zetlbench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
