"""Faces from image files, folders and zip archives, laid out `<split>/<emotion>/<file>` or `<emotion>/<file>`,
or as FER+ lays them out: `FER2013Train/<file>` with the crowd votes in `FER2013Train/label.csv`.

Every image becomes 48x48 grayscale the same way: EXIF orientation applied, converted to 8-bit luma
(ITU-R 601-2, Pillow's "L"), centre-cropped to a square, then resized to 48x48 with Pillow's
antialiased bilinear filter. A 48x48 grayscale input passes through unchanged.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fercli.classes import CLASSES, IMAGE_SIZE, UNLABELED, USAGE_CODE
from fercli.data.csvfaces import FORMATS_READ, BadRows
from fercli.errors import BAD_INPUT, NOT_FOUND, FerError
from fercli.files.atomic import why
from fercli.files.safepaths import member_path, note_input

LABEL_FILE = "label.csv"  # FER+ votes of the images beside it
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
# Videos `fer annotate` reads, with the codec its annotated copy is written in.
VIDEO_EXTENSIONS = {".mp4": "mp4v", ".avi": "MJPG", ".mov": "mp4v", ".mkv": "mp4v", ".m4v": "mp4v"}
MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs: far above any face photo
MAX_IMAGE_BYTES = 64 << 20
EXIF_ORIENTATION = 0x0112


def is_image_source(path: str) -> bool:
    """A folder, a zip or an image file (judged by name); anything else, `-` included, is read as CSV."""
    return path != "-" and (os.path.isdir(path) or path.lower().endswith((".zip", *IMAGE_EXTENSIONS)))


def is_video(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


@dataclass
class ImageEntry:
    path: str  # the member name inside a zip, or the path relative to the folder
    label: int
    split: int  # an origin code (classes.ORIGINS); -1 when the layout names none


def _layout(rel: str) -> tuple[int, int]:
    """(label, split) read off a relative path: .../<split>/<emotion>/<file> or .../<emotion>/<file>."""
    parts = [p.lower() for p in PurePosixPath(rel).parts]
    label, split = UNLABELED, -1
    if len(parts) >= 2 and parts[-2] in CLASSES:
        label = CLASSES.index(parts[-2])
        if len(parts) >= 3 and parts[-3] in USAGE_CODE:
            split = USAGE_CODE[parts[-3]]
    elif len(parts) >= 2 and parts[-2] in USAGE_CODE:
        split = USAGE_CODE[parts[-2]]
    # The public image release names its files after FER2013's Usage (PublicTest_123.jpg): that is the
    # more exact origin than the folder (test/ holds PublicTest).
    usage = parts[-1].split("_", 1)[0] if parts and "_" in parts[-1] else ""
    if usage in ("training", "publictest", "privatetest"):
        split = USAGE_CODE[usage]
    return label, split


def _is_image_name(rel: str) -> bool:
    return PurePosixPath(rel).suffix.lower() in IMAGE_EXTENSIONS


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(rel).parts)


HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


def converted(img: Image.Image, mode: str) -> Image.Image:
    """`img` in 8-bit `mode` ("L" or "RGB") with its contrast kept: 16- and 32-bit images are rescaled
    (Pillow's own conversion clips them at 255: a 16-bit face would come out white), and transparent
    pixels are laid on white, as a viewer shows them. Palette and CMYK images convert as Pillow does."""
    if img.mode in HIGH_BIT_MODES:
        a = np.asarray(img, dtype=np.float64)
        top = a.max(initial=0)
        top = 255.0 if top <= 255 else 65535.0 if top <= 65535 else float(top)
        lo = min(0.0, float(a.min(initial=0)))
        gray = Image.fromarray(np.clip((a - lo) * 255.0 / (top - lo) + 0.5, 0, 255).astype(np.uint8), "L")
        return gray.convert(mode)
    if img.mode in ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert(mode)
    return img.convert(mode)


@contextmanager
def _opened(data: bytes, where: str, draft_side: int | None,
            mode: str = "L") -> Iterator[tuple[Image.Image, tuple[int, int]]]:  # fmt: skip
    """(the image in `data` upright (EXIF orientation applied) in `mode` (8-bit gray, or RGB), its full
    upright size), after the size guards; a JPEG is decoded at the smallest DCT scale that keeps both sides
    >= draft_side (None: full size)."""
    if len(data) > MAX_IMAGE_BYTES:
        raise FerError(f"{where}: image file larger than {MAX_IMAGE_BYTES >> 20} MB, refusing it")
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise FerError(
                    f"{where}: image declares {w}x{h} pixels (over {MAX_IMAGE_PIXELS:,}), refusing to decode it"
                )
            turned = img.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)  # a quarter turn: sides swap
            if img.format == "JPEG" and draft_side is not None:
                img.draft(mode, (draft_side, draft_side))  # DCT-domain downscale: much faster on big JPEGs
            yield converted(ImageOps.exif_transpose(img), mode), ((h, w) if turned else (w, h))
    except FerError:
        raise
    except Image.DecompressionBombError as e:  # PIL's own guard fires at open for the largest ones
        raise FerError(f"{where}: image declares over {MAX_IMAGE_PIXELS:,} pixels, refusing it") from e
    except UnidentifiedImageError as e:
        what = "empty file" if not data else "not an image format fer reads"
        raise FerError(f"{where}: cannot decode image ({what}; fer reads {FORMATS_READ})") from e
    except (OSError, ValueError, SyntaxError, TypeError, EOFError) as e:
        raise FerError(f"{where}: cannot decode image ({e})") from e


def decode_face(data: bytes, where: str) -> np.ndarray:
    """Bytes of any image file -> uint8 [48,48]; a clear error naming `where` if it cannot be used."""
    return decode_face_sized(data, where)[0]


def decode_face_sized(data: bytes, where: str) -> tuple[np.ndarray, tuple[int, int]]:
    """decode_face, and the image's full upright size (width, height)."""
    with _opened(data, where, IMAGE_SIZE) as (img, full):
        return fit_face(img), full


def fit_face(img: Image.Image) -> np.ndarray:
    """An 8-bit gray image read whole as one face: its centre square at 48x48 (bilinear), uint8 [48,48]."""
    if img.size != (IMAGE_SIZE, IMAGE_SIZE):
        img = ImageOps.fit(img, (IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def decode_rgb(data: bytes, where: str) -> Image.Image:
    """Bytes of any image file -> the upright full-size RGB image (to draw on)."""
    with _opened(data, where, None, "RGB") as (img, _):
        img.load()
        return img


def decode_photo(data: bytes, where: str, min_side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Bytes of any image file -> (uint8 gray [H,W] upright, the full upright size (width, height)). A large
    JPEG comes back DCT-downscaled (by 2, 4 or 8), keeping both sides >= min_side."""
    with _opened(data, where, min_side) as (img, full):
        return np.asarray(img, dtype=np.uint8), full


class ImageFaces:
    """All images of a folder, a zip archive or a single image file, in sorted path order.

    A zip member whose name could not be an output path inside a folder (absolute, a drive letter, a
    backslash, a `..` part: safepaths.member_path) is refused, or with `skip_bad` skipped with a message:
    `fer annotate` lays its outputs out by these names."""

    def __init__(self, path: str, skip_bad: bool = False) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if not os.path.exists(path):
            raise FerError(f"{path}: no such file or folder", NOT_FOUND)
        note_input(path)  # an output written over it, or over any file of the folder, is refused
        if os.path.isdir(path):
            every = []
            for root, _, files in os.walk(path):
                every += [os.path.relpath(os.path.join(root, f), path).replace(os.sep, "/") for f in files]
        elif zipfile.is_zipfile(path):
            try:
                self._zip = zipfile.ZipFile(path)
                every = [n for n in self._zip.namelist() if not n.endswith("/")]
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as e:
                raise FerError(f"{path}: corrupt zip archive ({e})") from e
            every = [n for n in every if not _is_image_name(n) or self._safe_member(n, skip_bad)]
        else:
            every = [""]  # a single image file
        names = [n for n in every if n == "" or (_is_image_name(n) and not _hidden(n))]
        self.label_files = sorted(n for n in every if PurePosixPath(n).name.lower() == LABEL_FILE)
        self.videos = sorted(n for n in every if is_video(n))  # not read here: `fer annotate` takes one alone
        self.entries = [ImageEntry(n, *_layout(n)) for n in sorted(names)]
        if not self.entries:
            raise FerError(f"{path}: no image files found", BAD_INPUT)

    def _safe_member(self, name: str, skip_bad: bool) -> bool:
        try:
            member_path(name, self.path)
            return True
        except FerError as e:
            if not skip_bad:
                raise
            from fercli import console

            console.warn(f"skipped: {e}")
            return False

    def read_bytes(self, entry: ImageEntry | str) -> tuple[bytes, str]:
        rel = entry if isinstance(entry, str) else entry.path
        if self._zip is not None:
            where = f"{self.path} member {rel}"
            try:
                # Read at most one byte past the limit: a zip bomb member is never inflated in full.
                with self._zip.open(rel) as f:
                    return f.read(MAX_IMAGE_BYTES + 1), where
            except NotImplementedError as e:  # a RuntimeError too: caught first
                raise FerError(f"{where}: zip compression method not supported ({e})") from e
            except RuntimeError as e:  # zipfile's word for an encrypted member
                raise FerError(f"{where}: encrypted zip member (fer reads unencrypted archives)") from e
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as e:
                raise FerError(f"{where}: corrupt zip member ({e})") from e
        full = os.path.join(self.path, rel) if rel else self.path
        try:
            # Not a FIFO or a device: reading one would block or never end.
            with open(full, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)) as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise FerError(f"{full}: not a regular file")
                return f.read(MAX_IMAGE_BYTES + 1), full
        except FileNotFoundError as e:
            if os.path.islink(full):
                raise FerError(f"{full}: cannot read (a dangling symbolic link)") from e
            raise FerError(f"{full}: no such file", NOT_FOUND) from e
        except OSError as e:
            raise FerError(f"{full}: cannot read ({why(e)})") from e

    def display_name(self, entry: ImageEntry) -> str:
        """What predict prints as the id: the member path inside a zip, else a path on disk."""
        if self._zip is not None:
            return entry.path
        return os.path.join(self.path, entry.path) if entry.path else self.path

    def decoded(
        self, skip_bad: bool = False, bad: BadRows | None = None
    ) -> Iterator[tuple[int, ImageEntry, np.ndarray]]:
        """(position in `entries`, entry, face uint8 [48,48]) for each image. A bad image raises FerError,
        or with `skip_bad` is left out and counted in `bad`."""
        for i, entry in enumerate(self.entries):
            try:
                face = decode_face(*self.read_bytes(entry))
            except FerError as e:
                if not skip_bad:
                    raise
                if bad is not None:
                    bad.add(str(e))
                continue
            yield i, entry, face
