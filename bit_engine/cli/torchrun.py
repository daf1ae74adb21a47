"""`torchrun ... -m bit_engine.cli.torchrun train|resume ...`: the `bit-studio` command line as one rank.

torchrun starts this module once per device on every machine; each process runs the command line, which
sees RANK / WORLD_SIZE in the environment and trains as that rank (`distributed.run_under_torchrun`).
"""

from __future__ import annotations

import sys

from bit_engine import distributed
from bit_engine.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    if distributed.placement_from_env() is None:
        print(
            "error: this is the entry point for torchrun, e.g.\n"
            "  torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\\n"
            "      -m bit_engine.cli.torchrun train PHOTOS/ --out RUN_DIR\n"
            "On one machine, use `bit-studio train PHOTOS/ --devices all` instead.",
            file=sys.stderr,
        )
        return 2
    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
