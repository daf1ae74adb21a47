"""Which pre-trained model to train when the person did not choose one, and getting its weights first.

BiT-M-R50x1 is the default; its weights are downloaded once into the cache. A machine that has no copy and
cannot reach the weights host gets EfficientNet-Lite0, whose ImageNet weights ship with BiT Studio, and is
told so in the returned message. A model the person chose is never swapped: when its weights cannot be had,
`fetch_weights` refuses with the exact alternative, before any run folder exists.

The command line (`train`, `demo`) and the desktop window call these functions; both take the engine's
`on_progress` / `cancel` pair, so a window can run them on a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bit_engine import weights, weights_cache, weights_download
from bit_engine.models import DEFAULT_MODEL, get_spec
from bit_engine.units import format_bytes

#: The model whose weights ship with BiT Studio (in a Python package): training works without a network.
OFFLINE_MODEL = "EfficientNet-Lite0"

#: Seconds allowed to reach the weights host: an offline machine falls back quickly.
QUICK_TIMEOUT = 3.0


@dataclass(frozen=True)
class ModelChoice:
    """The model to train and why.

    Attributes:
        name: a name from `models.KNOWN_MODELS`.
        fell_back: the default's weights could not be had, so `OFFLINE_MODEL` was chosen.
        message: what was decided, in plain words ("" when the default was used without fuss).
        remedy: after a fall-back, what would let the default model be trained: "import" (its weights,
            fetched by other means from `url`); see `errors.REMEDIES`. None otherwise.
        url: where the default model's weights can be fetched, with `remedy`.
    """

    name: str
    fell_back: bool
    message: str
    remedy: str | None = None
    url: str | None = None


def choose_default_model(
    *,
    download: bool = True,
    on_progress: Callable[[weights_download.DownloadProgress], None] | None = None,
    cancel=None,
    timeout: float = QUICK_TIMEOUT,
) -> ModelChoice:
    """The default model when its weights are on this machine (or can be downloaded now), else the offline one.

    Args:
        download: try to download the default's weights when they are missing (False: decide from what is
            on this machine, at once and without the network).
        on_progress: called with `weights_download.DownloadProgress` during a download.
        cancel: a `threading.Event`-like flag, checked during a download.
        timeout: seconds allowed to reach the host (and for each read).

    Raises:
        weights_cache.DownloadCancelledError: `cancel` was set during the download (an `OperationCancelled`).
    """
    if weights.is_available(DEFAULT_MODEL):
        return ModelChoice(DEFAULT_MODEL, False, "")
    size = format_bytes(get_spec(DEFAULT_MODEL).size_bytes)
    if not download:
        return ModelChoice(
            OFFLINE_MODEL,
            True,
            f"{DEFAULT_MODEL}'s weights ({size}) are not on this machine: using {OFFLINE_MODEL}, whose "
            "weights ship with BiT Studio.",
        )
    try:
        weights_download.download(DEFAULT_MODEL, on_progress=on_progress, cancel=cancel, timeout=timeout)
    except weights_cache.DownloadCancelledError:
        raise
    except weights_cache.WeightsError as exc:
        reason = str(exc).split("\n")[0].split(". ")[0].rstrip(".")
        return ModelChoice(
            OFFLINE_MODEL,
            True,
            f"{DEFAULT_MODEL}'s weights are not on this machine and could not be downloaded ({reason}). "
            f"Using {OFFLINE_MODEL} instead: its weights ship with BiT Studio. To train {DEFAULT_MODEL}, "
            "fetch its weights by other means and import them.",
            remedy="import",
            url=weights_cache.weights_url(DEFAULT_MODEL),
        )
    return ModelChoice(DEFAULT_MODEL, False, f"Downloaded {DEFAULT_MODEL}'s weights ({size}).")


def fetch_weights(
    name: str,
    *,
    on_progress: Callable[[weights_download.DownloadProgress], None] | None = None,
    cancel=None,
) -> None:
    """Make sure the named model's weights are on this machine, downloading them when missing.

    Raises:
        weights_cache.WeightsError: they cannot be had; the message ends with the model that needs no
            download, which is also its remedy ("offline_model"); the download's own error is its cause.
        weights_cache.DownloadCancelledError: `cancel` was set.
    """
    if weights.is_available(name):
        return
    try:
        weights_download.download(name, on_progress=on_progress, cancel=cancel)
    except weights_cache.DownloadCancelledError:
        raise
    except weights_cache.WeightsError as exc:
        raise weights_cache.WeightsError(
            f"{exc}\nOr train {OFFLINE_MODEL} instead: its weights ship with BiT Studio.",
            remedy="offline_model",
            model=OFFLINE_MODEL,
        ) from exc
