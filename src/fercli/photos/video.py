"""Reading video frames with OpenCV (the `faces` extra), for `fer annotate` and `FerModel.video`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from fercli.errors import FerError
from fercli.photos.detect import opencv

DEFAULT_FPS = 25.0  # what a container that declares no frame rate is taken to have


@dataclass
class Video:
    """An opened video: its declared frame rate, frame size and frame count (0 when the container does
    not say), and its frames, BGR uint8 [H,W,3] as OpenCV decodes them, read once from the start."""

    fps: float
    width: int
    height: int
    count: int
    _cap: Any
    _first: np.ndarray

    def frames(self) -> Iterator[np.ndarray]:
        frame: np.ndarray | None = self._first
        while frame is not None:
            yield frame
            ok, frame = self._cap.read()
            frame = frame if ok else None


@contextmanager
def opened_video(path: str) -> Iterator[Video]:
    """The video at `path`, its first frame decoded (a file OpenCV cannot read fails here, in one line)."""
    cv2 = opencv()
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise FerError(f"{path}: cannot read this video (not a video, corrupt, or a codec OpenCV lacks)")
        ok, first = cap.read()
        if not ok:
            raise FerError(f"{path}: no frame could be decoded")
        h, w = first.shape[:2]
        fps = cap.get(cv2.CAP_PROP_FPS) or DEFAULT_FPS
        yield Video(fps, w, h, max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))), cap, first)
    finally:
        cap.release()
