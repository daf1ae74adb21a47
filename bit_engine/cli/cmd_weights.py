"""`bit-studio weights list | download NAME | import PATH`: the pre-trained weights store from the terminal.

`bit_engine.weights` (and with it torch) is imported inside the commands, so `bit-studio --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from bit_engine.cli.progress import TextProgress, format_bytes, format_duration


def register(subparsers) -> None:
    """Add the `weights` command and its actions to the top-level sub-parsers."""
    parser = subparsers.add_parser(
        "weights",
        help="list, download and import pre-trained weights",
        description="Pre-trained weights: list the known models, download them, or import a file fetched "
        "by other means (for machines that cannot reach the official host).",
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION")
    parser.set_defaults(run=lambda args: _print_help(parser))

    listing = actions.add_parser("list", help="the known models, their size and whether they are cached")
    listing.add_argument("--json", action="store_true", help="print JSON for scripts")
    listing.set_defaults(run=_run_list)

    fetch = actions.add_parser(
        "download",
        help="download a model's weights into the cache (resumes an interrupted download)",
        description="Download a model's weights into the cache. Ctrl-C keeps what has arrived; running the "
        "same command again resumes from there.",
    )
    fetch.add_argument("name", metavar="NAME", help="model name, e.g. BiT-M-R50x1 (see `weights list`)")
    fetch.add_argument(
        "--timeout", type=float, default=None, help="seconds to wait for the server (default: 10)"
    )
    fetch.set_defaults(run=_run_download)

    importing = actions.add_parser(
        "import",
        help="copy a weights file fetched by other means into the cache, after checking it",
        description="Check a .npz weights file and copy it into the cache. The file is not modified.",
    )
    importing.add_argument("path", metavar="PATH", help="the .npz file, e.g. BiT-M-R50x1.npz")
    importing.add_argument("--name", help="the model it holds (default: told from the file name)")
    importing.set_defaults(run=_run_import)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def _run_list(args: argparse.Namespace) -> int:
    from bit_engine import locations, weights

    rows = weights.list_models()
    if args.json:
        payload = {"weights_dir": str(locations.weights_dir()), "models": [asdict(row) for row in rows]}
        print(json.dumps(payload, indent=2))
        return 0
    table = [("NAME", "ARCHITECTURE", "SIZE", "STATUS", "PRE-TRAINED ON")]
    for row in rows:
        table.append((row.name, row.architecture, format_bytes(row.size_bytes), _status(row), row.upstream))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]) - 1)]
    for line in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=True))
            + "  "
            + line[-1]
        )
    print(f"\nWeights folder: {locations.weights_dir()}")
    return 0


def _status(row) -> str:
    if row.family != "bit":
        return "bundled"
    if row.cached:
        return "cached"
    if row.partial_bytes:
        return f"partial ({format_bytes(row.partial_bytes)})"
    return "not downloaded"


def _run_download(args: argparse.Namespace) -> int:
    from bit_engine import weights, weights_cache, weights_download

    spec = weights.get_spec(args.name)
    if spec.family != "bit":
        print(f"{spec.name}'s weights ship with the app: nothing to download.")
        return 0
    cached = weights.cached_path(spec.name)
    if cached is not None:
        print(f"{spec.name} is already cached: {cached}")
        return 0
    url = weights_cache.weights_url(spec.name)
    partial = weights_cache.partial_path(spec.name)
    resumed = partial.stat().st_size if partial.is_file() else 0
    start = f", resuming after {format_bytes(resumed)}" if resumed else ""
    print(f"Downloading {spec.name} (~{format_bytes(spec.size_bytes)}) from {url}{start}", file=sys.stderr)
    bar = TextProgress(stream=sys.stderr)

    def on_progress(p: weights_download.DownloadProgress) -> None:
        total = p.total or spec.size_bytes
        eta = f"  ETA {format_duration(p.eta)}" if p.eta is not None else ""
        text = f"{format_bytes(p.done)} / {format_bytes(total)}  {format_bytes(p.speed)}/s{eta}"
        bar.update(p.done / total if total else 0.0, text, force=p.total is not None and p.done >= p.total)

    timeout = args.timeout if args.timeout is not None else weights_download.DEFAULT_TIMEOUT
    try:
        path = weights_download.download(spec.name, on_progress=on_progress, timeout=timeout)
    except KeyboardInterrupt:
        # The partial file is closed by now; end the bar's line before the message.
        bar.close()
        kept = partial.stat().st_size if partial.is_file() else 0
        if kept:
            print(
                f"Download interrupted: {format_bytes(kept)} kept in {partial}. "
                f"Run `bit-studio weights download {spec.name}` again to resume.",
                file=sys.stderr,
            )
        raise
    finally:
        bar.close()
    print(f"Verified and saved {spec.name} to {path}")
    return 0


def _run_import(args: argparse.Namespace) -> int:
    from bit_engine import weights

    path = weights.import_npz(args.path, name=args.name)
    print(f"Verified and imported {path.stem} to {path}")
    return 0
