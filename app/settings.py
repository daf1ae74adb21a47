"""The one settings module: what the window remembers between sessions, and where the app keeps its files.

Settings are a small JSON file under the platform's config folder (platformdirs), read when needed and
written atomically, so a crash never leaves half a file and a damaged file only costs the remembered values.
Every folder can be moved with an environment variable (tests point them all at a temporary folder); the
engine's own folders (weights cache, runs) are `bit_engine.locations`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import platformdirs

from bit_engine import locations
from bit_engine.fileio import atomic_write_json

#: Environment variables that override the default folders.
CONFIG_ENV = "BIT_STUDIO_CONFIG_DIR"
LOG_ENV = "BIT_STUDIO_LOG_DIR"

#: How many recently opened folders the welcome view offers.
MAX_RECENT = 8

log = logging.getLogger("bit_studio")


def config_dir() -> Path:
    """Where settings.json lives."""
    override = os.environ.get(CONFIG_ENV)
    return Path(override) if override else Path(platformdirs.user_config_dir(locations.APP_NAME))


def settings_file() -> Path:
    return config_dir() / "settings.json"


def log_dir() -> Path:
    override = os.environ.get(LOG_ENV)
    return Path(override) if override else Path(platformdirs.user_log_dir(locations.APP_NAME))


def log_file() -> Path:
    """The log the GUI writes unexpected errors to, with their tracebacks."""
    return log_dir() / "bit-studio.log"


def sample_data_dir() -> Path:
    """Where "Try the sample data" generates its photos: the app's own data folder, never the user's."""
    return locations.data_dir() / "sample-data"


@dataclass
class Settings:
    """What is remembered between sessions.

    Attributes:
        window_geometry: QWidget.saveGeometry() as hex text; "" before the first close.
        recent_folders: data folders opened, newest first.
        default_device: the device picked last in the Plan step ("cpu", "cuda:0", "all"); "" for automatic.
        last_model: the model picked last in the Plan step; "" for the default.
    """

    window_geometry: str = ""
    recent_folders: list[str] = field(default_factory=list)
    default_device: str = ""
    last_model: str = ""

    def add_recent(self, folder: str) -> None:
        """Put `folder` first in the recent list (once), keeping at most MAX_RECENT."""
        folder = str(folder)
        self.recent_folders = [folder, *(f for f in self.recent_folders if f != folder)][:MAX_RECENT]


def load() -> Settings:
    """The saved settings; defaults where the file is missing, and for any value that is damaged."""
    path = settings_file()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Settings()
    except (OSError, ValueError) as exc:
        log.warning("Settings file %s unreadable (%s); using defaults.", path, exc)
        return Settings()
    if not isinstance(raw, dict):
        return Settings()
    defaults = Settings()
    values = {}
    for f in fields(Settings):
        value = raw.get(f.name, getattr(defaults, f.name))
        if isinstance(value, type(getattr(defaults, f.name))):
            values[f.name] = value
    settings = Settings(**values)
    settings.recent_folders = [str(x) for x in settings.recent_folders if isinstance(x, str)][:MAX_RECENT]
    return settings


def save(settings: Settings) -> None:
    """Write the settings atomically. A failure (read-only home, full disk) is logged, not raised: losing
    remembered values must never stop the app."""
    try:
        atomic_write_json(settings_file(), asdict(settings))
    except OSError as exc:
        log.warning("Could not save settings to %s: %s", settings_file(), exc)


def update(**changes) -> Settings:
    """Load, change the named values, save; returns the new settings."""
    settings = load()
    for name, value in changes.items():
        if not hasattr(settings, name):
            raise AttributeError(f"No setting named {name!r}.")
        setattr(settings, name, value)
    save(settings)
    return settings


def add_recent_folder(folder: str) -> Settings:
    settings = load()
    settings.add_recent(folder)
    save(settings)
    return settings
