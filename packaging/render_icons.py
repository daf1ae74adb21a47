"""Render the application icon from its SVG source: PNGs for every size, a Windows .ico and a macOS .icns.

    python packaging/render_icons.py           # (re)write resources/icons/
    python packaging/render_icons.py --check   # exit 1 if the committed files differ from a fresh render

The SVG (resources/bit-studio.svg) is the only hand-made file. Qt's SVG renderer (QtSvg, part of the
pyside6-essentials wheel the app already depends on) draws it at each size, so small sizes are rendered from
the vectors rather than scaled down from a large bitmap; Pillow, also a dependency already, packs the renders
into .ico (16-256 px, PNG-compressed entries) and .icns (16@2x up to 512@2x; Pillow writes the PNG-based
types ic07-ic14, which macOS 10.7 and later read).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

from PIL import Image, ImageChops

ROOT = Path(__file__).resolve().parent.parent
SVG = ROOT / "resources" / "bit-studio.svg"
ICON_DIR = ROOT / "resources" / "icons"
NAME = "bit-studio"

#: The PNG sizes committed (and installed into the freedesktop hicolor theme on Linux).
PNG_SIZES = (16, 32, 48, 64, 128, 256, 512)
#: What a Windows .ico holds: Explorer and the taskbar pick 16, 24, 32, 48 and 256 among these.
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)
#: What Pillow's .icns writer stores (pixel sizes of ic11, ic12, ic07, ic08/ic13, ic09/ic14, ic10).
ICNS_SIZES = (32, 64, 128, 256, 512, 1024)

#: A re-render may differ from the committed PNG by this much per channel (0-255) where the rasterizer's
#: antialiasing changes between Qt versions; anything larger means the SVG changed and the files are stale.
TOLERANCE = 8


def _ensure_gui_application():
    """QtSvg rendering into a QImage needs a QGuiApplication (for the font and raster engines)."""
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance()
    if app is None:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        app = QGuiApplication(sys.argv[:1])
    return app


def render(size: int, svg: Path = SVG) -> Image.Image:
    """The SVG drawn at `size` x `size` pixels, as an RGBA Pillow image (straight, not premultiplied, alpha).

    Raises:
        ValueError: the SVG cannot be read.
    """
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _ensure_gui_application()
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise ValueError(f"{svg} is not a valid SVG file")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    rgba = image.convertToFormat(QImage.Format.Format_RGBA8888)
    return Image.frombuffer(
        "RGBA", (size, size), bytes(rgba.constBits()), "raw", "RGBA", rgba.bytesPerLine(), 1
    ).copy()


def _png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()


def png_path(size: int, folder: Path = ICON_DIR) -> Path:
    return folder / f"{NAME}-{size}.png"


def ico_path(folder: Path = ICON_DIR) -> Path:
    return folder / f"{NAME}.ico"


def icns_path(folder: Path = ICON_DIR) -> Path:
    return folder / f"{NAME}.icns"


def write_icons(folder: Path = ICON_DIR, svg: Path = SVG) -> list[Path]:
    """Render every icon file into `folder`; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    renders = {size: render(size, svg) for size in sorted({*PNG_SIZES, *ICO_SIZES, *ICNS_SIZES})}
    written = []
    for size in PNG_SIZES:
        path = png_path(size, folder)
        path.write_bytes(_png_bytes(renders[size]))
        written.append(path)

    # Both writers take the largest image first and the exact renders for the other sizes, so nothing is
    # resampled from a bitmap.
    ico_images = [renders[s] for s in ICO_SIZES]
    ico_images[-1].save(
        ico_path(folder), "ICO", sizes=[(s, s) for s in ICO_SIZES], append_images=ico_images[:-1]
    )
    icns_images = [renders[s] for s in ICNS_SIZES]
    icns_images[-1].save(icns_path(folder), "ICNS", append_images=icns_images[:-1])
    written += [ico_path(folder), icns_path(folder)]
    return written


def largest_difference(a: Image.Image, b: Image.Image) -> int:
    """The largest per-channel difference (0-255) between two RGBA images of the same size."""
    if a.size != b.size:
        return 255
    extrema = ImageChops.difference(a.convert("RGBA"), b.convert("RGBA")).getextrema()
    return max(high for _low, high in extrema)


def stale_files(folder: Path = ICON_DIR, svg: Path = SVG) -> list[str]:
    """Descriptions of committed icon files that are missing or differ from a fresh render of the SVG."""
    problems = []
    for size in PNG_SIZES:
        path = png_path(size, folder)
        if not path.is_file():
            problems.append(f"{path.name}: missing")
            continue
        with Image.open(path) as committed:
            diff = largest_difference(committed, render(size, svg))
        if diff > TOLERANCE:
            problems.append(f"{path.name}: differs from the SVG render by {diff}/255")
    for path, expected in ((ico_path(folder), set(ICO_SIZES)), (icns_path(folder), set(ICNS_SIZES))):
        if not path.is_file():
            problems.append(f"{path.name}: missing")
            continue
        with Image.open(path) as icon:
            sizes = {w for w, _h, *_scale in (_pixel_size(s) for s in icon.info.get("sizes", ()))}
        if sizes != expected:
            problems.append(f"{path.name}: holds {sorted(sizes)} px, expected {sorted(expected)}")
    return problems


def _pixel_size(entry: tuple) -> tuple[int, int]:
    # .ico sizes are (w, h); .icns sizes are (w, h, scale): the pixel size is w * scale.
    if len(entry) == 3:
        return entry[0] * entry[2], entry[1] * entry[2]
    return entry[0], entry[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="compare the committed files with a fresh render"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = stale_files()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("Run: python packaging/render_icons.py", file=sys.stderr)
            return 1
        print(f"Icons in {ICON_DIR.relative_to(ROOT)} match {SVG.relative_to(ROOT)}.")
        return 0
    for path in write_icons():
        print(f"{path.relative_to(ROOT)}  {path.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
