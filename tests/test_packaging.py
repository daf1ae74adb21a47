"""Packaging: the icons match their SVG, the Linux desktop files validate and install, the PyInstaller spec
reads, and (on request: BIT_STUDIO_BUILD_BUNDLE=1) the bundle builds and passes its own self-test."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
LINUX = PACKAGING / "linux"
APP_ID = "io.github.bitstudio.BitStudio"

sys.path.insert(0, str(PACKAGING))
import render_icons  # noqa: E402  (packaging/ is a folder of scripts, not a package)


@pytest.fixture
def qt_gui(qapp):
    """Rendering needs a QGuiApplication; pytest-qt's QApplication is one (and must be the first made)."""
    return qapp


def test_committed_icons_are_the_svg_rendered(qt_gui):
    assert render_icons.stale_files() == []


def test_a_changed_svg_makes_the_icons_stale(qt_gui, tmp_path):
    svg = tmp_path / "changed.svg"
    svg.write_text(render_icons.SVG.read_text().replace("#1f4e79", "#a00000"))
    stale = render_icons.stale_files(svg=svg)
    assert len(stale) == len(render_icons.PNG_SIZES)
    assert "bit-studio-512.png: differs from the SVG render" in " ".join(stale)


def test_every_icon_size_is_there_and_decodes():
    from PIL import Image

    for size in render_icons.PNG_SIZES:
        with Image.open(render_icons.png_path(size)) as png:
            assert (png.format, png.size, png.mode) == ("PNG", (size, size), "RGBA")
    with Image.open(render_icons.ico_path()) as ico:
        assert sorted(ico.info["sizes"]) == [(s, s) for s in render_icons.ICO_SIZES]
        for size in render_icons.ICO_SIZES:
            ico.size = (size, size)
            assert ico.load() is not None and ico.size == (size, size)
    with Image.open(render_icons.icns_path()) as icns:
        entries = icns.info["sizes"]
    pixel_sizes = set()
    for width, height, scale in entries:
        with Image.open(render_icons.icns_path()) as icns:
            icns.size = (width, height)  # Pillow's way to pick an .icns entry: its size in points, then scale
            icns.load(scale=scale)
            assert icns.size == (width * scale, height * scale) and icns.mode == "RGBA"
            pixel_sizes.add(width * scale)
    assert pixel_sizes == set(render_icons.ICNS_SIZES)


def test_the_window_carries_the_icon(window):
    from app.main import create_application

    icon = create_application().windowIcon()
    assert not icon.isNull()
    assert {s.width() for s in icon.availableSizes()} >= set(render_icons.PNG_SIZES)


def _desktop_entry() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=("#",))
    parser.optionxform = str  # keys are case-sensitive
    parser.read(LINUX / f"{APP_ID}.desktop", encoding="utf-8")
    return parser["Desktop Entry"]


def test_desktop_entry_and_metainfo_agree():
    entry = _desktop_entry()
    assert entry["Icon"] == APP_ID and entry["Exec"] == "bit-studio" and entry["Terminal"] == "false"
    component = ET.parse(LINUX / f"{APP_ID}.metainfo.xml").getroot()
    assert component.findtext("id") == APP_ID
    assert component.findtext("launchable") == f"{APP_ID}.desktop"
    assert component.findtext("project_license") == "Apache-2.0"
    from bit_engine import __version__

    assert component.find("releases/release").get("version") == __version__
    from app.main import DESKTOP_ID

    assert DESKTOP_ID == APP_ID  # the running window is matched to its menu entry by this name


@pytest.mark.skipif(not shutil.which("desktop-file-validate"), reason="desktop-file-utils is not installed")
def test_desktop_entry_validates():
    done = subprocess.run(
        ["desktop-file-validate", str(LINUX / f"{APP_ID}.desktop")], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr


@pytest.mark.skipif(not shutil.which("appstreamcli"), reason="appstream is not installed")
def test_metainfo_validates():
    done = subprocess.run(
        ["appstreamcli", "validate", "--no-net", str(LINUX / f"{APP_ID}.metainfo.xml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Errors and warnings fail; infos are allowed (0.16 does not know the newer <developer> tag yet).
    assert not any(line[:2] in ("E:", "W:") for line in done.stdout.splitlines()), done.stdout


@pytest.mark.skipif(sys.platform != "linux", reason="the freedesktop install is for Linux")
def test_install_linux_adds_and_removes_the_menu_entry(tmp_path):
    program = tmp_path / "my apps" / "bit-studio"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "share")}
    script = str(PACKAGING / "install-linux.sh")
    subprocess.run([script, str(program)], env=env, check=True, capture_output=True)

    share = tmp_path / "share"
    installed = share / "applications" / f"{APP_ID}.desktop"
    text = installed.read_text()
    assert f'Exec="{program}"' in text and f"TryExec={program}\n" in text
    for size in render_icons.PNG_SIZES:
        icon = share / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{APP_ID}.png"
        assert icon.read_bytes() == render_icons.png_path(size).read_bytes()
    assert (share / "icons/hicolor/scalable/apps" / f"{APP_ID}.svg").is_file()
    assert (share / "metainfo" / f"{APP_ID}.metainfo.xml").is_file()
    if shutil.which("desktop-file-validate"):
        subprocess.run(["desktop-file-validate", str(installed)], check=True)

    subprocess.run([script, "--uninstall"], env=env, check=True, capture_output=True)
    assert not installed.exists()
    assert not list((share / "icons").rglob(f"{APP_ID}.*"))


@pytest.mark.skipif(sys.platform != "linux", reason="the freedesktop install is for Linux")
def test_install_linux_refuses_a_missing_program(tmp_path):
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "share")}
    done = subprocess.run(
        [str(PACKAGING / "install-linux.sh"), str(tmp_path / "nothing")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "is not an executable program" in done.stderr
    assert not (tmp_path / "share").exists()


def test_spec_and_build_script_read():
    compile((PACKAGING / "bit-studio.spec").read_text(), "bit-studio.spec", "exec")
    done = subprocess.run(
        [sys.executable, str(PACKAGING / "build.py"), "--help"], capture_output=True, text=True, check=True
    )
    assert "--debug-console" in done.stdout


# ------------------------------------------------------------------------------------------------- bundle


@pytest.mark.skipif(
    os.environ.get("BIT_STUDIO_BUILD_BUNDLE") != "1",
    reason="builds a multi-GB PyInstaller bundle for many minutes: set BIT_STUDIO_BUILD_BUNDLE=1",
)
def test_bundle_builds_and_passes_its_self_test():
    done = subprocess.run(
        [sys.executable, str(PACKAGING / "build.py")], capture_output=True, text=True, timeout=3 * 3600
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    assert "self-test passed" in done.stdout
