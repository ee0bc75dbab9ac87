"""Finding faces in photos, from the optional extra `pip install "fercli[faces]"` (opencv-python-headless
4.x; nothing is downloaded). Two detectors (`--detector`):
  centerface  CenterFace, a CNN (photos/centerface.py) whose weights ship inside fercli: the default
  haar        OpenCV's frontal-face Haar cascade (its wheels carry the cascade files in cv2/data/): the
              light fallback, used by `auto` where OpenCV lacks its dnn module
Without the extra, a photo that needs detection is a one-line usage error saying how to install it.

The detectors and their settings were chosen by `python bench/wild.py` (docs/faces.md): recall by face
size, false detections and time per photo on composite photos of FER2013 faces and on real photos.
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
DETECTORS = {
    "centerface": "CenterFace, a CNN face detector (StarClouds, MIT licence); its weights ship with fercli",
    "haar": "OpenCV's frontal-face Haar cascade (alt2): lighter, frontal faces only",
}
DETECTOR_CHOICES = ("auto", *DETECTORS)  # auto: centerface, or haar where OpenCV has no dnn module
# Heatmap score a face needs: on the composites 0.2 finds 96.5% of the faces, 0.3 92.9%, 0.5 83.8%, each
# with 0.01 false detections per photo (bench/wild.py).
CENTERFACE_THRESHOLD = 0.2
# CenterFace's cost grows with the pixels it sees (about 80 ms for 640x480 on 2 cores, four times that at
# 1280x960); photos are searched as large as the cascade searches them, for the small faces of group
# photos (bench/wild.py's variants search the composites at 480 and 320 px: 53 and 22 ms, 89% and 85% found).
CENTERFACE_MAX_SIDE = DETECT_MAX_SIDE
# FER2013's crops are what a Haar box holds; CenterFace's box runs from the hairline to the chin, and on a
# tight crop it snaps to the crop's edge. So a CenterFace face is framed from its landmarks instead: a
# square SIDE_PER_EM times the distance from the eyes' midpoint to the mouth's, centred RAISE_PER_EM of
# that distance above the midpoint of the two. Medians over 217 faces of FER2013 PublicTest pasted into
# composites (side 2.70, spread 2.24-3.24 from the 10th to the 90th percentile; raise 0.21).
SIDE_PER_EM, RAISE_PER_EM = 2.70, 0.21


@dataclass(frozen=True)
class Box:
    """A face's box in the upright photo's pixels (EXIF rotation applied), and the face's roll: the angle of
    its eye line, degrees clockwise as seen (0 for a detector without landmarks)."""

    x: int
    y: int
    w: int
    h: int
    angle: float = 0.0


def opencv() -> Any:
    """OpenCV, with its own and FFmpeg's logging off: fercli reports a bad video in one line."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    try:
        import cv2
    except ImportError as e:
        raise FerError(INSTALL_HINT, USAGE) from e
    return cv2


def detector_rows() -> list[dict[str, Any]]:
    """Each detector with what it needs and whether this installation can run it (OpenCV imported to see)."""
    from fercli.builtin import CENTERFACE_PATH

    try:
        cv2 = opencv()
    except FerError:
        cv2 = None
    cascades = getattr(getattr(cv2, "data", None), "haarcascades", "")  # OpenCV 5 has no cv2.data
    ready = {
        "centerface": cv2 is not None and hasattr(cv2, "dnn") and CENTERFACE_PATH.exists(),
        "haar": bool(cascades) and os.path.exists(os.path.join(cascades, CASCADE)),
    }
    default = "centerface" if ready["centerface"] else "haar"
    return [{"name": n, "default": n == default, "available": ready[n], "needs": 'pip install "fercli[faces]"',
             "summary": summary} for n, summary in DETECTORS.items()]  # fmt: skip


def check_detector(name: str) -> str:
    if name not in DETECTOR_CHOICES:
        raise FerError(f"--detector must be one of {', '.join(DETECTOR_CHOICES)}, got '{name}'", USAGE)
    return name


class FaceDetector:
    """Faces in a grayscale photo, largest first, by the detector `name` (DETECTOR_CHOICES). OpenCV is
    loaded at the first photo that needs it, so face crops (never searched) are read without the extra."""

    def __init__(self, name: str = "auto") -> None:
        self.name = check_detector(name)
        self._find: Any = None

    def _load(self) -> None:
        cv2 = opencv()
        if self.name in ("auto", "centerface"):
            from fercli.photos.centerface import CenterFace

            try:
                cnn = CenterFace(cv2)
            except (AttributeError, cv2.error) as e:  # an OpenCV built without dnn, or one that cannot read it
                if self.name == "centerface":
                    raise FerError(f"OpenCV {cv2.__version__} cannot run CenterFace ({str(e)[:120]}); "
                                   "--detector haar needs only the cascade", USAGE) from e  # fmt: skip
                from fercli import console

                console.warn(f"OpenCV {cv2.__version__} cannot run CenterFace; finding faces with the Haar cascade")
            else:
                self.name, self._find = "centerface", self._centerface(cnn)
                return
        self.name, self._find = "haar", self._haar(cv2)

    @staticmethod
    def _haar(cv2: Any) -> Any:
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
        if cascade.empty():  # a wheel without its data files (OpenCV 5 dropped them)
            raise FerError(f"OpenCV {cv2.__version__} has no {CASCADE}; {INSTALL_HINT}", USAGE)

        def find(small: np.ndarray) -> list[tuple[float, float, float, float]]:
            found = cascade.detectMultiScale(small, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBOURS,
                                             minSize=(MIN_FACE, MIN_FACE))  # fmt: skip
            return [tuple(b) for b in np.asarray(found).reshape(-1, 4).tolist()]

        return find

    @staticmethod
    def _centerface(cnn: Any) -> Any:
        def find(small: np.ndarray) -> list[tuple[float, ...]]:
            _, _, marks = cnn(small, CENTERFACE_THRESHOLD)
            out = []
            for m in marks:  # [5,2]: right eye, left eye, nose, right and left mouth corner
                eyes, mouth = (m[0] + m[1]) / 2, (m[3] + m[4]) / 2
                em = float(np.hypot(*(mouth - eyes)))
                side = SIDE_PER_EM * em
                cx, cy = (eyes + mouth) / 2 - (0, RAISE_PER_EM * em)
                roll = float(np.degrees(np.arctan2(m[1, 1] - m[0, 1], m[1, 0] - m[0, 0])))  # image y runs down
                out.append((cx - side / 2, cy - side / 2, side, side, roll))
            return out

        return find

    def __call__(self, gray: np.ndarray) -> list[Box]:
        """gray: uint8 [H,W] -> boxes in its pixels, largest first."""
        if self._find is None:
            self._load()
        h, w = gray.shape
        scale = min(1.0, (CENTERFACE_MAX_SIDE if self.name == "centerface" else DETECT_MAX_SIDE) / max(h, w))
        small = gray
        if scale < 1.0:
            import cv2

            small = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        found = self._find(np.ascontiguousarray(small))
        boxes = [Box(*(round(v / scale) for v in b[:4]), *b[4:]) for b in found]
        return sorted(boxes, key=lambda b: (-b.w * b.h, b.y, b.x))
