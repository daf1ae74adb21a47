"""Entry point of the `bit-studio` command.

With arguments it is the engine's command line. With none it is meant to open the GUI; until the GUI lands
it prints the command-line help. Heavy modules (torch, Qt) are imported lazily so `--help` stays instant.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from bit_engine.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
