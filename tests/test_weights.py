"""The weights store against a real HTTP server on 127.0.0.1, serving a tiny BiT-layout npz (~1.9 MB).

The tiny model is a ResNetV2 with depths (1, 1, 0, 0) and width 1, registered in the model table for the
duration of each test, so download, resume, verification, import and loading all run on the real code paths.
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import json
import math
import re
import socket
import sys
import threading
import time
import types
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from bit_engine import locations, models, weights, weights_cache, weights_check, weights_download
from bit_engine.cli import main
from bit_engine.cli import progress as cli_progress
from bit_engine.models import ModelSpec, ResNetV2, save_bit_npz

TINY_ARCH = "T-tiny"
TINY_CLASSES = 10


def _tiny_model(num_classes: int = TINY_CLASSES) -> ResNetV2:
    # Stages 3 and 4 empty: ~0.47M parameters, yet every kind of npz key (root, units, projection, head).
    return ResNetV2((1, 1, 0, 0), 1, num_classes, zero_head=False)


TINY = ModelSpec(
    name="BiT-T-Tiny",
    family="bit",
    arch=TINY_ARCH,
    upstream="random test weights",
    upstream_classes=TINY_CLASSES,
    params=467_530,
    url="https://storage.invalid/bit_models/BiT-T-Tiny.npz",
    license="Apache-2.0",
)
NPZ_PATH = f"/bit_models/{TINY.name}.npz"


def _npz_bytes(model: ResNetV2, folder) -> bytes:
    path = folder / "model.npz"
    save_bit_npz(model, path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def tiny_bytes(tmp_path_factory) -> bytes:
    torch.manual_seed(0)
    return _npz_bytes(_tiny_model(), tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def wide_bytes(tmp_path_factory) -> bytes:
    """Another architecture: width 2, so the very first key already has the wrong shape."""
    return _npz_bytes(ResNetV2((1, 0, 0, 0), 2, TINY_CLASSES), tmp_path_factory.mktemp("wide"))


@pytest.fixture(autouse=True)
def tiny_spec(monkeypatch):
    monkeypatch.setitem(models.KNOWN_MODELS, TINY.name, TINY)
    monkeypatch.setitem(weights_check.ARCHITECTURES, TINY_ARCH, _tiny_model)
    # Proxies from the environment must not see requests to the local test server.
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    return TINY


# ------------------------------------------------------------------------------------------------------------
# A local weights host


@dataclass
class FakeHost:
    """What the test server serves, and what it saw."""

    files: dict[str, bytes]
    base_url: str = ""
    ignore_range: bool = False
    status: int | None = None  # answer every request with this HTTP error
    drops: list[int] = field(default_factory=list)  # close the next responses after this many body bytes
    ranges: list[str | None] = field(default_factory=list)  # the Range header of every request
    no_length: bool = False  # send no Content-Length: the body ends when the connection closes


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        host: FakeHost = self.server.fake_host
        asked = self.headers.get("Range")
        host.ranges.append(asked)
        body = host.files.get(self.path)
        if host.status is not None:
            self.send_error(host.status)
            return
        if body is None:
            self.send_error(404)
            return
        start = 0
        if asked and not host.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", asked).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        if host.no_length:
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if host.drops:
            payload = payload[: host.drops.pop(0)]
            self.close_connection = True
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client cancelled
            self.wfile.write(payload)

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def host(monkeypatch, tiny_bytes):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    fake = FakeHost(
        files={NPZ_PATH: tiny_bytes}, base_url=f"http://127.0.0.1:{server.server_port}/bit_models"
    )
    server.fake_host = fake
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(weights_cache.WEIGHTS_URL_ENV, fake.base_url)
    yield fake
    server.shutdown()
    server.server_close()


def _cache_contents() -> list[str]:
    folder = locations.weights_dir()
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ------------------------------------------------------------------------------------------------------------
# Download


def test_download_reports_progress_up_to_the_total(host, tiny_bytes):
    seen = []
    path = weights_download.download(TINY.name, on_progress=seen.append)
    assert path == locations.weights_dir() / "BiT-T-Tiny.npz"
    assert path.read_bytes() == tiny_bytes
    assert seen[0].done == 0
    assert seen[-1].done == seen[-1].total == len(tiny_bytes)
    assert seen[-1].fraction == 1.0 and seen[-1].eta == 0
    assert [p.done for p in seen] == sorted(p.done for p in seen)
    assert len(seen) >= 3  # more than start and end: one report per chunk
    assert host.ranges == [None]
    assert _cache_contents() == ["BiT-T-Tiny.npz"]  # no partial file left behind
    assert weights.cached_path("bit-t-tiny") == path and weights.is_available(TINY.name)


def test_dropped_connection_resumes_with_a_range_request(host, tiny_bytes):
    host.drops = [700_000]
    path = weights_download.download(TINY.name)
    assert host.ranges == [None, "bytes=700000-"]
    assert path.read_bytes() == tiny_bytes


def test_interrupted_download_keeps_the_partial_file_for_the_next_call(host, tiny_bytes):
    host.drops = [700_000]
    with pytest.raises(weights_cache.DownloadInterruptedError, match="again to resume") as info:
        weights_download.download(TINY.name, retries=0)
    partial = weights_cache.partial_path(TINY.name)
    assert str(partial) in str(info.value)
    assert partial.read_bytes() == tiny_bytes[:700_000]
    assert weights.cached_path(TINY.name) is None
    assert weights.list_models()[-1].partial_bytes == 700_000

    path = weights_download.download(TINY.name)
    assert host.ranges == [None, "bytes=700000-"]
    assert path.read_bytes() == tiny_bytes
    assert not partial.exists()


def test_server_ignoring_range_restarts_cleanly(host, tiny_bytes):
    partial = weights_cache.partial_path(TINY.name)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\xff" * 500_000)  # garbage: it must not end up in the result
    host.ignore_range = True
    path = weights_download.download(TINY.name)
    assert host.ranges == ["bytes=500000-"]
    assert path.read_bytes() == tiny_bytes


def test_partial_longer_than_the_file_starts_over(host, tiny_bytes):
    partial = weights_cache.partial_path(TINY.name)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\0" * (len(tiny_bytes) + 10))
    path = weights_download.download(TINY.name)
    assert host.ranges == [f"bytes={len(tiny_bytes) + 10}-", None]
    assert path.read_bytes() == tiny_bytes


def test_cancel_keeps_the_partial_file_and_a_later_download_resumes(host, tiny_bytes):
    cancel = threading.Event()

    def on_progress(p):
        if p.done > 0:
            cancel.set()

    with pytest.raises(weights_cache.DownloadCancelledError, match=r"cancelled.*resumes") as info:
        weights_download.download(TINY.name, on_progress=on_progress, cancel=cancel)
    kept = weights_cache.partial_path(TINY.name).stat().st_size
    assert 0 < kept < len(tiny_bytes)
    assert cli_progress.format_bytes(kept) in str(info.value)

    path = weights_download.download(TINY.name)
    assert host.ranges == [None, f"bytes={kept}-"]
    assert path.read_bytes() == tiny_bytes


def test_http_404_names_the_url_and_the_way_out(host):
    host.files.clear()
    with pytest.raises(weights_cache.DownloadHTTPError) as info:
        weights_download.download(TINY.name)
    message = str(info.value)
    assert info.value.status == 404
    assert "HTTP 404" in message and f"{host.base_url}/BiT-T-Tiny.npz" in message
    assert weights_cache.WEIGHTS_URL_ENV in message  # a mirror is configured: say to check it
    assert "fetch" in message and "by other means" in message
    remedy = info.value.remedy, info.value.model, info.value.url
    assert remedy == ("import", TINY.name, f"{host.base_url}/BiT-T-Tiny.npz")
    assert _cache_contents() == []


def test_other_http_errors_are_reported(host):
    host.status = 503
    with pytest.raises(weights_cache.DownloadHTTPError, match=r"HTTP 503.*Try again later") as info:
        weights_download.download(TINY.name)
    assert info.value.status == 503


def test_unreachable_host_fails_fast_and_says_how_to_import(monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(weights_cache.WEIGHTS_URL_ENV, f"http://127.0.0.1:{port}/bit_models")
    started = time.monotonic()
    with pytest.raises(weights_cache.HostUnreachableError) as info:
        weights_download.download(TINY.name, timeout=3)
    assert time.monotonic() - started < 3
    message = str(info.value)
    assert f"Could not reach 127.0.0.1:{port}" in message
    assert f"http://127.0.0.1:{port}/bit_models/BiT-T-Tiny.npz" in message
    assert (info.value.remedy, info.value.model) == ("import", TINY.name)


def test_weights_url_is_official_unless_overridden(monkeypatch):
    monkeypatch.delenv(weights_cache.WEIGHTS_URL_ENV)
    assert (
        weights_cache.weights_url("bit-m-r50x1")
        == "https://storage.googleapis.com/bit_models/BiT-M-R50x1.npz"
    )
    monkeypatch.setenv(weights_cache.WEIGHTS_URL_ENV, "http://mirror.lan/bit/")
    assert weights_cache.weights_url("BiT-M-R50x1") == "http://mirror.lan/bit/BiT-M-R50x1.npz"


@pytest.mark.parametrize("damage", ["truncated", "flipped byte"])
def test_corrupted_download_is_rejected_and_deleted(host, tiny_bytes, damage):
    if damage == "truncated":
        host.files[NPZ_PATH] = tiny_bytes[: len(tiny_bytes) // 2]
    else:
        middle = len(tiny_bytes) // 2  # inside the data of a large array: only the zip checksum sees it
        host.files[NPZ_PATH] = (
            tiny_bytes[:middle] + bytes([tiny_bytes[middle] ^ 0xFF]) + tiny_bytes[middle + 1 :]
        )
    with pytest.raises(weights_cache.CorruptWeightsError, match="deleted") as info:
        weights_download.download(TINY.name)
    assert ("truncated" if damage == "truncated" else "fails its checksum") in str(info.value)
    assert _cache_contents() == []


def test_download_of_another_architecture_is_rejected_naming_the_mismatch(host, wide_bytes):
    host.files[NPZ_PATH] = wide_bytes
    with pytest.raises(models.WeightsMismatchError) as info:
        weights_download.download(TINY.name)
    message = str(info.value)
    assert "'resnet/root_block/standardized_conv2d/kernel' has shape (7, 7, 3, 128)" in message
    assert "expects (7, 7, 3, 64)" in message
    assert _cache_contents() == []


class _FullDisk:
    """A partial file whose disk fills up after `room` bytes."""

    def __init__(self, f, room: int):
        self._f, self._room = f, room

    def write(self, data: bytes) -> int:
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= len(data)
        return self._f.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __getattr__(self, name):
        return getattr(self._f, name)


def test_disk_full_while_writing_says_how_much_space_is_needed_and_where(host, tiny_bytes, monkeypatch):
    real_open = weights_download._open_partial
    monkeypatch.setattr(
        weights_download, "_open_partial", lambda path, append: _FullDisk(real_open(path, append), 600_000)
    )
    with pytest.raises(weights_cache.DiskFullError) as info:
        weights_download.download(TINY.name)
    message = str(info.value)
    written = weights_download.CHUNK_SIZE * (600_000 // weights_download.CHUNK_SIZE)
    assert (
        f"needs {cli_progress.format_bytes(len(tiny_bytes) - written)} more in {locations.weights_dir()}"
        in (message)
    )
    assert locations.CACHE_ENV in message
    assert (
        weights_cache.partial_path(TINY.name).stat().st_size == written
    )  # kept: resumes once space is freed
    assert weights.cached_path(TINY.name) is None


def test_too_little_free_space_is_reported_before_downloading(host, tiny_bytes, monkeypatch):
    usage = types.SimpleNamespace(total=10**9, used=10**9 - 1000, free=1000)
    monkeypatch.setattr(weights_download.shutil, "disk_usage", lambda path: usage)
    with pytest.raises(weights_cache.DiskFullError, match=r"needs 1.9 MB more .* \(only 1.0 KB free\)"):
        weights_download.download(TINY.name)
    assert _cache_contents() == []


def test_models_shipped_in_a_package_have_nothing_to_download():
    with pytest.raises(weights_cache.NothingToDownloadError, match="ship with the app"):
        weights_download.download("EfficientNet-Lite0")


# ------------------------------------------------------------------------------------------------------------
# Verification of the real table, without allocating the models


@pytest.mark.parametrize("name", [n for n, s in models.KNOWN_MODELS.items() if s.family == "bit"])
def test_expected_shapes_of_every_released_model_add_up_to_its_parameter_count(name):
    spec = models.get_spec(name)
    shapes = weights_check.expected_npz_shapes(spec)
    assert sum(math.prod(s) for s in shapes.values()) == spec.params
    classes = spec.upstream_classes
    assert shapes["resnet/head/conv2d/kernel"][-1] == classes and shapes["resnet/head/conv2d/bias"] == (
        classes,
    )


def test_verify_reads_headers_not_arrays(tmp_path, tiny_bytes, monkeypatch):
    path = tmp_path / "BiT-T-Tiny.npz"
    path.write_bytes(tiny_bytes)

    def no_loading(*args, **kwargs):
        raise AssertionError("np.load must not be needed to verify")

    monkeypatch.setattr(np, "load", no_loading)
    weights_check.verify_npz(path, TINY.name)


# ------------------------------------------------------------------------------------------------------------
# Import


def test_import_infers_the_name_and_never_touches_the_source(tmp_path, tiny_bytes):
    source = tmp_path / "Downloads" / "BiT-T-Tiny (1).npz"
    source.parent.mkdir()
    source.write_bytes(tiny_bytes)
    before = source.stat()
    stale = weights_cache.partial_path(TINY.name)
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    path = weights.import_npz(source)
    assert path == locations.weights_dir() / "BiT-T-Tiny.npz"
    assert path.read_bytes() == tiny_bytes
    assert source.read_bytes() == tiny_bytes and source.stat().st_mtime_ns == before.st_mtime_ns
    assert not stale.exists()  # the half download of the same model is obsolete
    assert _cache_contents() == ["BiT-T-Tiny.npz"]


def test_import_with_an_explicit_name(tmp_path, tiny_bytes):
    source = tmp_path / "weights.npz"
    source.write_bytes(tiny_bytes)
    with pytest.raises(weights_cache.WeightsImportError, match="say which one it is") as info:
        weights.import_npz(source)
    assert (info.value.remedy, info.value.path) == ("name_model", source)
    assert weights.import_npz(source, name="bit-t-tiny").read_bytes() == tiny_bytes


def test_import_rejects_another_architecture_and_a_non_npz(tmp_path, wide_bytes):
    wide = tmp_path / "BiT-T-Tiny.npz"
    wide.write_bytes(wide_bytes)
    with pytest.raises(models.WeightsMismatchError, match=r"has shape.*Nothing was imported"):
        weights.import_npz(wide)
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    with pytest.raises(models.NotAnNpzError, match=r"not a valid \.npz"):
        weights.import_npz(text, name=TINY.name)
    with pytest.raises(weights_cache.WeightsImportError, match="does not exist"):
        weights.import_npz(tmp_path / "missing.npz")
    assert _cache_contents() == []


@pytest.mark.parametrize(
    ("filename", "name"),
    [
        ("BiT-M-R50x1.npz", "BiT-M-R50x1"),
        ("bit-s-r101x3.npz", "BiT-S-R101x3"),
        ("BiT-M-R50x1-ILSVRC2012 (2).npz", "BiT-M-R50x1-ILSVRC2012"),
        ("copy of BiT-M-R50x1 (1).npz", "BiT-M-R50x1"),
    ],
)
def test_infer_model_name(filename, name):
    assert weights.infer_model_name(filename) == name


# ------------------------------------------------------------------------------------------------------------
# Listing and loading


def test_list_models_shows_the_cache_state(tmp_path, tiny_bytes):
    rows = {row.name: row for row in weights.list_models()}
    assert list(rows) == list(models.KNOWN_MODELS)
    assert not rows[TINY.name].cached and rows[TINY.name].size_bytes == TINY.size_bytes
    lite = rows["EfficientNet-Lite0"]
    assert lite.available and not lite.cached and lite.url == ""
    source = tmp_path / "BiT-T-Tiny.npz"
    source.write_bytes(tiny_bytes)
    weights.import_npz(source)
    row = next(r for r in weights.list_models() if r.name == TINY.name)
    assert row.cached and row.available and row.path == str(weights_cache.cache_file(TINY.name))


def test_load_pretrained_from_the_cache(tmp_path):
    torch.manual_seed(1)
    reference = _tiny_model()
    save_bit_npz(reference, tmp_path / "BiT-T-Tiny.npz")
    weights.import_npz(tmp_path / "BiT-T-Tiny.npz")
    model = weights.load_pretrained(_tiny_model(), TINY.name)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_load_pretrained_when_not_cached(host, tiny_bytes):
    with pytest.raises(weights_cache.WeightsNotCachedError, match="not on this machine yet") as info:
        weights.load_pretrained(_tiny_model(), TINY.name)
    assert (info.value.remedy, info.value.model) == ("download", TINY.name)
    seen = []
    weights.load_pretrained(_tiny_model(), TINY.name, download_if_missing=True, on_progress=seen.append)
    assert seen[-1].done == len(tiny_bytes)
    assert weights.cached_path(TINY.name).read_bytes() == tiny_bytes


def test_load_pretrained_efficientnet_uses_the_packaged_weights(monkeypatch):
    loaded = []
    fake = types.ModuleType("bit_engine.efficientnet")
    fake.load_pretrained_lite0 = loaded.append
    monkeypatch.setitem(sys.modules, "bit_engine.efficientnet", fake)
    model = torch.nn.Linear(1, 1)
    assert weights.load_pretrained(model, "efficientnet-lite0") is model
    assert loaded == [model]
    assert weights.is_available("EfficientNet-Lite0") and weights.cached_path("EfficientNet-Lite0") is None


# ------------------------------------------------------------------------------------------------------------
# Command line


def test_cli_list_as_table_and_json(capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"BiT-T-Tiny\s+T-tiny\s+1\.9 MB\s+not downloaded", out)
    assert re.search(r"EfficientNet-Lite0\s+.*bundled", out)
    assert f"Weights folder: {locations.weights_dir()}" in out
    assert main(["weights", "list", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    tiny = next(row for row in payload["models"] if row["name"] == TINY.name)
    assert tiny["cached"] is False and tiny["architecture"] == TINY_ARCH
    assert payload["weights_dir"] == str(locations.weights_dir())


def test_cli_download_then_list_shows_it_cached(host, tiny_bytes, capsys):
    assert main(["weights", "download", "BiT-T-Tiny"]) == 0
    captured = capsys.readouterr()
    assert f"Verified and saved BiT-T-Tiny to {weights_cache.cache_file(TINY.name)}" in captured.out
    assert "100.0%" in captured.err and "1.9 MB / 1.9 MB" in captured.err
    assert main(["weights", "download", "BiT-T-Tiny"]) == 0
    assert "already cached" in capsys.readouterr().out
    assert main(["weights", "list"]) == 0
    assert re.search(r"BiT-T-Tiny\s+T-tiny\s+1\.9 MB\s+cached", capsys.readouterr().out)


def test_cli_unknown_model_lists_the_known_ones(capsys):
    assert main(["weights", "download", "BiT-X-R9"]) == 2
    err = capsys.readouterr().err
    assert "Unknown model 'BiT-X-R9'" in err and "BiT-M-R50x1" in err and "Traceback" not in err


def test_cli_download_offline_prints_the_import_command(capsys):
    # conftest points the weights URL at 127.0.0.1:9, where nothing listens.
    assert main(["weights", "download", "BiT-T-Tiny", "--timeout", "3"]) == 2
    err = capsys.readouterr().err
    assert "error: Could not reach 127.0.0.1:9" in err
    assert "bit-studio weights import PATH/TO/BiT-T-Tiny.npz" in err


def test_cli_ctrl_c_keeps_the_partial_file_and_says_so(host, monkeypatch, capsys):
    def interrupt(self, fraction, text="", force=False):
        if fraction > 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_progress.TextProgress, "update", interrupt)
    assert main(["weights", "download", "BiT-T-Tiny"]) == 130
    err = capsys.readouterr().err
    partial = weights_cache.partial_path(TINY.name)
    assert partial.stat().st_size > 0
    assert f"kept in {partial}" in err and "again to resume" in err


def test_cli_import(tmp_path, tiny_bytes, wide_bytes, capsys):
    good = tmp_path / "BiT-T-Tiny.npz"
    good.write_bytes(tiny_bytes)
    assert main(["weights", "import", str(good)]) == 0
    assert f"to {weights_cache.cache_file(TINY.name)}" in capsys.readouterr().out
    wrong = tmp_path / "mine.npz"
    wrong.write_bytes(wide_bytes)
    assert main(["weights", "import", str(wrong), "--name", "BiT-T-Tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: mine.npz does not hold BiT-T-Tiny") and "Nothing was imported" in err


def test_cli_download_of_a_bundled_model_is_a_no_op(capsys):
    assert main(["weights", "download", "EfficientNet-Lite0"]) == 0
    assert "nothing to download" in capsys.readouterr().out


def test_a_mistyped_mirror_url_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(weights_cache.WEIGHTS_URL_ENV, "mirror.lan/bit")
    with pytest.raises(weights_cache.WeightsError, match=weights_cache.WEIGHTS_URL_ENV):
        weights_download.download(TINY.name)


# ------------------------------------------------------------------------------------------------------------
# A hostile or broken server: sizes are checked against the table


def test_a_file_larger_than_the_table_allows_is_refused_before_downloading(host, tiny_bytes):
    limit = weights_download.max_download_bytes(TINY)
    host.files[NPZ_PATH] = tiny_bytes + b"\0" * (limit - len(tiny_bytes) + 1)
    with pytest.raises(
        weights_cache.DownloadTooLargeError, match="that is not the weights file, so nothing was kept"
    ):
        weights_download.download(TINY.name)
    assert _cache_contents() == []  # no partial file "to resume from"


def test_a_body_without_length_stops_at_the_tables_size(host, tiny_bytes):
    host.no_length = True
    host.files[NPZ_PATH] = b"\0" * (
        3 * weights_download.max_download_bytes(TINY)
    )  # an endless stream, in effect
    with pytest.raises(weights_cache.DownloadTooLargeError, match="sends more than that"):
        weights_download.download(TINY.name)
    assert _cache_contents() == []


def test_a_body_without_length_is_accepted_within_the_tables_size(host, tiny_bytes):
    host.no_length = True
    assert weights_download.download(TINY.name).read_bytes() == tiny_bytes


def test_disk_full_message_never_reports_a_negative_amount(host, tiny_bytes, monkeypatch):
    # No Content-Length: what is missing is estimated from the table, which the npz's headers exceed a little.
    host.no_length = True
    assert len(tiny_bytes) > TINY.size_bytes
    monkeypatch.setattr(weights_download, "CHUNK_SIZE", 4096)
    real_open = weights_download._open_partial
    room = len(tiny_bytes) - 10
    monkeypatch.setattr(
        weights_download, "_open_partial", lambda path, append: _FullDisk(real_open(path, append), room)
    )
    with pytest.raises(weights_cache.DiskFullError) as info:
        weights_download.download(TINY.name)
    needed = re.search(r"needs (\S+ \S+) more", str(info.value)).group(1)
    assert not needed.startswith("-"), str(info.value)
