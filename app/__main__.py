"""`python -m app`: the same as the `bit-studio` command."""

import sys

from app.main import main

sys.exit(main())
