"""`python -m app`: the same as the `bit-studio` command."""

import sys

from app.main import main

# Guarded: child processes (spawned for timings and training) import this module again as __mp_main__.
if __name__ == "__main__":
    sys.exit(main())
