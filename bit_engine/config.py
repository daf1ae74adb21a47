"""The typed description of a training run, built by the GUI or the CLI and saved in every run and checkpoint.

Only what the user decides lives here; what the HyperRule derives from the data (schedule, resolution, lr)
is recomputed from it and saved next to it as plan.json, so any run can be explained and repeated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bit_engine.errors import BitStudioError
from bit_engine.models import DEFAULT_MODEL

STRATEGIES = ("full", "head", "scratch")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# (field, lowest, highest, may be None): the whole-number settings and the values they may take.
_WHOLE_NUMBERS = (
    ("steps", 1, 10**9, True),
    ("batch", 1, 10**7, True),
    ("resolution", 8, 4096, True),
    ("micro_batch", 1, 10**7, True),
    ("workers", 0, 64, True),
    ("evaluations", 0, 10_000, False),
    ("seed", 0, 2**63 - 1, False),  # numpy seeds are never negative
)


class ConfigError(BitStudioError, ValueError):
    """A setting out of its range (a ValueError too, for callers that check arguments that way)."""


@dataclass(frozen=True)
class TrainConfig:
    """A training run. None on an override means: the HyperRule decides."""

    data_dir: str  # the labelled folder (one sub-folder per class)
    model: str = DEFAULT_MODEL  # a name from models.KNOWN_MODELS
    strategy: str = "full"  # full: fine-tune everything (BiT); head: frozen backbone; scratch: random init
    steps: int | None = None  # total optimizer steps (the rule: 500 / 10k / 20k by dataset size)
    batch: int | None = None  # global batch; the lr scales linearly (the rule: 512 at lr 0.003)
    resolution: int | None = None  # input side after the crop; the pre-crop resize keeps the rule's ratio
    mixup: float | None = None  # mixup alpha (the rule: 0 below 20k images, else 0.1)
    flip: bool = True  # random horizontal flip; off where mirroring changes the label
    random_crop: bool = True  # random crop; off where positions matter
    device: str | None = None  # cpu, cuda, cuda:N; None: a GPU when one is usable, else the CPU
    seed: int = 0  # data order, augmentation, mixup and split all derive from it
    val_fraction: float = 0.2  # held out for validation when the folder has no split of its own
    precision: str = "auto"  # auto: bf16 where the device has it natively, else fp32; or fp32, bf16, fp16
    micro_batch: int | None = None  # images per forward pass; None: sized to the device's memory
    workers: int | None = None  # DataLoader worker processes; None: chosen from the CPU count
    evaluations: int = 10  # evaluations over the run (plus one at the end)
    checkpoint_minutes: float = 5.0  # also checkpoint this often, so a crash loses little

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"Unknown strategy {self.strategy!r}: use one of {', '.join(STRATEGIES)}.")
        if not isinstance(self.val_fraction, (int, float)) or not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"Validation fraction must be between 0 and 1, got {self.val_fraction!r}.")
        # The ranges the CLI accepts; a config.json read back from a run folder goes through the same door.
        for name, low, high, optional in _WHOLE_NUMBERS:
            value = getattr(self, name)
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"{name} must be a whole number from {low} to {high}, got {value!r}.")
        if self.mixup is not None and not (isinstance(self.mixup, (int, float)) and 0 <= self.mixup <= 10):
            raise ConfigError(f"mixup must be a number from 0 to 10, got {self.mixup!r}.")
        if not isinstance(self.checkpoint_minutes, (int, float)) or not self.checkpoint_minutes > 0:
            raise ConfigError(
                f"checkpoint_minutes must be a positive number, got {self.checkpoint_minutes!r}."
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(f"Unknown precision {self.precision!r}: use one of {', '.join(PRECISIONS)}.")
        for name in ("data_dir", "model"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be text, got {getattr(self, name)!r}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A config read back from a run folder; anything malformed is a `ConfigError` naming the field."""
        if not isinstance(d, dict):
            raise ConfigError("The run's settings (config.json) are damaged: not a JSON object.")
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in d.items() if k in known})
        except (TypeError, ConfigError) as exc:
            raise ConfigError(f"The run's settings (config.json) are damaged: {exc}") from exc

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)
