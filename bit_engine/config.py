"""The typed description of a training run, built by the GUI or the CLI and saved in every run and checkpoint.

Only what the user decides lives here; what the HyperRule derives from the data (schedule, resolution, lr)
is recomputed from it and saved next to it as plan.json, so any run can be explained and repeated.

This module imports neither torch nor the model table, so a form can build and check a config at once.
The choices are typed (`Strategy`, `Precision`) and listed once (`STRATEGIES`, `PRECISIONS`); front ends
take their menus from here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import PureWindowsPath
from typing import Literal, get_args

from bit_engine.errors import BitStudioError

Strategy = Literal["full", "head", "scratch"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]

STRATEGIES: tuple[str, ...] = get_args(Strategy)
PRECISIONS: tuple[str, ...] = get_args(Precision)

#: What a strategy does, in a sentence a form can show next to the choice.
STRATEGY_HELP = {
    "full": "fine-tune every layer (BiT's way: the best accuracy, the longest run)",
    "head": "keep the pre-trained network frozen and train only a new head (fast, even on a CPU)",
    "scratch": "no pre-training, the same schedule (a baseline that shows what transfer buys)",
}

#: The model a new run uses unless the user picks another (a name from `models.KNOWN_MODELS`).
DEFAULT_MODEL = "BiT-M-R50x1"


class ConfigError(BitStudioError, ValueError):
    """A config with settings out of range (a ValueError too, for callers that check arguments that way).

    Attributes:
        problems: field name -> message, as `TrainConfig.validate` gives them.
    """

    def __init__(self, problems: dict[str, str]):
        super().__init__(" ".join(problems.values()))
        self.problems = problems


@dataclass(frozen=True)
class TrainConfig:
    """A training run. None on an override means: the HyperRule decides.

    Building one with settings out of range raises `ConfigError`; a form checks its fields first with
    `TrainConfig.check(**fields)`, which says what is wrong with each.
    """

    data_dir: str  # the labelled folder (one sub-folder per class)
    model: str = DEFAULT_MODEL  # a name from models.KNOWN_MODELS
    strategy: Strategy = (
        "full"  # full: fine-tune everything (BiT); head: frozen backbone; scratch: random init
    )
    steps: int | None = None  # total optimizer steps (the rule: 500 / 10k / 20k by dataset size)
    batch: int | None = None  # global batch; the lr scales linearly (the rule: 512 at lr 0.003)
    resolution: int | None = None  # input side after the crop; the pre-crop resize keeps the rule's ratio
    mixup: float | None = None  # mixup alpha (the rule: 0 below 20k images, else 0.1)
    flip: bool = True  # random horizontal flip; off where mirroring changes the label
    random_crop: bool = True  # random crop; off where positions matter
    device: str | None = None  # cpu, cuda, cuda:N; None: a GPU when one is usable, else the CPU
    seed: int = 0  # data order, augmentation, mixup and split all derive from it
    val_fraction: float = 0.2  # held out for validation when the folder has no split of its own
    precision: Precision = (
        "auto"  # auto: bf16 where the device has it natively, else fp32; or fp32, bf16, fp16
    )
    micro_batch: int | None = None  # images per forward pass; None: sized to the device's memory
    workers: int | None = None  # DataLoader worker processes; None: chosen from the CPU count
    evaluations: int = 10  # evaluations over the run (plus one at the end)
    checkpoint_minutes: float = 5.0  # also checkpoint this often, so a crash loses little
    # Label corrections applied to the scanned folder before the split: (path relative to data_dir, label
    # given by the folder, corrected label or None to leave the photo out). See corrections.py.
    corrections: tuple[tuple[str, str, str | None], ...] = ()

    def __post_init__(self):
        # Read back from config.json the corrections are lists: made tuples again (hashable, comparable).
        if isinstance(self.corrections, list | tuple) and all(
            isinstance(c, list | tuple) for c in self.corrections
        ):
            object.__setattr__(self, "corrections", tuple(tuple(c) for c in self.corrections))
        problems = self.validate()
        if problems:
            raise ConfigError(problems)

    def validate(self) -> dict[str, str]:
        """What is wrong, by field name, in words a form can show next to the field; empty when all is well.

        Checks ranges and choices only. Whether the model is known, the device usable or the folder
        trainable is for `models.get_spec`, `devices.resolve_device` and the scan to say.
        """
        problems: dict[str, str] = {}

        def at_least(name: str, minimum: int, what: str, maximum: int | None = None) -> None:
            # The upper bounds keep a config.json edited by hand (or by an attacker) from asking for a
            # million worker processes or a billion evaluations: a clear message instead of a MemoryError.
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < minimum
            ):
                problems[name] = f"{what} must be a whole number of at least {minimum}, not {value!r}."
            elif value is not None and maximum is not None and value > maximum:
                problems[name] = f"{what} must be a whole number of at most {maximum}, not {value!r}."

        if not str(self.data_dir).strip():
            problems["data_dir"] = "Choose the folder of labelled photos."
        if not str(self.model).strip():
            problems["model"] = "Choose a model."
        if self.strategy not in STRATEGIES:
            problems["strategy"] = f"Unknown strategy {self.strategy!r}: use one of {', '.join(STRATEGIES)}."
        at_least("steps", 1, "Steps")
        at_least("batch", 1, "The batch")
        at_least("resolution", 8, "The resolution", 4096)
        at_least("micro_batch", 1, "The micro-batch")
        at_least("workers", 0, "Workers", 64)
        at_least("evaluations", 1, "Evaluations", 10_000)
        at_least("seed", 0, "The seed", 2**63 - 1)
        if self.mixup is not None and not (
            isinstance(self.mixup, int | float) and not isinstance(self.mixup, bool) and 0 <= self.mixup <= 10
        ):
            problems["mixup"] = f"Mixup alpha must be a number from 0 to 10, not {self.mixup!r}."
        if not (isinstance(self.val_fraction, int | float) and 0.0 < self.val_fraction < 1.0):
            problems["val_fraction"] = (
                f"Validation fraction must be between 0 and 1, got {self.val_fraction}."
            )
        if self.precision not in PRECISIONS:
            problems["precision"] = (
                f"Unknown precision {self.precision!r}: use one of {', '.join(PRECISIONS)}."
            )
        if not (
            isinstance(self.checkpoint_minutes, int | float) and math.isfinite(self.checkpoint_minutes)
        ) or (self.checkpoint_minutes <= 0):
            problems["checkpoint_minutes"] = "Checkpoint minutes must be a positive number."
        if self.device is not None and not _is_device_text(self.device):
            problems["device"] = f"Unknown device {self.device!r}: use cpu, cuda or cuda:N."
        bad = _bad_correction(self.corrections)
        if bad:
            problems["corrections"] = bad
        return problems

    @classmethod
    def check(cls, **fields) -> dict[str, str]:
        """`validate` for field values that may not make a config yet (a form's current entries)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            return {name: f"{name} is not a training setting." for name in unknown}
        fields.setdefault("data_dir", "")
        config = object.__new__(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            object.__setattr__(config, f.name, fields.get(f.name, default))
        return config.validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        if not isinstance(d, dict):  # config.json read back from a run folder: anything may be in it
            raise ConfigError({"config": "The run's settings (config.json) are damaged: not a JSON object."})
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


#: More corrections than this in one config is a damaged or crafted config.json, not a person's work.
MAX_CORRECTIONS = 1_000_000


def _bad_correction(corrections) -> str:
    """What is wrong with a config's corrections, in words; "" when they are well formed."""
    if not isinstance(corrections, list | tuple):
        return "Corrections must be a list of (path, given label, corrected label) entries."
    if len(corrections) > MAX_CORRECTIONS:
        return f"Too many corrections ({len(corrections):,}; at most {MAX_CORRECTIONS:,})."
    for entry in corrections:
        if not (isinstance(entry, list | tuple) and len(entry) == 3):
            return f"A correction must be (path, given label, corrected label), not {entry!r}."
        path, given, corrected = entry
        if not (isinstance(path, str) and isinstance(given, str) and path and given):
            return f"A correction needs a photo path and the label it was given: {entry!r}."
        if corrected is not None and not (isinstance(corrected, str) and corrected):
            return (
                f"A correction's new label must be a class name, or none to leave the photo out: {entry!r}."
            )
        if corrected == given:
            return f"A correction must change the label: {path} is labelled {given!r} already."
        parts = path.split("/")
        if path.startswith(("/", "\\")) or PureWindowsPath(path).drive or ".." in parts or "" in parts:
            return f"A correction's path must be relative to the data folder, '/'-separated: {path!r}."
    return ""


def _is_device_text(text: str) -> bool:
    kind, _, index = str(text).partition(":")
    if kind in ("cpu", "auto"):
        return index == ""
    return kind == "cuda" and (index == "" or index.isdigit())
