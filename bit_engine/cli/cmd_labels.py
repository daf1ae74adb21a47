"""`bit-studio label-issues`: the photos that are probably in the wrong class folder, and what they look like.

The list can be written as a corrections file (``--csv FILE``: path, given label, suggested label), checked
or edited by hand, and given to ``bit-studio train DATA --corrections FILE``; the photo folder is never
touched.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from bit_engine.cli.progress import TextProgress, format_bytes, format_duration
from bit_engine.cli.terminal import printable


def register(sub) -> None:
    from bit_engine.cli.cmd_train import _at_least
    from bit_engine.label_issues import DEFAULT_FOLDS, RANK_BY

    p = sub.add_parser(
        "label-issues",
        help="list the photos that are probably in the wrong class folder",
        description="Find likely label errors: a linear head trained in folds on the frozen model's features "
        "predicts each photo without having seen its label, and confident learning's per-class thresholds "
        "pick the photos the model is confident belong to another class. The features are cached: after a "
        "head run, or a second time, no image passes through the network again.",
    )
    p.add_argument("data_dir", help="folder with one sub-folder of images per class")
    p.add_argument(
        "--model",
        help="pre-trained model whose features are used (default: as `train`; see `bit-studio weights list`)",
    )
    p.add_argument(
        "--folds",
        type=_at_least(2),
        default=DEFAULT_FOLDS,
        help=f"cross-validation folds (default {DEFAULT_FOLDS})",
    )
    p.add_argument("--rank-by", choices=RANK_BY, default="self_confidence", help="order of the list")
    p.add_argument(
        "--resolution",
        type=_at_least(8),
        help="input size (default: the head strategy's, as `train` plans it)",
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: a GPU when usable)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds")
    p.add_argument(
        "--corrections",
        metavar="FILE",
        help="apply these corrections (CSV) first: judge the corrected labels",
    )
    p.add_argument(
        "--csv", metavar="FILE", help="also write the issues as a corrections file for `train --corrections`"
    )
    p.add_argument("--limit", type=int, default=50, help="photos listed (default 50; 0: all)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=_label_issues)


def read_corrections_arg(path: str | None) -> tuple:
    """`TrainConfig.corrections` from a ``--corrections FILE`` argument (() without one).

    Raises:
        CorrectionsError: the file is missing or not a corrections file (the message says what to do).
    """
    if not path:
        return ()
    from bit_engine.corrections import as_config, read_csv

    return as_config(read_csv(Path(path).expanduser()))


def _label_issues(args) -> int:
    from bit_engine.cli.cmd_train import _prepare, _with_sigint
    from bit_engine.config import DEFAULT_MODEL, TrainConfig
    from bit_engine.corrections import write_csv
    from bit_engine.errors import BitStudioError
    from bit_engine.label_issues import find_label_issues
    from bit_engine.models import get_spec

    spec = get_spec(args.model or DEFAULT_MODEL)  # an unknown name fails here, listing the known ones
    data_dir = str(Path(args.data_dir).expanduser().resolve())
    if args.csv:
        from bit_engine.fileio import refuse_inside_photos

        refuse_inside_photos(args.csv, [data_dir], "corrections file")  # before the long work, not after
    try:
        config = TrainConfig(
            data_dir=data_dir,
            model=spec.name,
            strategy="head",
            resolution=args.resolution,
            device=args.device,
            corrections=read_corrections_arg(args.corrections),
        )
    except ValueError as exc:
        raise BitStudioError(str(exc)) from exc
    config = _prepare(args, config)  # the folder, the device, the weights (downloaded, or the offline model)

    bar = TextProgress()
    cancel = threading.Event()

    def show(p) -> None:
        if p.phase == "downloading":
            bar.update(p.fraction, f"downloading {format_bytes(p.done)} / {format_bytes(p.total)}")
        elif p.phase != "done":
            what = f"{p.phase} ({p.message})" if p.message else p.phase
            bar.update(p.fraction if p.total else 0.0, f"{what} {p.done}/{p.total}" if p.total else what)

    try:
        report = _with_sigint(
            lambda _, on_progress, flag: find_label_issues(
                config,
                folds=args.folds,
                seed=args.seed,
                rank_by=args.rank_by,
                on_progress=on_progress,
                cancel=flag,
            ),
            None,
            show,
            cancel,
        )
    finally:
        bar.close()
    if args.csv:
        write_csv(args.csv, report.as_corrections(), photo_folders=[data_dir])
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        _print(report, args.limit)
    if args.csv:
        print(
            f"Wrote {len(report.issues)} suggested corrections to {printable(args.csv)}. Check them: delete "
            "the rows you disagree with, and where unsure write 'leave out' as the action (the photo is then "
            f"left out of training). Then:\n  bit-studio train {printable(args.data_dir)} --corrections "
            f"{printable(args.csv)}",
            file=sys.stderr if args.json else sys.stdout,
        )
    return 0


def _print(report, limit: int) -> None:
    n = len(report.issues)
    where = printable(report.data_dir)
    head = (
        f"{report.num_photos} training photos in {where}, judged by {report.model} in {report.folds} folds "
        f"({format_duration(report.seconds)}; "
        + (
            "every feature from the cache"
            if report.computed == 0
            else f"{report.computed} photos through the network"
        )
        + ")."
    )
    print(head)
    if report.corrections:
        print(f"  {report.corrections} of your corrections were applied first.")
    print(
        f"  The model agrees with {report.agreement:.0%} of the labels (predicting each photo without its label)."
    )
    if not n:
        print("No likely label errors found.")
        return
    print(f"{n} photo{'s are' if n > 1 else ' is'} probably in the wrong folder (most likely first):")
    shown = report.issues if limit <= 0 else report.issues[:limit]
    rows = [
        (printable(i.path), printable(i.given), printable(i.suggested), i.confidence, i.given_probability)
        for i in shown
    ]
    w_path = max(len("photo"), *(len(r[0]) for r in rows))
    w_given = max(len("labelled"), *(len(r[1]) for r in rows))
    w_sugg = max(len("probably"), *(len(r[2]) for r in rows))
    print(f"  {'photo':<{w_path}}  {'labelled':<{w_given}}  {'probably':<{w_sugg}}  confidence  p(label)")
    for path, given, suggested, confidence, given_p in rows:
        print(
            f"  {path:<{w_path}}  {given:<{w_given}}  {suggested:<{w_sugg}}  {confidence:>10.0%}  {given_p:>8.0%}"
        )
    if len(shown) < n:
        print(f"  ... and {n - len(shown)} more (--limit 0 lists them all, --json gives every figure)")
