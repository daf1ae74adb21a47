"""`bit-studio plan | train | resume | evaluate | demo`: the main job, from a folder to an evaluated model."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

from bit_engine.cli.progress import TextProgress, format_bytes, format_duration
from bit_engine.cli.terminal import printable
from bit_engine.config import PRECISIONS, STRATEGIES


def register(sub) -> None:
    p = sub.add_parser("plan", help="show the dataset report, the HyperRule plan and time estimates")
    p.add_argument("data_dir", help="folder with one sub-folder of images per class")
    _model_arg(p)
    _override_args(p)
    p.add_argument("--strategy", choices=STRATEGIES, help="estimate only this strategy")
    p.add_argument("--no-estimate", action="store_true", help="skip the timed estimate")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=_plan)

    p = sub.add_parser("train", help="fine-tune a model on a labelled folder")
    p.add_argument("data_dir", help="folder with one sub-folder of images per class")
    _model_arg(p)
    p.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="full",
        help="full: fine-tune everything (BiT); head: train only a new head (fast); "
        "scratch: no pre-training (baseline)",
    )
    _override_args(p)
    p.add_argument("--out", help="run folder to create (default: a new folder in your BiT Studio runs)")
    p.add_argument(
        "--corrections",
        metavar="FILE",
        help="label corrections to train with (CSV: path, given_label, corrected_label[, action], as "
        "`label-issues --csv` writes); the run records which it applied",
    )
    _devices_arg(p)
    p.add_argument("--json", action="store_true", help="print progress as JSON lines")
    p.set_defaults(run=_train)

    p = sub.add_parser("resume", help="continue a cancelled or interrupted run")
    p.add_argument("run_dir")
    _devices_arg(p)
    p.add_argument("--json", action="store_true", help="print progress as JSON lines")
    p.set_defaults(run=_resume)

    p = sub.add_parser("evaluate", help="report accuracy and mistakes of a trained run")
    p.add_argument("run_dir")
    p.add_argument(
        "data_dir", nargs="?", help="another labelled folder (default: the run's validation split)"
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.set_defaults(run=_evaluate)

    p = sub.add_parser("demo", help="try it all on a generated sample dataset (about a minute on a CPU)")
    p.add_argument("--out", help="run folder to create")
    p.add_argument("--offline", action="store_true", help="do not try to download BiT weights")
    p.add_argument(
        "--no-window",
        action="store_true",
        help="stay in the terminal (where a screen is available, `bit-studio demo` plays in the window)",
    )
    p.set_defaults(run=_demo)


def _model_arg(p) -> None:
    from bit_engine.config import DEFAULT_MODEL
    from bit_engine.model_choice import OFFLINE_MODEL

    p.add_argument(
        "--model",
        help=f"pre-trained model (default {DEFAULT_MODEL}, or {OFFLINE_MODEL} when {DEFAULT_MODEL}'s weights "
        "are not on this machine and cannot be downloaded; see `bit-studio weights list`)",
    )


def _devices_arg(p) -> None:
    p.add_argument(
        "--devices",
        metavar="SPEC",
        help="train on several devices, one process each, with the same result as one: all (every GPU), "
        "0,1,3 (these GPUs) or cpu:N (N CPU processes). Several machines: see the README (torchrun)",
    )


def _override_args(p) -> None:
    g = p.add_argument_group("overrides of the BiT-HyperRule (each is recorded with the run)")
    g.add_argument("--steps", type=_at_least(1), help="total optimizer steps")
    g.add_argument("--batch", type=_at_least(1), help="global batch (the learning rate scales linearly)")
    g.add_argument("--resolution", type=_at_least(8), help="input size after the crop")
    g.add_argument("--mixup", type=_non_negative, help="mixup alpha (0: off)")
    g.add_argument("--no-flip", action="store_true", help="no random horizontal flip")
    g.add_argument("--no-crop", action="store_true", help="no random crop")
    g.add_argument("--device", help="cpu, cuda or cuda:N (default: a GPU when usable)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="training arithmetic (default auto: bf16 where the device has it natively, else fp32)",
    )
    g.add_argument(
        "--micro-batch",
        type=_at_least(1),
        help="images per forward pass (default: sized to memory; on a CPU, the fastest for the resolution)",
    )


def _at_least(minimum: int):
    """An argparse type: a whole number >= minimum, refused before any folder is scanned."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"cannot be negative, got {text}")
    return value


def _config(args, strategy: str):
    from bit_engine.config import TrainConfig
    from bit_engine.errors import BitStudioError
    from bit_engine.models import DEFAULT_MODEL, get_spec

    spec = get_spec(args.model or DEFAULT_MODEL)  # an unknown name fails here, listing the known ones
    try:
        return TrainConfig(
            data_dir=str(Path(args.data_dir).expanduser().resolve()),
            model=spec.name,
            strategy=strategy,
            steps=args.steps,
            batch=args.batch,
            resolution=args.resolution,
            mixup=args.mixup,
            flip=not args.no_flip,
            random_crop=not args.no_crop,
            device=args.device,
            seed=args.seed,
            micro_batch=args.micro_batch,
            precision=args.precision,
        )
    except ValueError as exc:
        raise BitStudioError(str(exc)) from exc


# --------------------------------------------------------------------------------------------------------------
# Printing


def _print_report(report, more: str = "see dataset.json in the run") -> None:
    # Folder and file names are data: control characters in them are escaped, never sent to the terminal.
    print(f"Dataset {printable(report.root)}")
    if report.layout_note:
        print(f"  {report.layout_note}")
    names = [printable(c) for c in report.classes]
    width = max((len(c) for c in names), default=5)
    for i, name in enumerate(names):
        counts = "  ".join(f"{k} {v[i]:>5}" for k, v in report.counts.items())
        print(f"  {name:<{width}}  {counts}")
    if report.median_size:
        print(
            f"  {report.num_images:,} usable images; median size {report.median_size[0]}x{report.median_size[1]}"
        )
    # The same count as the report's own summary ("9 items were skipped (...)"): hidden litter apart.
    notable = report.notable_skipped
    if notable:
        print(f"  {len(notable)} {'item was' if len(notable) == 1 else 'items were'} skipped:")
        shown = notable if len(notable) <= 15 else notable[:10]  # "... and 1 more" would save nothing
        for s in shown:
            print(f"    {printable(s.path)}: {printable(s.message)}")
        if len(shown) < len(notable):
            print(f"    ... and {len(notable) - len(shown)} more ({more})")
    hidden = len(report.skipped) - len(notable)
    if hidden:
        print(
            f"  {hidden} hidden or system {'file' if hidden == 1 else 'files'} (.DS_Store, Thumbs.db, ...) left out"
        )
    for w in report.warnings:
        print(f"  warning: {printable(w)}")
    for e in report.errors:
        print(f"  error: {printable(e)}")


def _print_plan(plan) -> None:
    print(f"BiT-HyperRule plan for {plan.model}")
    for key in ("steps", "batch", "resolution", "mixup", "augmentation", "optimizer"):
        print(f"  {key:<12} {plan.reasons[key]}")
    for w in plan.warnings:
        print(f"  warning: {w}")


#: Seconds without a progress line before the printer says, in a log, that the work goes on.
HEARTBEAT_S = 5.0


class _ProgressPrinter:
    """Turns engine `Progress` objects into a progress bar (or JSON lines).

    Args:
        as_json: one JSON line per training step and per finished phase, nothing else.
        announce: printed once the folder has been scanned and found trainable (at the first progress after
            the scan), so that nothing is announced before it is checked.
        estimate: seconds the run was estimated to take (the plan's estimate); without one, the estimate is
            the one the progress bar showed after the first steps. A finished run prints both.
        heartbeat: seconds of silence after which a log (not a terminal) gets a line saying the work goes on.
    """

    def __init__(
        self,
        as_json: bool,
        announce: str | None = None,
        estimate: float | None = None,
        heartbeat: float = HEARTBEAT_S,
    ):
        self.as_json = as_json
        # In a log (not a terminal) a slow step would leave minutes without a line: the bar's heartbeat
        # repeats the latest line, with the time since it, after `heartbeat` seconds of silence.
        self.bar = TextProgress(heartbeat=heartbeat)
        self.phase = None
        self.announce = announce
        self.estimate = estimate
        self.estimate_source = "the plan estimated" if estimate is not None else ""

    def __call__(self, p) -> None:
        if self.as_json:
            if p.phase in ("training", "done") or p.done == p.total:
                print(json.dumps({k: getattr(p, k) for k in p.__dataclass_fields__}), flush=True)
            return
        if p.phase != self.phase:
            if self.phase is not None:
                self.bar.close()
            self.phase = p.phase
            if self.announce and p.phase != "scanning":
                print(self.announce, flush=True)
                self.announce = None
        if (
            p.phase == "training"
            and self.estimate is None
            and p.eta is not None
            and p.elapsed is not None
            and p.step >= max(1, p.total_steps // 20)
        ):
            self.estimate = p.elapsed + p.eta
            self.estimate_source = f"estimated after {p.step} steps"
        if p.phase == "done" and p.elapsed is not None:
            self.bar.close()
            timing = f"Finished in {format_duration(p.elapsed)}"
            if self.estimate is not None:
                timing += f" ({self.estimate_source}: {format_duration(self.estimate)})"
            print(timing + ".", flush=True)
            return
        if p.phase == "training" and p.train_loss is None:  # inside a long step: how far it is
            text = f"step {p.step}/{p.total_steps}  {p.message}"
            if p.eta is not None:
                text += f"  ETA {format_duration(p.eta)}"
            self.bar.update(p.fraction, text)
        elif p.phase == "training":
            text = f"step {p.step}/{p.total_steps}  loss {p.train_loss:.3f}  lr {p.lr:.2g}"
            if p.images_per_s:
                text += f"  {p.images_per_s:.0f} img/s"
            if p.eta is not None:
                text += f"  ETA {format_duration(p.eta)}"
            if p.val_top1 is not None:
                text += f"  val {p.val_top1:.1%}"
            self.bar.update(p.fraction, text, force=p.step == p.total_steps)
        elif p.phase == "downloading":
            self.bar.update(p.fraction, f"downloading {format_bytes(p.done)} / {format_bytes(p.total)}")
        elif p.phase == "done":
            self.bar.close()
        else:
            self.bar.update(
                p.fraction,
                f"{p.phase}{f' ({p.message})' if p.message else ''} {p.done}/{p.total}"
                if p.total
                else p.phase,
                force=p.done == p.total,
            )

    def close(self) -> None:
        self.bar.close()


def _run_cancellable(fn, printer):
    """Run `fn(cancel)` with a fresh cancel flag (Ctrl-C sets it, see `_with_sigint`)."""
    cancel = threading.Event()
    try:
        return fn(cancel)
    finally:
        printer.close()


def _finish(result, as_json: bool) -> int:
    """Print how a finished run ended (a cancelled one raises `OperationCancelled`, see `_cancelled`)."""
    used = _corrections_used(result.run_dir)
    if as_json:
        out = {"status": result.status, "run_dir": str(result.run_dir), "step": result.step}
        out["val_top1"] = result.val_top1
        if used is not None:
            out["corrections"] = used.counts()
        print(json.dumps(out))
    else:
        if used is not None:
            _print_corrections(used)
        if result.report is not None and result.report.accuracy is None:
            print(f"Done after {result.step} steps. No validation images: accuracy cannot be measured.")
        else:
            print(f"Done: validation accuracy {result.val_top1:.1%} after {result.step} steps.")
        print(f"Run folder: {result.run_dir}")
        _print_mistakes(result.report)
    return 0


def _corrections_used(run_dir):
    """The run's `AppliedCorrections` (None when the run had no corrections, or their record is damaged)."""
    from bit_engine.corrections import CorrectionsError, run_corrections

    try:
        return run_corrections(run_dir)
    except CorrectionsError:
        return None


def _print_corrections(used, limit: int = 10) -> None:
    print(f"Label corrections: {used.summary()}")
    for c, why in used.not_applied[:limit]:
        print(f"  not applied: {printable(c.describe())} ({printable(why)})")
    if len(used.not_applied) > limit:
        print(f"  ... and {len(used.not_applied) - limit} more (see corrections.json in the run folder)")


def _print_mistakes(report, limit: int = 5) -> None:
    if not report or not report.num_images:
        return
    for name, m in report.per_class.items():
        print(
            f"  {printable(name):<20} precision {m.precision:.2f}  recall {m.recall:.2f}  "
            f"F1 {m.f1:.2f}  ({m.support} image{'' if m.support == 1 else 's'})"
        )
    mistakes = report.misclassified
    if mistakes:
        print(f"  {len(mistakes)} validation images misclassified; the most confident mistakes:")
        for m in mistakes[:limit]:
            print(
                f"    {printable(m.file)}: {printable(m.true)} taken for {printable(m.predicted)} "
                f"({m.confidence:.0%})"
            )


# --------------------------------------------------------------------------------------------------------------
# Commands


def _plan(args) -> int:
    config = _config(args, args.strategy or "full")
    if config.device is not None:
        from bit_engine.devices import resolve_device

        resolve_device(config.device)  # fail before the scan, as `train` does
    strategies = [args.strategy] if args.strategy else ["head", "full", "scratch"]
    return _show_plan(
        config, [] if args.no_estimate else strategies, args.json, default_model=args.model is None
    )


def _show_plan(
    config, strategies: list[str], as_json: bool, default_model: bool = False, estimates: list | None = None
) -> int:
    """Scan, plan and time `config` for each of `strategies`; print it for people or as JSON.

    Args:
        default_model: the model is the default, not the person's choice (`train` may fall back).
        estimates: when given, the `Estimate` of each strategy is appended to it.
    """
    from bit_engine import data, holdout, weights
    from bit_engine.model_choice import OFFLINE_MODEL
    from bit_engine.train import estimate, make_plan

    report = data.scan(config.data_dir)
    if as_json:
        out = {"dataset": report.to_dict(include_samples=False)}
    else:
        _print_report(report, more="`bit-studio plan --json` lists them all")
    if not report.ok:
        if as_json:
            print(json.dumps(out, indent=2))
        return 2
    split = holdout.split(report, val_fraction=config.val_fraction, seed=config.seed)
    plan = make_plan(config, len(split.train), report.median_size)
    weights_here = config.strategy == "scratch" or weights.is_available(config.model)
    if as_json:
        out["weights_on_this_machine"] = weights_here
        out["plan"] = plan.to_dict()
        out["split"] = {
            "train": len(split.train),
            "val": len(split.val),
            "source": split.source,
            "classes_without_validation": list(split.classes_without_validation),
        }
    else:
        print()
        _print_plan(plan)
        print(
            f"  split        {len(split.train)} training / {len(split.val)} validation images "
            f"({'from the folder' if split.source == 'disk' else 'held out at random, seeded'})"
        )
        missing = split.classes_without_validation
        if missing and split.source == "random":
            names = ", ".join(repr(m) for m in missing[:8]) + (
                f" and {len(missing) - 8} more" if len(missing) > 8 else ""
            )
            print(
                f"               no validation photo for {names}: too few photos for a "
                f"{config.val_fraction:.0%} share, so their accuracy is not measured"
            )
        if not weights_here:
            from bit_engine.models import get_spec

            size = format_bytes(get_spec(config.model).size_bytes)
            then = (
                f"or, when it cannot reach the weights host, trains {OFFLINE_MODEL} instead"
                if default_model
                else f"or use --model {OFFLINE_MODEL}, whose weights ship with BiT Studio"
            )
            print(
                f"  weights      {config.model} is not on this machine: `train` downloads it first ({size}), "
                f"{then}"
            )
    if strategies:
        timed = []
        if not as_json:
            print("\nTime estimates on this machine (a few timed steps):")
        for strategy in strategies:
            e = estimate(
                config.replace(strategy=strategy), len(split.train), len(split.val), report.median_size
            )
            timed.append(e.to_dict())
            if estimates is not None:
                estimates.append(e)
            if not as_json:
                print(f"  {strategy:<8} {e.text}")
        if as_json:
            out["estimates"] = timed
    if as_json:
        print(json.dumps(out, indent=2))
    return 0


def _prepare(args, config):
    """Check before announcing or creating anything: the folder, the device, the model's weights.

    Missing weights are downloaded now, with a progress bar. Without --model, a machine that has no copy of
    the default's weights and cannot reach the weights host trains EfficientNet-Lite0 (and says so); a model
    the person chose is refused with the alternative instead. Returns the config to train.
    """
    from bit_engine import data, distributed, model_choice
    from bit_engine.devices import resolve_device

    data.check_folder(config.data_dir)
    if config.device is not None:
        resolve_device(config.device)
    if config.strategy == "scratch" or distributed.placement_from_env() is not None:
        return config  # no pre-trained weights; under torchrun every rank must train the model it was given
    say = sys.stderr if args.json else sys.stdout
    bar = TextProgress()

    def show(p) -> None:
        total = f" / {format_bytes(p.total)}" if p.total else ""
        bar.update(p.fraction or 0.0, f"downloading weights {format_bytes(p.done)}{total}")

    try:
        if args.model is None:
            _say_download(say)
            choice = model_choice.choose_default_model(on_progress=show)
            bar.close()
            if choice.message:
                print(choice.message, file=say)
            for line in _choice_commands(choice):
                print(line, file=say)
            return config.replace(model=choice.name)
        model_choice.fetch_weights(config.model, on_progress=show)
        return config
    finally:
        bar.close()


def _choice_commands(choice) -> list[str]:
    """The commands that would let the default model be trained after `choice` fell back from it."""
    from bit_engine.cli.remedies import commands
    from bit_engine.models import DEFAULT_MODEL

    return commands(choice.remedy, model=DEFAULT_MODEL, url=choice.url)


def _say_download(stream, indent: str = "") -> None:
    """Say that the default model's weights are about to be fetched (when they are not here)."""
    from bit_engine import weights
    from bit_engine.models import DEFAULT_MODEL, get_spec

    if not weights.is_available(DEFAULT_MODEL):
        size = format_bytes(get_spec(DEFAULT_MODEL).size_bytes)
        print(
            f"{indent}{DEFAULT_MODEL}'s weights are not on this machine; trying to download them ({size})...",
            file=stream,
            flush=True,
        )


def _train(args) -> int:
    from bit_engine import distributed
    from bit_engine.cli.cmd_labels import read_corrections_arg

    config = _config(args, args.strategy)
    if args.corrections:
        config = config.replace(corrections=read_corrections_arg(args.corrections))
    config = _prepare(args, config)
    announce = not args.json and distributed.is_main_process()
    printer = _ProgressPrinter(
        args.json,
        announce=f"Training {config.model} ({config.strategy}) on {config.data_dir}. "
        "Ctrl-C stops and keeps the run."
        if announce
        else None,
    )
    return _run_job(args, distributed.TrainJob(config=config, out=args.out), printer)


def _resume(args) -> int:
    from bit_engine import distributed

    return _run_job(args, distributed.TrainJob(run_dir=args.run_dir))


def _run_job(args, job, printer=None) -> int:
    """Train or resume `job` with a progress printer and Ctrl-C as a polite cancel; the exit code."""
    from bit_engine.progress import OperationCancelled

    printer = printer or _ProgressPrinter(args.json)
    engine = _engine(args, job)
    try:
        result = _run_cancellable(lambda cancel: _with_sigint(engine, None, printer, cancel), printer)
    except OperationCancelled as exc:
        return _cancelled(exc, args.json)
    return _outcome(result, args.json)


def _engine(args, job):
    """The engine call that runs `job`, as `engine(_, on_progress, cancel)` (the shape `_with_sigint` calls).

    The engine's `launcher.start_training` chooses: one device in this process (the command line has no
    window to protect, and Ctrl-C then reaches the loop directly), several devices (--devices) one process
    each. Under torchrun (RANK and WORLD_SIZE set), this process is one rank of the group. Only rank 0 prints.
    """
    from bit_engine import distributed
    from bit_engine.errors import BitStudioError
    from bit_engine.launcher import start_training

    devices = args.devices
    if devices and getattr(args, "device", None):
        raise BitStudioError("Use --device (one device) or --devices (several), not both.")
    under_torchrun = distributed.placement_from_env() is not None
    if under_torchrun and devices:
        raise BitStudioError(
            "--devices has no use under torchrun: torchrun starts one process per device (--nproc-per-node)."
        )

    def engine(_, on_progress, cancel):
        if under_torchrun:
            return distributed.run_under_torchrun(job, on_progress, cancel)
        return start_training(job, devices, isolate=False).run(on_progress, cancel)

    return engine


def _outcome(result, as_json: bool) -> int:
    """Rank 0 (or the only process) prints how the run ended; every process returns the exit code."""
    from bit_engine import distributed

    return _finish(result, as_json) if distributed.is_main_process() else 0


def _cancelled(exc, as_json: bool) -> int:
    """Print how a cancelled run can go on; exit 130 (0 under torchrun).

    Under torchrun a cancel exits 0: torchrun counts any other code as a failure, and with --max-restarts
    it would start the command again.
    """
    from bit_engine import distributed

    if distributed.is_main_process():
        if as_json:
            run_dir = str(exc.run_dir) if exc.run_dir is not None else None
            print(json.dumps({"status": "cancelled", "run_dir": run_dir, "step": exc.step, "val_top1": None}))
        elif exc.run_dir is not None:
            print(
                f"Cancelled at step {exc.step}/{exc.total_steps}. The run is saved; continue it with:\n"
                f"  bit-studio resume {exc.run_dir}",
                file=sys.stderr,
            )
        else:
            print("Cancelled before training began; nothing was saved.", file=sys.stderr)
    return 0 if distributed.placement_from_env() is not None else 130


def _with_sigint(fn, first, printer, cancel, **kwargs):
    """Call an engine function with Ctrl-C turned into the cancel flag (a clean stop at a micro-batch)."""
    import signal

    def on_sigint(signum, frame):
        if cancel.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        cancel.set()
        # One write, so that a progress line written meanwhile by the bar's heartbeat thread cannot split it.
        sys.stderr.write("\nStopping after the current micro-batch (Ctrl-C again to abort)...\n")

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if in_main else None
    try:
        return fn(first, printer, cancel, **kwargs)
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)


def _evaluate(args) -> int:
    from bit_engine.evaluate import evaluate_run

    bar = TextProgress()
    cancel = threading.Event()
    try:
        report = _with_sigint(
            lambda _, on_progress, flag: evaluate_run(
                args.run_dir, args.data_dir, device=args.device, on_progress=on_progress, cancel=flag
            ),
            None,
            lambda p: bar.update(p.fraction if p.total else 1, f"{p.phase} {p.done}/{p.total}"),
            cancel,
        )
    finally:
        bar.close()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    if report.accuracy is None:
        print(f"No images to evaluate ({report.split}).")
        return 0
    print(f"Accuracy {report.accuracy:.1%} on {report.num_images} images ({report.split}).")
    if report.unknown_classes:
        unknown = ", ".join(f"{printable(k)} ({v})" for k, v in report.unknown_classes.items())
        print(f"  left out, classes the model does not know: {unknown}")
    _print_mistakes(report)
    return 0


def _demo(args) -> int:
    import tempfile

    from bit_engine.config import TrainConfig
    from bit_engine.demo import DEMO_CLASSES, make_demo_dataset
    from bit_engine.model_choice import choose_default_model
    from bit_engine.progress import OperationCancelled
    from bit_engine.train import fit

    # Not in the user's folders: a temporary folder, named at the start and at the end.
    folder = Path(tempfile.mkdtemp(prefix="bit-studio-demo-"))
    per_class = 60
    make_demo_dataset(folder, per_class=per_class)
    print(f"1. Made a sample dataset: {len(DEMO_CLASSES)} classes x {per_class} images in {folder}\n")
    if args.offline:
        choice = choose_default_model(download=False)
    else:
        _say_download(sys.stdout, indent="   ")
        bar = TextProgress()
        try:
            choice = choose_default_model(
                on_progress=lambda p: bar.update(p.fraction or 0, format_bytes(p.done))
            )
        finally:
            bar.close()
    if choice.message:
        print(f"   {choice.message}")
        for line in _choice_commands(choice):
            print(f"   {line}")
    else:
        print(f"   Using {choice.name} (its weights are on this machine).")
    print()
    config = TrainConfig(data_dir=str(folder), model=choice.name, strategy="head")
    print("2. Plan")
    estimates: list = []
    _show_plan(config, ["head"], False, estimates=estimates)
    print("\n3. Train (head strategy: the pre-trained network stays frozen, a new head learns the classes)")
    printer = _ProgressPrinter(False, estimate=estimates[0].seconds if estimates else None)
    try:
        result = _run_cancellable(
            lambda cancel: _with_sigint(fit, config, printer, cancel, out=args.out), printer
        )
    except OperationCancelled as exc:
        return _cancelled(exc, False)
    print(f"\n4. Evaluate: {result.report.describe_accuracy().lower()}")
    _print_mistakes(result.report)
    print(
        f"\nThe run is in {result.run_dir}\n"
        f"The sample photos stay in {folder} (the run's validation photos are there, for `evaluate`);\n"
        "delete that folder when you are done with the demo.\n"
        f"Next: bit-studio evaluate {result.run_dir}\n"
        f"      bit-studio train YOUR_FOLDER --strategy head"
    )
    return 0
