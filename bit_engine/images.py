"""Reading photos: one decoder shared by scanning, training, evaluation and the ONNX predictor.

Everything that turns a file into pixels goes through `open_rgb`, so the colours a model is trained on are
the colours it is evaluated and deployed on. `probe` is its cheap companion for scanning thousands of files:
it reads the header (size, format) and checks the end of the file, without decoding pixels.

How deep `probe` looks, and why:
    A header-only open (`Image.open` without `load`) accepts a file cut off halfway through a copy or a
    download, and such files are common in scraped or synced photo folders. Decoding everything would catch
    all damage but costs 5-100x more (a full 12 MP JPEG decode is ~100 ms). So `probe` also reads the last
    few hundred bytes and checks the end-of-image marker (JPEG `FF D9`, PNG `IEND`) or the lengths the file
    declares (the WebP RIFF length, the AVIF box sizes): a truncated file fails that check. When the check
    is inconclusive (a JPEG with a trailer after its image, e.g. a phone "motion photo"; BMP and TIFF, which
    have no end marker; GIF, whose one-byte trailer a cut file can end with by chance) `probe` decodes the
    image (the first frame) once, so a valid photo is never rejected on a guess. What it cannot see: corruption *inside*
    a complete file (a flipped bit in the compressed data). `open_rgb` raises `ImageError` for those, and
    callers that decode (the training loader) must treat that as a skip, not a crash. Pillow's global
`ImageFile.LOAD_TRUNCATED_IMAGES` must stay False (its default; this module never changes it): with it on,
a cut-off JPEG would "load" with a gray bottom half and be trained on silently.

Decompression bombs: the pixel count is read from the header and checked against `max_pixels` before any
pixel is decoded. The default is Pillow's own warning threshold (89,478,485 pixels, ~256 MiB as 24-bit
RGB, i.e. larger than any 80 MP camera photo): BiT never looks at more than 480x480 pixels, so a larger
image costs memory and time for nothing.

Only the formats below are ever opened: Pillow knows formats (EPS, for one) that start external programs.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import warnings
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from PIL import Image, UnidentifiedImageError, features

from bit_engine.errors import BitStudioError

#: Largest width x height decoded. Pillow's default warning threshold (see the module docstring).
MAX_PIXELS = 89_478_485

#: AVIF needs a Pillow built with libavif (11.2+ wheels are); older ones cannot read it.
_AVIF = features.check_module("avif")

#: Formats Pillow may open. "JPEG" includes MPO, the multi-picture JPEG some cameras write.
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", *(("AVIF",) if _AVIF else ()))

#: File name endings of photos this module reads (compared lower-case), for file dialogs and drop filters.
#: Scanning decides by content, not by name.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".mpo"}
    | ({".avif"} if _AVIF else set())
)

#: Photo formats people have but Pillow cannot read; named so the message can say what to do.
UNSUPPORTED_SUFFIXES = {
    ".heic": "HEIC/HEIF photos (the iPhone default) cannot be read yet",
    ".heif": "HEIC/HEIF photos (the iPhone default) cannot be read yet",
    ".jxl": "JPEG XL photos cannot be read yet",
    ".dng": "camera RAW files cannot be read",
    ".cr2": "camera RAW files cannot be read",
    ".cr3": "camera RAW files cannot be read",
    ".nef": "camera RAW files cannot be read",
    ".arw": "camera RAW files cannot be read",
    ".orf": "camera RAW files cannot be read",
    ".rw2": "camera RAW files cannot be read",
    ".raf": "camera RAW files cannot be read",
    ".svg": "drawings (SVG) cannot be read",
    ".psd": "Photoshop files cannot be read",
    **({} if _AVIF else {".avif": "AVIF photos cannot be read by this installation"}),
}

# How many bytes at the end of a file `probe` reads to find the end-of-image marker. Encoders and
# cameras sometimes pad with zero bytes after the marker; a few hundred bytes cover that.
_TAIL_BYTES = 512

_ORIENTATION_TAG = 0x0112


#: `ImageError.reason` code -> what it means, in plain words (messages add the file and what to do).
REASONS = MappingProxyType(
    {
        "missing": "the file does not exist (any more)",
        "empty": "the file is empty (0 bytes)",
        "unreadable": "the file cannot be opened (no permission)",
        "not_an_image": "the file is not a photo, or is in a format that cannot be read",
        "unsupported_format": "the photo format is not supported",
        "truncated": "the file is damaged or incomplete (cut off before the end)",
        "corrupt": "the photo data is damaged",
        "too_large": "the image is too large",
    }
)


class ImageError(BitStudioError):
    """A file that cannot be used as a photo. `str(error)` is the message for the user.

    Attributes:
        path: the file.
        reason: a short stable code for programs and reports: a key of `REASONS`.
    """

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = reason
        self.detail = detail or REASONS.get(reason, reason)
        super().__init__(f"{self.path}: {self.detail}.")


@dataclass(frozen=True)
class ImageInfo:
    """What `probe` learns from a file without decoding it.

    `width` and `height` are as displayed: already swapped when the EXIF orientation rotates the photo by
    90 degrees (read from JPEG, WebP and TIFF headers; a PNG's rare EXIF chunk after the pixels is not).
    """

    width: int
    height: int
    format: str  # Pillow's name: "JPEG", "PNG", ...
    mode: str  # Pillow's pixel mode as stored: "RGB", "L", "P", "CMYK", "I;16", ...
    orientation: int = 1  # the EXIF orientation (1 = upright; 6 and 8 are the 90-degree rotations)

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


def probe(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Read a photo's header and check its end; decode only when that check is inconclusive.

    Args:
        path: the file.
        max_pixels: width x height above which the image is refused as too large (checked on the header).

    Returns:
        The displayed size, format and mode.

    Raises:
        ImageError: with a `reason` code (see `REASONS`) for any file `open_rgb` would refuse,
            except the rare damage inside a complete file (see the module docstring).
    """
    with _open(path, max_pixels) as im:
        fmt = im.format or "?"
        orientation = _orientation(im)
        ok = _has_end_marker(im.fp, fmt)
        if not ok:
            # Inconclusive: decode once (first frame only) rather than reject a photo on a guess.
            _load(im, path)
        w, h = im.size
        if orientation in (5, 6, 7, 8):
            w, h = h, w
        return ImageInfo(w, h, fmt, im.mode, orientation)


def open_rgb(
    path: str | os.PathLike,
    *,
    max_pixels: int = MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode a photo to an upright 8-bit RGB image: the only way the engine turns files into pixels.

    - EXIF orientation is applied (a portrait phone photo comes out portrait).
    - Transparency (RGBA, LA, palette with a transparent colour) is composited on white: what a person
      sees in a viewer, and what a photo of the object would look like. Black would invent dark edges.
    - 16-bit images are scaled to 8 bits (65535 -> 255, mid-gray 32768 -> 128); Pillow's own conversion
      clips everything above 255 to white. 32-bit integer and float images are scaled the same way when
      they hold 16-bit or 0..1 data, stretched from their minimum to maximum otherwise.
    - CMYK is converted with Pillow's formula (no colour profile): close, not print-exact.
    - Animated GIF/WebP/PNG: the first frame.

    Args:
        path: the file.
        max_pixels: width x height above which the image is refused, checked before decoding.
        draft_size: (width, height) the caller will resize to anyway. A JPEG then decodes at the smallest
            1/2, 1/4 or 1/8 scale still at least that large: several times faster on camera photos. Pass
            the same value wherever the same model's images are read (training, evaluation, prediction)
            so the pixels match; None decodes at full size.

    Returns:
        A loaded PIL image in mode "RGB", detached from the file.

    Raises:
        ImageError: the file is missing, unreadable, not a photo, damaged or too large.
    """
    with _open(path, max_pixels) as im:
        if draft_size is not None and im.format in ("JPEG", "MPO"):
            # A 90-degree EXIF rotation swaps the sides after decoding; ask for the longer side both ways
            # so the upright result is still at least `draft_size`.
            side = max(draft_size)
            with contextlib.suppress(Exception):  # draft is an optimisation only
                im.draft("RGB", (side, side))
        orientation = _orientation(im)
        _load(im, path)
        try:
            rgb = _to_rgb(im)
        except (ValueError, OSError) as e:
            detail = f"its colour format ({im.mode}) cannot be read: {e}"
            raise ImageError(path, "not_an_image", detail) from e
    if orientation not in (1, 0):
        rgb = _transpose(rgb, orientation)
    return rgb


# ----------------------------------------------------------------------------------------------- internals


@contextlib.contextmanager
def _open(path: str | os.PathLike, max_pixels: int):
    """`Image.open` restricted to `FORMATS`, every failure turned into an `ImageError` with a reason."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix in UNSUPPORTED_SUFFIXES:
        # Some of these (RAW files are TIFF inside) would open as a thumbnail: refuse by name, and say why.
        detail = f"{UNSUPPORTED_SUFFIXES[suffix]}; save it as JPEG or PNG"
        raise ImageError(path, "unsupported_format", detail)
    try:
        st = os.stat(path)
    except FileNotFoundError as e:
        raise ImageError(path, "missing") from e
    except PermissionError as e:
        raise ImageError(path, "unreadable") from e
    except OSError as e:
        raise ImageError(path, "unreadable", f"the file cannot be opened ({e.strerror or e})") from e
    if not stat.S_ISREG(st.st_mode):
        # A folder, or a pipe or device that would block the read forever.
        raise ImageError(path, "not_an_image", "it is not a file")
    if st.st_size == 0:
        raise ImageError(path, "empty")
    try:
        with warnings.catch_warnings():
            # Our own cap decides below; Pillow's warning would only repeat it on stderr.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path, formats=FORMATS)
    except Image.DecompressionBombError as e:
        # Pillow refuses twice its own limit before we see the size; its message carries the count.
        found = re.search(r"\((\d+) pixels\)", str(e))
        raise ImageError(
            path, "too_large", _too_large_detail(int(found[1]) if found else None, max_pixels)
        ) from e
    except PermissionError as e:
        raise ImageError(path, "unreadable") from e
    except FileNotFoundError as e:
        raise ImageError(path, "missing") from e
    except UnidentifiedImageError as e:
        raise ImageError(path, "not_an_image") from e
    except (OSError, EOFError) as e:
        # Pillow says "Truncated File Read" (or hits the end of the file) when the header is cut off.
        if isinstance(e, EOFError) or "truncated" in str(e).lower():
            raise ImageError(path, "truncated") from e
        raise ImageError(path, "corrupt", f"the file cannot be read ({e})") from e
    except Exception as e:
        # Malformed headers make Pillow's format plugins raise almost anything (SyntaxError, struct.error,
        # IndexError, ...): every one of them means "not a photo we can read".
        raise ImageError(path, "not_an_image", f"the file is not a readable photo ({e})") from e
    # `with im` closes the file only; `im.close()` would also free the decoded pixels the caller wants.
    with im:
        w, h = im.size
        if w <= 0 or h <= 0:
            raise ImageError(path, "corrupt", "the image header gives no size")
        if w * h > max_pixels:
            raise ImageError(path, "too_large", _too_large_detail(w * h, max_pixels, (w, h)))
        yield im


def _too_large_detail(pixels: int | None, max_pixels: int, size: tuple[int, int] | None = None) -> str:
    what = "the image is"
    if pixels:
        what = f"the image has {pixels / 1e6:,.0f} million pixels"
        what += f" ({size[0]} x {size[1]})," if size else ","
    return (
        f"{what} more than the limit of {max_pixels / 1e6:,.0f} million; "
        "make a smaller copy of it (any photo editor can)"
    )


def _load(im: Image.Image, path: str | os.PathLike) -> None:
    """Decode the pixels, telling damage apart from a missing or unreadable file."""
    try:
        im.load()
    except PermissionError as e:
        raise ImageError(path, "unreadable") from e
    except (OSError, EOFError) as e:
        if "truncated" in str(e).lower() or isinstance(e, EOFError):
            raise ImageError(path, "truncated") from e
        raise ImageError(path, "corrupt", f"{REASONS['corrupt']} ({e})") from e
    except Image.DecompressionBombError as e:  # a frame larger than the header said (GIF)
        raise ImageError(path, "too_large", str(e)) from e
    except MemoryError:
        raise
    except Exception as e:
        raise ImageError(path, "corrupt", f"the photo data is damaged ({e})") from e


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation when it is in the header already (never forces a decode)."""
    if im.format == "PNG" and "exif" not in im.info:
        return 1  # Pillow would decode the whole PNG to look for an EXIF chunk after the pixels
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:
        # Broken EXIF blocks are common (edited photos); the pixels are still fine.
        return 1


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _transpose(im: Image.Image, orientation: int) -> Image.Image:
    # The same table as `ImageOps.exif_transpose`, applied to the converted image: the EXIF block was read
    # before decoding, and the RGB copy no longer carries it.
    method = _TRANSPOSE.get(orientation)
    return im.transpose(method) if method is not None else im


def _has_end_marker(fp, fmt: str) -> bool:
    """True when the file visibly ends where an intact file of this format ends (see module docstring)."""
    if fp is None:
        return False
    try:
        fp.seek(0, io.SEEK_END)
        size = fp.tell()
        if fmt == "WEBP":
            fp.seek(4)
            declared = int.from_bytes(fp.read(4), "little") + 8
            return size >= declared
        if fmt == "AVIF":
            return _boxes_complete(fp, size)
        fp.seek(max(0, size - _TAIL_BYTES))
        tail = fp.read().rstrip(b"\x00")
    except (OSError, ValueError):
        return False
    if fmt in ("JPEG", "MPO"):
        return tail.endswith(b"\xff\xd9")
    if fmt == "PNG":
        return tail.endswith(b"IEND\xaeB`\x82")
    return False  # GIF, BMP, TIFF: decode instead


def _boxes_complete(fp, size: int) -> bool:
    """True when the top-level ISO-BMFF boxes (AVIF: ftyp, meta, mdat) add up to exactly the file size."""
    pos = 0
    for _ in range(64):  # a real file has a handful; more is odd enough to decode instead
        fp.seek(pos)
        header = fp.read(16)
        if len(header) < 8:
            return False
        length = int.from_bytes(header[:4], "big")
        if length == 1 and len(header) == 16:
            length = int.from_bytes(header[8:16], "big")
        elif length < 8:
            return False  # 0 means "to the end of the file": nothing to compare
        pos += length
        if pos >= size:
            return pos == size
    return False


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im.copy() if im.readonly else im
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        return _on_white(im.convert("RGBA"))
    if mode == "I" or mode.startswith("I;16"):
        return _from_gray_array(np.asarray(im), float_data=False)
    if mode == "F":
        return _from_gray_array(np.asarray(im), float_data=True)
    if mode == "L" and "transparency" in im.info:
        return _on_white(im.convert("RGBA"))
    return im.convert("RGB")


def _on_white(rgba: Image.Image) -> Image.Image:
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _from_gray_array(a: np.ndarray, *, float_data: bool) -> Image.Image:
    """16-bit, 32-bit integer and float single-channel pixels to 8-bit gray RGB (see `open_rgb`)."""
    a = a.astype(np.float64)
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if float_data and lo >= 0.0 and hi <= 1.0:
        scaled = a * 255.0
    elif not float_data and lo >= 0.0 and hi <= 65535.0:
        scaled = a / 257.0  # 65535 / 257 = 255 exactly: the full 16-bit range onto the full 8-bit one
    elif hi > lo:
        scaled = (a - lo) * (255.0 / (hi - lo))
    else:
        scaled = np.zeros_like(a)
    gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def to_model_input(image: Image.Image, size: int | tuple[int, int]) -> np.ndarray:
    """The test-time transform: the whole image resized to the model input, as uint8 ``H x W x 3`` RGB.

    The single definition of how an image becomes model input at test time (BiT's test transform: the WHOLE
    image resized to the input size with bilinear filtering; no crop, aspect ratio not kept). Evaluation
    (`transforms.decode_resized`) and the ONNX predictor (`inference.prepare`) both call it, so the accuracy
    the app reports is the accuracy the exported file gets.

    Args:
        image: a PIL image, ideally from `open_rgb` (EXIF orientation applied, RGB). Other modes are
            converted with ``Image.convert("RGB")``.
        size: the square side in pixels, or (height, width).

    Returns:
        A C-contiguous uint8 array, channels last: what the exported graph's ``images`` input takes.
    """
    height, width = (size, size) if isinstance(size, int) else size
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
