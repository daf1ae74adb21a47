"""`bit-studio export | predict`: a verified ONNX file from a run, and predictions from that very file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bit_engine.cli.progress import format_bytes
from bit_engine.cli.terminal import printable


def register(sub) -> None:
    p = sub.add_parser("export", help="export a trained run to a verified ONNX model")
    p.add_argument("run_dir")
    p.add_argument("--out", help="the .onnx file (default: model.onnx in the run folder)")
    p.add_argument(
        "--quantize",
        choices=("int8",),
        help="also write an int8 copy, with its accuracy change, size and speed measured on the validation split",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace the --out file even when it is not a model exported by BiT Studio",
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(run=_export)

    p = sub.add_parser("predict", help="classify images with an exported ONNX model")
    p.add_argument("model", help="an .onnx file exported by BiT Studio")
    p.add_argument(
        "paths", nargs="+", metavar="PATH", help="images or folders (folders are read recursively)"
    )
    p.add_argument("--top-k", type=int, default=3, help="how many classes to show per image (default 3)")
    p.add_argument("--csv", help="also write the predictions to this CSV file")
    p.add_argument("--json", action="store_true", help="print JSON lines")
    p.set_defaults(run=_predict)


def _export(args) -> int:
    from bit_engine.run_export import export_run

    print(f"Exporting {args.run_dir} ...", file=sys.stderr)
    record = export_run(args.run_dir, args.out, quantize=args.quantize, force=args.force)
    if args.json:
        print(json.dumps(record.to_dict(), indent=2))
        return 0
    e = record.export
    print(f"Exported {e.path} ({format_bytes(e.file_bytes)}, opset {e.opset})")
    print(
        f"  verified against PyTorch on {e.n_images} {'validation' if e.verify_images_source == 'caller' else 'random'} "
        f"images: same top-1 for {e.top1_agree}/{e.n_images}, max probability difference {e.max_abs_prob_diff:.1e}"
    )
    q = record.quantized
    if q is not None:
        change = f"{q.accuracy_change * 100:+.1f} points" if q.accuracy_change is not None else "n/a"
        print(f"Int8 copy {q.path}")
        print(
            f"  validation accuracy {q.fp32_accuracy:.1%} -> {q.int8_accuracy:.1%} ({change}), "
            f"size {format_bytes(q.fp32_bytes)} -> {format_bytes(q.int8_bytes)} ({q.size_ratio:.2f}x), "
            f"speed {q.fp32_images_per_s:.1f} -> {q.int8_images_per_s:.1f} images/s ({q.speedup:.2f}x)"
        )
        for note in q.notes:
            print(f"  note: {note}")
    return 0


def _predict(args) -> int:
    from bit_engine.errors import BitStudioError
    from bit_engine.fileio import atomic_write_text, refuse_inside_photos
    from bit_engine.inference import Predictor, predictions_csv

    if args.top_k < 1:
        raise BitStudioError("--top-k must be at least 1.")
    if args.csv:
        refuse_inside_photos(args.csv, args.paths, "CSV file")
    predictor = Predictor(args.model)
    k = min(args.top_k, len(predictor.labels))
    results, failures = [], 0
    for path, result in _predictions(predictor, args.paths, k):
        results.append((path, result))
        shown = printable(path)
        if isinstance(result, BitStudioError):
            failures += 1
            if not args.json:
                print(f"{shown}: skipped: {printable(result)}", file=sys.stderr)
            continue
        if args.json:
            row = {
                "file": str(path),
                "label": result[0].label,
                "probability": result[0].probability,
                "top_k": [(p.label, p.probability) for p in result],
            }
            print(json.dumps(row, ensure_ascii=False))
        else:
            others = ", ".join(f"{printable(p.label)} {p.probability:.1%}" for p in result[1:])
            print(
                f"{shown}: {printable(result[0].label)} {result[0].probability:.1%}"
                + (f"  ({others})" if others else "")
            )
    if args.csv:
        atomic_write_text(Path(args.csv), predictions_csv(results, k))
        print(f"Wrote {len(results)} rows to {printable(args.csv)}", file=sys.stderr)
    if not results:
        raise BitStudioError("No images found in the given paths.")
    return 0 if failures < len(results) else 2


def _predictions(predictor, paths, k):
    from bit_engine.errors import BitStudioError

    for given in paths:
        path = Path(given)
        if path.is_dir():
            yield from predictor.predict_folder(path, top_k=k)
        else:
            try:
                yield path, predictor.predict(path, top_k=k)
            except BitStudioError as exc:
                yield path, exc
