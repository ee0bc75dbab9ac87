"""From a photo to the 48x48 faces in it, framed as FER2013 frames its faces.

`--faces` decides how an image is read:
  whole   the whole image is one face, exactly as before photos were supported (centre square, 48x48)
  detect  every face the detector finds is one row; an image with none gives no row (and a message)
  auto    (the default) `whole` for what looks like a face crop: a small image (longer side <= SMALL_SIDE),
          one face that fills the image (at least FILLS of its shorter side wide), or a square-ish image
          (sides within SQUARE) in which nothing is found; otherwise `detect`.

Framing: FER2013's crops are what a Haar detector's box holds. On composite photos of FER2013 PublicTest
faces pasted at known sizes (bench/wild.py), the pasted crop's side over the detected box's side had a
median of 1.02-1.03 and the centres matched to the pixel, so a face is cut out as its detected box,
squared, then resized to 48x48 with the filter the whole-image path uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from fercli.classes import IMAGE_SIZE
from fercli.csvrows import line
from fercli.data.imagefaces import ImageEntry, ImageFaces, decode_face_sized, decode_photo, fit_face
from fercli.errors import USAGE, FerError
from fercli.photos.detect import DETECT_MAX_SIDE, Box, FaceDetector

FACE_MODES = ("auto", "detect", "whole")
SMALL_SIDE = 96  # pixels: FER2013's 48x48 crops and thumbnails are never searched
FILLS = 0.5  # share of the shorter side a lone face must span for the image to count as its crop
SQUARE = 1.25  # longer over shorter side of a square-ish image (face crops are square; photos 4:3, 3:2)
WHOLE = "whole"
UPRIGHT = True  # turn rolled faces level first: +4.5 points on faces rolled by 30 degrees (bench/wild.py)
MIN_ROLL = 10.0  # degrees: a smaller roll is left as it is (the estimate's median error is 7 degrees)


@dataclass
class PhotoFace:
    face: str  # "0", "1", ... (largest first), or "whole"
    box: Box  # in the upright photo's full-size pixels
    crop: np.ndarray  # uint8 [48,48]


def check_mode(mode: str) -> str:
    if mode not in FACE_MODES:
        raise FerError(f"--faces must be one of {', '.join(FACE_MODES)}, got '{mode}'", USAGE)
    return mode


def cut(gray: np.ndarray, box: Box, upright: bool | None = None) -> np.ndarray:
    """The square around `box` (in gray's pixels; edge pixels repeated past the border) as uint8 [48,48];
    `upright` (default UPRIGHT) turns a rolled face (box.angle) level first."""
    side = max(box.w, box.h)
    level = (UPRIGHT if upright is None else upright) and abs(box.angle) >= MIN_ROLL
    grow = (side * 3) // 2 if level else side  # room for the corners the turn brings in
    x0, y0 = box.x + (box.w - grow) // 2, box.y + (box.h - grow) // 2
    h, w = gray.shape
    pad = max(0, -x0, -y0, x0 + grow - w, y0 + grow - h)
    src = np.pad(gray, pad, mode="edge") if pad else gray
    img = Image.fromarray(np.ascontiguousarray(src[y0 + pad : y0 + pad + grow, x0 + pad : x0 + pad + grow]))
    if level:  # Pillow turns counterclockwise: by the roll, the eye line comes level
        img = img.rotate(box.angle, Image.Resampling.BILINEAR)
        lo = (grow - side) // 2
        img = img.crop((lo, lo, lo + side, lo + side))
    return np.asarray(img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR), dtype=np.uint8)


def faces_in(data: bytes, where: str, mode: str, detector: FaceDetector | None) -> list[PhotoFace]:
    """The faces of one image file's bytes, per `mode` (a detector is needed unless mode is whole)."""
    if mode == WHOLE:
        return [_whole(data, where)]
    gray, size = decode_photo(data, where, DETECT_MAX_SIDE)
    return faces_in_gray(gray, size, mode, detector, lambda: _whole(data, where))


def faces_in_array(gray: np.ndarray, mode: str, detector: FaceDetector | None) -> list[PhotoFace]:
    """The faces of an in-memory uint8 gray image [H,W], per `mode`, read as an image file of it would be."""

    def whole() -> PhotoFace:
        h, w = gray.shape
        return PhotoFace(WHOLE, Box(0, 0, w, h), fit_face(Image.fromarray(gray)))

    if mode == WHOLE:
        return [whole()]
    h, w = gray.shape
    return faces_in_gray(gray, (w, h), mode, detector, whole)  # the detector downscales a large one itself


def faces_in_gray(gray: np.ndarray, size: tuple[int, int], mode: str, detector: FaceDetector | None,
                  whole: Callable[[], PhotoFace]) -> list[PhotoFace]:  # fmt: skip
    """`auto` or `detect` on a decoded gray image of full upright size `size` (width, height); `whole`
    gives the image read whole, for what auto takes for a face crop."""
    w, h = size
    if mode == "auto" and max(w, h) <= SMALL_SIDE:
        return [whole()]
    assert detector is not None
    f = w / gray.shape[1]  # full-size pixels per decoded pixel (a large JPEG is decoded smaller)
    boxes = detector(gray)
    if mode == "auto" and (
        (not boxes and max(w, h) <= SQUARE * min(w, h)) or (len(boxes) == 1 and boxes[0].w * f >= FILLS * min(w, h))
    ):
        return [whole()]
    full = [Box(round(b.x * f), round(b.y * f), round(b.w * f), round(b.h * f)) for b in boxes]
    return [PhotoFace(str(i), fb, cut(gray, b)) for i, (b, fb) in enumerate(zip(boxes, full))]


def faces_of_images(images: ImageFaces, mode: str, detector: FaceDetector | None,
                    skip_bad: bool) -> Iterator[tuple[str, ImageEntry, bytes, list[PhotoFace]]]:  # fmt: skip
    """(id, entry, file bytes, faces) for each image of a file, folder or zip, in path order. A bad image
    raises FerError, or with `skip_bad` is left out; an image without faces is named on stderr."""
    from fercli import console

    for entry in images.entries:
        name = images.display_name(entry)
        try:
            data, where = images.read_bytes(entry)
            found = faces_in(data, where, mode, detector)
        except FerError:
            if not skip_bad:
                raise
            continue
        if not found:
            console.info(f"{name}: no face found")
        yield name, entry, data, found


def row_prefix(name: str, f: PhotoFace) -> str:
    """The CSV fields before the emotion: `id,face,x,y,w,h`."""
    return line([name, f.face, f.box.x, f.box.y, f.box.w, f.box.h])


def _whole(data: bytes, where: str) -> PhotoFace:
    """The whole image as one face, decoded exactly as before photos were supported."""
    face, size = decode_face_sized(data, where)
    return PhotoFace(WHOLE, Box(0, 0, *size), face)
