"""Finding faces in photos: OpenCV's frontal-face Haar cascade, from the optional extra
`pip install "fercli[faces]"` (opencv-python-headless 4.x, whose wheels carry the cascade files in
cv2/data/; nothing is downloaded). Without the extra, a photo that needs detection is a one-line usage
error saying how to install it.

The detector and its settings were chosen by `python bench/wild.py` (docs/faces.md): recall and time per
photo of OpenCV's Haar cascades and scikit-image's LBP cascade on composite photos of FER2013 faces.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from fercli.errors import USAGE, FerError

CASCADE = "haarcascade_frontalface_alt2.xml"
SCALE_FACTOR = 1.1  # image pyramid step: smaller finds more faces, slower
MIN_NEIGHBOURS = 3  # overlapping hits a face needs: fewer finds more faces and more false ones
MIN_FACE = 24  # pixels, after the downscale below: the cascade's own window
# Photos are searched at most this large (longer side, pixels): a 12 MP photo costs what a 1.5 MP one does,
# and a face that fills 48 px of the full photo still spans the cascade's 24 px window.
DETECT_MAX_SIDE = 1280
INSTALL_HINT = 'finding faces in photos needs the faces extra: pip install "fercli[faces]"'


@dataclass(frozen=True)
class Box:
    """A face's box in the upright photo's pixels (EXIF rotation applied)."""

    x: int
    y: int
    w: int
    h: int


def opencv() -> Any:
    """OpenCV, with its own and FFmpeg's logging off: fercli reports a bad video in one line."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    try:
        import cv2
    except ImportError as e:
        raise FerError(INSTALL_HINT, USAGE) from e
    return cv2


class FaceDetector:
    """Frontal faces in a grayscale photo, largest first. OpenCV is loaded at the first photo that needs
    it, so face crops (never searched) are read without the extra."""

    def __init__(self) -> None:
        self._cascade: Any = None
        self._cv2: Any = None

    def _load(self) -> None:
        cv2 = opencv()
        self._cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
        if self._cascade.empty():  # a wheel without its data files (OpenCV 5 dropped them)
            raise FerError(f"OpenCV {cv2.__version__} has no {CASCADE}; {INSTALL_HINT}", USAGE)
        self._cv2 = cv2

    def __call__(self, gray: np.ndarray) -> list[Box]:
        """gray: uint8 [H,W] -> boxes in its pixels, largest first."""
        if self._cv2 is None:
            self._load()
        cv2 = self._cv2
        h, w = gray.shape
        scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
        small = gray
        if scale < 1.0:
            small = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        found = self._cascade.detectMultiScale(
            np.ascontiguousarray(small), scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBOURS,
            minSize=(MIN_FACE, MIN_FACE),
        )  # fmt: skip
        boxes = [Box(*(round(v / scale) for v in b)) for b in np.asarray(found).reshape(-1, 4).tolist()]
        return sorted(boxes, key=lambda b: (-b.w * b.h, b.y, b.x))
