"""The `bit-studio` command line: sub-commands over the engine, for people and (with --json) for scripts.

Each `cmd_*.py` module registers its sub-commands. Errors meant for the user (`BitStudioError`) print as
one clear message, followed by the command that fixes it when the engine names a remedy (`remedies.py`), and
exit 2; Ctrl-C exits 130 after the command has cleaned up.
"""

from __future__ import annotations

import argparse
import sys

from bit_engine import __version__
from bit_engine.cli.remedies import render_error
from bit_engine.errors import BitStudioError
from bit_engine.progress import OperationCancelled


def build_parser() -> argparse.ArgumentParser:
    from bit_engine.cli import cmd_export, cmd_labels, cmd_train, cmd_weights

    parser = argparse.ArgumentParser(
        prog="bit-studio",
        description="BiT Studio: fine-tune Big Transfer (BiT) image classifiers on your own labelled folders.",
    )
    parser.add_argument("--version", action="version", version=f"bit-studio {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in (cmd_train, cmd_labels, cmd_export, cmd_weights):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except OperationCancelled as exc:
        if exc.run_dir is not None:
            print(
                f"{exc}\nThe run is saved; continue it with:\n  bit-studio resume {exc.run_dir}",
                file=sys.stderr,
            )
        else:
            print(f"{exc}", file=sys.stderr)
        return 130
    except BitStudioError as exc:
        print(f"error: {render_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nCancelled.", file=sys.stderr)
        return 130
