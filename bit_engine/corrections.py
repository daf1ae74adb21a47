"""Label corrections: "this photo belongs to X" or "leave it out", kept by BiT Studio, never in the photo folder.

A person who finds a photo in the wrong class folder (label_issues.py lists the likely ones) records a
`Correction` instead of moving files around: the photo folder stays exactly as it is, and the next run trains
on the corrected labels. Three pieces:

- `CorrectionStore(data_dir)`: the corrections of one data folder, in a JSON file under the user data folder
  (``<data dir>/corrections/<hash of the resolved folder path>.json``, the folder's path written inside), in
  the order they were made. `add`, `undo` (the last change), `remove` (one photo's correction: undo one by
  one, in any order), `corrections()`, `export_csv` / `import_csv`. Every write is atomic.
- CSV files (`write_csv`, `read_csv`, `corrections_csv`): columns ``path, given_label, corrected_label,
  action``; `action` is ``relabel`` or ``leave out`` (a leave-out is written with an empty corrected label,
  and an action of ``leave out`` wins over a label left in that cell; a class named "leave out" stays a
  class). A file of the first three columns reads too. Text cells are escaped
  against spreadsheet formula injection and read back exactly. This is the file ``bit-studio train
  --corrections FILE`` takes and ``bit-studio label-issues --csv FILE`` writes.
- `apply_corrections(report, corrections)`: the scan with labels changed and photos left out, and an
  `AppliedCorrections` saying which were applied and which not, and why: a photo no longer in the folder,
  a class that does not exist, a photo whose folder no longer gives the label the correction was made
  against. Those are reported, never fatal. `preparation.prepare` calls it when the config names
  corrections (`TrainConfig.corrections`, plain tuples: `as_config` / `from_config` convert), before the
  split; the run then records what it used in corrections.json and a count in plan.json
  (`run_corrections(run_dir)` reads it back as `AppliedCorrections`; `runs.read_plan(...).corrections`
  holds the counts).

Which corrections a run uses is the front end's choice, recorded in the config. The window applies the
folder's store by default (`CorrectionStore(folder).as_config()`; a person who fixed labels there expects
the next run to use them, and the Plan step says how many apply). The command line applies none unless
given ``--corrections FILE``: a command stays reproducible from its arguments, without state kept elsewhere.

Class names are data: they are compared with the scanned classes, never used to build a path.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from bit_engine import locations
from bit_engine.dataset import DatasetReport, Sample
from bit_engine.errors import BitStudioError
from bit_engine.fileio import atomic_write_json, atomic_write_text, refuse_inside_photos

#: What `action` says in a CSV row.
RELABEL = "relabel"
LEAVE_OUT = "leave out"

#: The CSV header `write_csv` writes; `read_csv` needs the first three.
CSV_COLUMNS = ("path", "given_label", "corrected_label", "action")

#: A corrections CSV larger than this is not a person's list of corrections.
MAX_CSV_BYTES = 64 * 1024**2

#: First characters that make a spreadsheet read a cell as a formula (OWASP, "CSV Injection"); a leading
#: quote is escaped too, so that reading the file back gives exactly the text written.
_ESCAPED_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")

_STORE_FORMAT = 1


class CorrectionsError(BitStudioError):
    """A corrections file or store that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Correction:
    """One photo's corrected label.

    Attributes:
        path: the photo, relative to the data folder, '/'-separated (as `Sample.path`).
        given: the label its folder gives it (the class the correction was made against).
        corrected: the class it belongs to; None to leave the photo out of training and validation.
    """

    path: str
    given: str
    corrected: str | None

    def __post_init__(self):
        problem = _problem(self.path, self.given, self.corrected)
        if problem:
            raise CorrectionsError(problem)

    @property
    def leave_out(self) -> bool:
        return self.corrected is None

    def describe(self) -> str:
        """In words: ``cats/img_3.jpg: cat -> dog`` or ``cats/img_3.jpg: cat, left out``."""
        return (
            f"{self.path}: {self.given}, left out"
            if self.leave_out
            else f"{self.path}: {self.given} -> {self.corrected}"
        )

    def as_tuple(self) -> tuple[str, str, str | None]:
        return (self.path, self.given, self.corrected)

    def to_dict(self) -> dict:
        return {"path": self.path, "given": self.given, "corrected": self.corrected}


def _problem(path, given, corrected) -> str:
    if not (isinstance(path, str) and path and isinstance(given, str) and given):
        return "A correction needs the photo's path and the label its folder gives it."
    if corrected is not None and not (isinstance(corrected, str) and corrected):
        return f"The new label of {path} must be a class name (or none, to leave the photo out)."
    if corrected == given:
        return f"{path} is labelled {given!r} already: nothing to correct."
    parts = path.split("/")
    if path.startswith(("/", "\\")) or PureWindowsPath(path).drive or ".." in parts or "" in parts:
        return f"The photo path {path!r} must be relative to the data folder and '/'-separated."
    return ""


def as_config(corrections: Iterable[Correction]) -> tuple[tuple[str, str, str | None], ...]:
    """The value of `TrainConfig.corrections` for these corrections."""
    return tuple(c.as_tuple() for c in corrections)


def from_config(value: Iterable[Sequence]) -> tuple[Correction, ...]:
    """The corrections a `TrainConfig.corrections` value names (already validated by the config)."""
    return tuple(Correction(str(p), str(g), None if c is None else str(c)) for p, g, c in value)


# ----------------------------------------------------------------------------------------------------------
# The store of one data folder


def store_dir() -> Path:
    """Where the corrections of every data folder are kept (user data: not a cache, not the photo folder)."""
    return locations.data_dir() / "corrections"


class CorrectionStore:
    """The corrections kept for one data folder, in the order they were made.

    Each method reads the file again, so two windows (or a window and a command) on the same folder see
    each other's changes; each change is one atomic write.

    Args:
        data_dir: the data folder, as the person opened it (resolved here: the same folder reached by
            another spelling or a link shares its corrections).

    Attributes:
        data_dir: the resolved folder.
        file: the JSON file the corrections are kept in (may not exist yet).
    """

    def __init__(self, data_dir: str | os.PathLike):
        self.data_dir = str(Path(data_dir).expanduser().resolve())
        digest = hashlib.blake2b(self.data_dir.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        self.file = store_dir() / f"{digest}.json"

    # -- reading

    def _history(self) -> list[Correction]:
        if not self.file.is_file():
            return []
        damaged = CorrectionsError(
            f"The corrections kept for {self.data_dir} ({self.file}) are damaged and cannot be read. "
            "Delete that file to start again without corrections."
        )
        try:
            d = json.loads(self.file.read_text(encoding="utf-8"))
            if (
                not isinstance(d, dict)
                or d.get("format") != _STORE_FORMAT
                or d.get("folder") != self.data_dir
            ):
                raise damaged
            return [Correction(e["path"], e["given"], e["corrected"]) for e in d["history"]]
        except (OSError, ValueError, KeyError, TypeError, BitStudioError) as exc:
            raise damaged from exc

    def corrections(self) -> tuple[Correction, ...]:
        """The corrections in force: one per photo (its latest), in the order they were made."""
        latest: dict[str, Correction] = {}
        for c in self._history():
            latest.pop(c.path, None)  # a photo corrected again moves to the end
            latest[c.path] = c
        return tuple(latest.values())

    def __len__(self) -> int:
        return len(self.corrections())

    def get(self, path: str) -> Correction | None:
        """The correction in force for the photo at `path` (relative, '/'-separated), or None."""
        return next((c for c in self.corrections() if c.path == path), None)

    def as_config(self) -> tuple[tuple[str, str, str | None], ...]:
        """The corrections in force as `TrainConfig.corrections` (what the window trains with by default)."""
        return as_config(self.corrections())

    # -- changing

    def _write(self, history: list[Correction]) -> None:
        refuse_inside_photos(self.file, [self.data_dir], "corrections file")
        atomic_write_json(
            self.file,
            {
                "format": _STORE_FORMAT,
                "folder": self.data_dir,
                "history": [c.to_dict() for c in history],
            },
        )

    def add(self, correction: Correction) -> None:
        """Record `correction`; it replaces the photo's earlier one, which comes back with `undo`."""
        self._write([*self._history(), correction])

    def add_many(self, corrections: Iterable[Correction]) -> int:
        """Record several corrections in one write (an import); returns how many."""
        new = list(corrections)
        if new:
            self._write([*self._history(), *new])
        return len(new)

    def undo(self) -> Correction | None:
        """Take back the last change; the photo's earlier correction, if any, is in force again.

        Returns:
            The correction taken back, or None when there was none.
        """
        history = self._history()
        if not history:
            return None
        last = history.pop()
        self._write(history)
        return last

    def remove(self, path: str) -> Correction | None:
        """Take back the correction of one photo (every earlier one of that photo too): its folder's label
        applies again.

        Returns:
            The correction that was in force, or None when the photo had none.
        """
        history = self._history()
        current = next((c for c in reversed(history) if c.path == path), None)
        if current is not None:
            self._write([c for c in history if c.path != path])
        return current

    def clear(self) -> None:
        """Take back every correction of this folder."""
        self.file.unlink(missing_ok=True)

    # -- files

    def export_csv(self, destination: str | os.PathLike) -> int:
        """Write the corrections in force as CSV (never into the photo folder); returns how many."""
        found = self.corrections()
        write_csv(destination, found, photo_folders=[self.data_dir])
        return len(found)

    def import_csv(self, source: str | os.PathLike) -> int:
        """Add the corrections of a CSV file (as `export_csv` writes); returns how many.

        Raises:
            CorrectionsError: the file is missing, unreadable or not a corrections file (the message says
                which line and what is wrong); nothing is added then.
        """
        return self.add_many(read_csv(source))


# ----------------------------------------------------------------------------------------------------------
# CSV


def _cell(text: str) -> str:
    return "'" + text if text.startswith(_ESCAPED_STARTS) else text


def _uncell(text: str) -> str:
    return text[1:] if text.startswith("'") else text


def corrections_csv(corrections: Iterable[Correction]) -> str:
    """Corrections as CSV text, safe to open in a spreadsheet (see the module docstring for the columns).

    A text cell starting with ``=``, ``+``, ``-``, ``@``, a tab, a carriage return or a quote gets a leading
    single quote: spreadsheets then show it as text instead of running it as a formula, and `read_csv`
    removes exactly that quote.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for c in corrections:
        writer.writerow(
            [
                _cell(c.path),
                _cell(c.given),
                "" if c.corrected is None else _cell(c.corrected),
                LEAVE_OUT if c.leave_out else RELABEL,
            ]
        )
    return buf.getvalue()


def write_csv(
    destination: str | os.PathLike,
    corrections: Iterable[Correction],
    photo_folders: Iterable[str | os.PathLike | None] = (),
) -> None:
    """Write `corrections_csv` atomically to `destination`, refused inside any of `photo_folders`."""
    refuse_inside_photos(destination, photo_folders, "corrections file")
    atomic_write_text(destination, corrections_csv(corrections))


def read_csv(source: str | os.PathLike) -> tuple[Correction, ...]:
    """The corrections in a CSV file (``path, given_label, corrected_label[, action]``), in file order.

    A photo named twice keeps its last row. Column names are matched without regard to case, spaces or
    ``-``/``_``; extra columns are ignored.

    Raises:
        CorrectionsError: the file is missing or unreadable, lacks the columns, or a row is incomplete or
            contradicts itself; the message names the file, the line and the fix.
    """
    path = Path(source)
    name = str(path)
    if not path.is_file():
        raise CorrectionsError(
            f"The corrections file {name} does not exist."
            if not path.exists()
            else f"{name} is a folder, not a corrections file (CSV)."
        )
    try:
        if path.stat().st_size > MAX_CSV_BYTES:
            raise CorrectionsError(f"{name} is too large for a corrections file (over 64 MB).")
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise CorrectionsError(
            f"{name} is not a text file in UTF-8: save it as CSV (UTF-8) and try again."
        ) from None
    except OSError as exc:
        raise CorrectionsError(f"Cannot read {name} ({exc.strerror or exc}).") from exc
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise CorrectionsError(f"{name} is not a readable CSV file ({exc}).") from exc
    if not rows:
        raise CorrectionsError(
            f"{name} is empty: a corrections file starts with the line {','.join(CSV_COLUMNS)}."
        )

    def norm(h: str) -> str:
        return h.strip().lower().replace(" ", "_").replace("-", "_")

    header = [norm(h) for h in rows[0]]
    needed = CSV_COLUMNS[:3]
    if not all(col in header for col in needed):
        found = ", ".join(repr(h) for h in rows[0][:6]) or "nothing"
        raise CorrectionsError(
            f"{name} is not a corrections file: its first line must name the columns "
            f"{', '.join(needed)} (and optionally action), but it has {found}. "
            "A corrections file exported by BiT Studio (from its label issues) shows the format."
        )
    at = {col: header.index(col) for col in (*needed, "action") if col in header}
    found: dict[str, Correction] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank lines, as spreadsheets leave them
        cells = {col: _uncell(row[i]) if i < len(row) else "" for col, i in at.items()}
        action = cells.get("action", "").strip().lower()
        corrected = cells["corrected_label"] or None
        if action not in ("", RELABEL, LEAVE_OUT):
            raise CorrectionsError(
                f"{name}, line {line}: the action must be {RELABEL!r} or {LEAVE_OUT!r}, not {cells['action']!r}."
            )
        if action == LEAVE_OUT:
            corrected = None  # the action decides: a label left in the cell while editing is ignored
        if action == RELABEL and corrected is None:
            raise CorrectionsError(
                f"{name}, line {line}: the corrected_label is empty; write the class it belongs to."
            )
        try:
            correction = Correction(cells["path"], cells["given_label"], corrected)
        except CorrectionsError as exc:
            raise CorrectionsError(f"{name}, line {line}: {exc}") from None
        found.pop(correction.path, None)
        found[correction.path] = correction
    return tuple(found.values())


# ----------------------------------------------------------------------------------------------------------
# Applying corrections to a scan


@dataclass(frozen=True)
class AppliedCorrections:
    """What `apply_corrections` did.

    Attributes:
        applied: the corrections now in the data, in the order given.
        not_applied: (correction, why in words) for the others.
    """

    applied: tuple[Correction, ...] = ()
    not_applied: tuple[tuple[Correction, str], ...] = ()

    @property
    def relabelled(self) -> int:
        return sum(not c.leave_out for c in self.applied)

    @property
    def left_out(self) -> int:
        return sum(c.leave_out for c in self.applied)

    def __bool__(self) -> bool:
        return bool(self.applied or self.not_applied)

    def summary(self) -> str:
        """One sentence: ``12 corrections applied (10 relabelled, 2 left out); 1 not applied.``"""
        n = len(self.applied)
        text = f"{n} correction{'' if n == 1 else 's'} applied ({self.relabelled} relabelled, {self.left_out} left out)"
        if self.not_applied:
            text += f"; {len(self.not_applied)} not applied"
        return text + "."

    def counts(self) -> dict:
        """The counts plan.json records."""
        return {
            "applied": len(self.applied),
            "relabelled": self.relabelled,
            "left_out": self.left_out,
            "not_applied": len(self.not_applied),
        }

    def to_dict(self) -> dict:
        """What corrections.json in a run folder holds."""
        return {
            "counts": self.counts(),
            "applied": [c.to_dict() for c in self.applied],
            "not_applied": [{**c.to_dict(), "reason": why} for c, why in self.not_applied],
        }

    @classmethod
    def from_dict(cls, d: dict) -> AppliedCorrections:
        """Read back `to_dict` (corrections.json).

        Raises:
            CorrectionsError: the data is damaged.
        """
        try:
            applied = tuple(Correction(e["path"], e["given"], e["corrected"]) for e in d["applied"])
            not_applied = tuple(
                (Correction(e["path"], e["given"], e["corrected"]), str(e["reason"]))
                for e in d["not_applied"]
            )
        except (KeyError, TypeError, CorrectionsError) as exc:
            raise CorrectionsError(f"The run's record of its label corrections is damaged ({exc}).") from exc
        return cls(applied, not_applied)


def run_corrections(run_dir: str | os.PathLike) -> AppliedCorrections | None:
    """The corrections a run trained with (its corrections.json); None when it had none.

    Raises:
        CorrectionsError: the file is damaged.
    """
    path = Path(run_dir) / "corrections.json"
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorrectionsError(f"{path} cannot be read ({exc}).") from exc
    if not isinstance(d, dict):
        raise CorrectionsError(f"{path} is damaged: not a JSON object.")
    return AppliedCorrections.from_dict(d)


def apply_corrections(
    report: DatasetReport, corrections: Iterable[Correction]
) -> tuple[DatasetReport, AppliedCorrections]:
    """The scan with the corrections applied: photos relabelled or left out, counts updated.

    A correction is not applied, and says why, when its photo is not among the scanned photos (deleted,
    moved, unreadable), when its folder gives another label than the one it was made against (the photo was
    moved into another class folder since), or when its class is not one of the folder's classes. A class
    left without a training photo gets a warning in the report.

    Args:
        report: a scan (`data.scan`).
        corrections: in order; a photo named twice takes the last.

    Returns:
        (the corrected report, what was applied and what not).
    """
    latest: dict[str, Correction] = {}
    for c in corrections:
        latest.pop(c.path, None)
        latest[c.path] = c
    if not latest:
        return report, AppliedCorrections()
    index = {name: i for i, name in enumerate(report.classes)}
    where = {s.path: (part, s) for part in ("train", "val") for s in getattr(report, part)}
    changed: dict[str, int | None] = {}
    applied, not_applied = [], []
    for c in latest.values():
        part_sample = where.get(c.path)
        if part_sample is None:
            on_disk = report.path_of(Sample(c.path, 0)).is_file()
            why = (
                "the photo is in the folder but was not usable in the scan (see the skipped files)"
                if on_disk
                else "the photo is no longer in the folder"
            )
            not_applied.append((c, why))
            continue
        _, sample = part_sample
        now = report.classes[sample.label]
        if now != c.given:
            not_applied.append((c, f"its folder labels it {now!r} now, not {c.given!r} (moved since?)"))
            continue
        if c.corrected is not None and c.corrected not in index:
            not_applied.append((c, f"there is no class {c.corrected!r} in this folder"))
            continue
        changed[c.path] = None if c.corrected is None else index[c.corrected]
        applied.append(c)
    if not changed:
        return report, AppliedCorrections((), tuple(not_applied))

    def corrected(samples: tuple[Sample, ...]) -> tuple[Sample, ...]:
        out = []
        for s in samples:
            label = changed.get(s.path, s.label)
            if label is not None:
                out.append(Sample(s.path, label))
        return tuple(out)

    train, val = corrected(report.train), corrected(report.val)
    counts = {"train": _counts(train, len(report.classes))}
    if "val" in report.counts:
        counts["val"] = _counts(val, len(report.classes))
    present = [n for n in map(sum, zip(*counts.values(), strict=True)) if n]
    empty = [name for name, n in zip(report.classes, counts["train"], strict=True) if not n]
    warnings = list(report.warnings)
    if empty:
        names = ", ".join(repr(e) for e in empty[:5]) + (
            f" and {len(empty) - 5} more" if len(empty) > 5 else ""
        )
        warnings.append(
            f"After the corrections, {names} {'has' if len(empty) == 1 else 'have'} no training photo left."
        )
    corrected_report = dataclasses.replace(
        report,
        train=train,
        val=val,
        counts=counts,
        imbalance=max(present) / min(present) if present else None,
        warnings=tuple(warnings),
    )
    return corrected_report, AppliedCorrections(tuple(applied), tuple(not_applied))


def _counts(samples: Sequence[Sample], num_classes: int) -> tuple[int, ...]:
    counts = [0] * num_classes
    for s in samples:
        counts[s.label] += 1
    return tuple(counts)
