"""BiT Studio's engine: plain Python and PyTorch, no GUI."""

import os as _os

__version__ = "0.1.0"

# onnxruntime (1.2x and later, Linux builds included) keeps a telemetry queue: a SQLite database
# ("onnxruntime.db", the events waiting to be sent to Microsoft's collector) and a random "deviceid" under
# ~/.cache/Microsoft/DeveloperTools/.onnxruntime, created the first time a session starts. Its
# `disable_telemetry_events()` does not stop that; this variable does, and only when it is set before
# onnxruntime is first imported, which the engine does lazily, after this package. A value the user set
# themselves is kept.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
