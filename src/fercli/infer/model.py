"""The loaded model: one object behind every command that uses a trained model (eval, predict, annotate,
confmat, saliency, ascent, audit) and behind the Python API (`fercli.load`).

It holds the network on its device with what the checkpoint says about using it (class names,
normalisation, flip-averaging), predicts faces given as arrays or images, and finds faces in photos,
in-memory frames and videos with the detector the CLI uses.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from fercli.classes import IMAGE_SIZE
from fercli.defaults import PREDICT_BATCH, PROJECT, VIDEO_SMOOTH
from fercli.errors import USAGE, FerError
from fercli.infer.inference import normalize, predict_probs
from fercli.photos.crops import PhotoFace
from fercli.photos.detect import Box

CHANNELS = ("rgb", "bgr")
ImageLike = str | os.PathLike | np.ndarray | Image.Image


@dataclass(frozen=True)
class Face:
    """One face of an image and what the model reads on it."""

    face: str  # "0", "1", ... largest first; "whole" when the image was read as one face
    box: Box  # x, y, w, h in the image's (upright) pixels
    emotion: str  # the likeliest class
    probs: dict[str, float]  # each class's probability, in the model's class order
    crop: np.ndarray = field(repr=False)  # uint8 [48,48]: what the network saw
    track: int | None = None  # in a video: the id this face keeps from frame to frame (photos/tracks.py)

    def vector(self) -> np.ndarray:
        """The probabilities as float32 [classes], in class order."""
        return np.fromiter(self.probs.values(), np.float32, len(self.probs))


@dataclass(frozen=True)
class FrameFaces:
    """The faces of one searched video frame."""

    frame: int  # index from 0
    time_s: float | None  # frame / fps (None: frames given without a rate)
    faces: list[Face]


class FerModel:
    """A checkpoint loaded for use: `FerModel.load("builtin")`, then `predict`, `faces`, `video`, `export`."""

    def __init__(self, net: nn.Module, meta: dict[str, Any], device: torch.device, tta: str, path: Path,
                 detector: str = "auto") -> None:  # fmt: skip
        from fercli.photos.detect import check_detector

        self.net, self.meta, self.device, self.tta, self.path = net, meta, device, tta, path
        self.detector_name = check_detector(detector)
        self._detector: Any = None

    @classmethod
    def load(cls, model: str | os.PathLike | None = None, device: str = "auto", tta: bool | str | None = None,
             project: str | os.PathLike = PROJECT, detector: str = "auto") -> FerModel:  # fmt: skip
        """`model`: a checkpoint, a run folder (its best, else its last), `builtin`, or None for the newest
        run's best under `project` (files/runs.resolve_checkpoint, the one resolver of MODEL). `tta`: True
        or "flip", False or "none", "crops" (defaults.TTA_MODES); None: as the checkpoint's training
        validated. `detector`: the face detector of `faces` and `video`
        (auto, centerface or haar: photos/detect.py)."""
        from fercli.files.checkpoint import load_model, model_tta
        from fercli.files.runs import resolve_checkpoint
        from fercli.hardware import pick_device

        path = resolve_checkpoint(model, project)
        dev = pick_device(device, announce=False)
        net, meta = load_model(path, dev)
        return cls(net, meta, dev, model_tta(meta, tta), Path(path), detector)

    def __repr__(self) -> str:
        return f"FerModel({str(self.path)!r}, arch={self.arch!r}, classes={len(self.classes)}, device={self.device})"

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in the order of the probabilities."""
        return tuple(self.meta["classes"])

    @property
    def arch(self) -> str:
        return self.meta["arch"]

    @property
    def mean_std(self) -> tuple[float, float]:
        """The normalisation of pixels scaled to [0, 1] that the network was trained with."""
        return self.meta["normalize"]["mean"], self.meta["normalize"]["std"]

    def inputs(self, faces: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 faces [B,48,48] -> the network's float input [B,1,48,48] on its device."""
        x = faces if torch.is_tensor(faces) else torch.from_numpy(np.array(faces))
        return normalize(x.to(self.device), *self.mean_std)

    def probs(self, faces: np.ndarray | torch.Tensor, batch: int = PREDICT_BATCH,
              on_batch: Callable[[int], None] | None = None) -> torch.Tensor:  # fmt: skip
        """Class probabilities float32 [N,classes] on the CPU for uint8 faces [N,48,48] (averaged over the
        views of `tta`): the one forward pass every command's predictions come from."""
        return predict_probs(self.net, faces, *self.mean_std, self.device, batch, self.tta, on_batch)

    def class_set(self, classes: str = "model") -> tuple[tuple[str, ...], np.ndarray | None]:
        """(the class names written, the [model classes, written] matrix mapping probabilities onto them,
        None for the model's own): `classes` fer2013 folds a FER+ model's 8 onto FER2013's 7."""
        from fercli.data.crowd import class_set

        return class_set(self.classes, classes)

    def predict(self, faces: Any, classes: str = "model", batch: int = PREDICT_BATCH) -> np.ndarray:
        """Probabilities float32 [N, classes] for faces given as uint8 [N,48,48] (or one [48,48]), or as PIL
        images or a list of them (each read whole, as `fer predict --faces whole` reads an image file)."""
        x = face_array(faces)
        fold = self.class_set(classes)[1]
        p = self.probs(x, batch).numpy()
        return p if fold is None else p @ fold

    def label(self, found: list[PhotoFace], classes: str = "model") -> list[Face]:
        """Faces cut from an image (photos/crops.py) with the model's reading of each."""
        names = self.class_set(classes)[0]
        if not found:
            return []
        p = self.predict(np.stack([f.crop for f in found]), classes)
        return [Face(f.face, f.box, names[int(q.argmax())], dict(zip(names, map(float, q))), f.crop)
                for f, q in zip(found, p)]  # fmt: skip

    @property
    def detector(self) -> Any:
        """The face detector `detector_name` names, made at first use and kept (OpenCV loads at the first
        photo that needs it)."""
        if self._detector is None:
            from fercli.photos.detect import FaceDetector

            self._detector = FaceDetector(self.detector_name)
        return self._detector

    def faces(self, image: ImageLike, faces: str = "auto", channels: str = "rgb", classes: str = "model") -> list[Face]:
        """The faces of one image, largest first: an image file's path, a PIL image, or an in-memory frame,
        uint8 [H,W] gray or [H,W,3] (RGB, or BGR as OpenCV gives it: say `channels="bgr"`). `faces` as the
        CLI's --faces: auto (a face crop is read whole), detect, or whole."""
        from fercli.photos.crops import check_mode, faces_in, faces_in_array

        check_mode(faces)
        if isinstance(image, (str, os.PathLike)):
            from fercli.data.imagefaces import ImageFaces

            images = ImageFaces(os.fspath(image))
            if len(images.entries) != 1 or images.entries[0].path:
                raise FerError(f"{os.fspath(image)}: not one image file (faces() reads one image at a time)", USAGE)
            data, where = images.read_bytes(images.entries[0])
            found = faces_in(data, where, faces, self.detector)
        else:
            found = faces_in_array(gray_image(image, channels), faces, self.detector)
        return self.label(found, classes)

    def video(self, source: str | os.PathLike | Iterable[np.ndarray], every: int = 1, channels: str | None = None,
              classes: str = "model", fps: float | None = None,
              smooth: int = VIDEO_SMOOTH) -> Iterator[FrameFaces]:  # fmt: skip
        """The faces of every `every`-th frame of a video file, or of frames given as arrays (`channels`
        rgb by default for them; a file's frames are OpenCV's BGR), lazily, one FrameFaces per searched
        frame. Each face carries its track id; `smooth` N averages a track's probabilities over its last N
        searched frames (1: each frame on its own; defaults.VIDEO_SMOOTH says why 3)."""
        if isinstance(source, (str, os.PathLike)):
            found = self._video_file(os.fspath(source), every, classes, smooth)
        else:
            found = self.video_frames(source, every, channels or "rgb", classes, fps, smooth)
        return (row for _, row in found if row is not None)

    def _video_file(self, path: str, every: int, classes: str,
                    smooth: int) -> Iterator[tuple[np.ndarray, FrameFaces | None]]:  # fmt: skip
        from fercli.photos.video import opened_video

        with opened_video(path) as v:
            yield from self.video_frames(v.frames(), every, "bgr", classes, v.fps, smooth)

    def video_frames(self, frames: Iterable[np.ndarray], every: int = 1, channels: str = "bgr",
                     classes: str = "model", fps: float | None = None,
                     smooth: int = VIDEO_SMOOTH) -> Iterator[tuple[np.ndarray, FrameFaces | None]]:  # fmt: skip
        """(frame, its FrameFaces, or None for a frame not searched) for every frame: what `video` and
        `fer annotate` on a video read."""
        from collections import deque
        from dataclasses import replace

        from fercli.photos.tracks import Tracker

        if every < 1:
            raise FerError("--every must be at least 1", USAGE)
        if smooth < 1:
            raise FerError("--smooth must be at least 1", USAGE)
        tracker, history = Tracker(), {}
        for i, frame in enumerate(frames):
            if i % every:
                yield frame, None
                continue
            faces = self.faces(frame, "detect", channels, classes)
            ids = tracker.update([f.box for f in faces])
            out = []
            for f, t in zip(faces, ids):
                seen = history.setdefault(t, deque(maxlen=smooth))
                seen.append(f.vector())
                p = np.mean(seen, 0)
                names = list(f.probs)
                out.append(replace(f, track=t, emotion=names[int(p.argmax())], probs=dict(zip(names, map(float, p)))))
            live = {tr.id for tr in tracker.tracks}
            history = {t: h for t, h in history.items() if t in live}
            yield frame, FrameFaces(i, i / fps if fps else None, out)

    def export(self, path: str | os.PathLike, classes: str = "model") -> Path:
        """Write the model as ONNX (infer/export.py; needs the `onnx` extra); returns the path."""
        from fercli.infer.export import export_onnx

        return export_onnx(self, path, classes)


def face_array(faces: Any) -> np.ndarray:
    """uint8 [N,48,48] from what `FerModel.predict` accepts: uint8 arrays [N,48,48], [N,1,48,48] or [48,48],
    a PIL image, or a list of those."""
    if isinstance(faces, Image.Image):
        faces = [faces]
    if isinstance(faces, (list, tuple)):
        if not faces:
            return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        faces = np.stack([_one_face(f) for f in faces])
    x = np.asarray(faces.numpy() if torch.is_tensor(faces) else faces)
    if x.dtype != np.uint8:
        raise FerError(f"faces must be uint8 pixels (0-255), got {x.dtype}", USAGE)
    if x.shape == (IMAGE_SIZE, IMAGE_SIZE):
        x = x[None]
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise FerError(f"faces must be [N,{IMAGE_SIZE},{IMAGE_SIZE}] uint8 (or PIL images), got shape {x.shape}", USAGE)
    return x


def _one_face(face: Any) -> np.ndarray:
    """One item of a list given to predict: a PIL image read whole, or a uint8 [48,48] array."""
    if isinstance(face, Image.Image):
        from fercli.data.imagefaces import converted, fit_face

        return fit_face(converted(face, "L"))
    x = face_array(face)
    if len(x) != 1:
        raise FerError(f"each face of a list must be one [{IMAGE_SIZE},{IMAGE_SIZE}] face, got {len(x)}", USAGE)
    return x[0]


def gray_image(image: np.ndarray | Image.Image, channels: str = "rgb") -> np.ndarray:
    """uint8 gray [H,W] from a PIL image or an array [H,W], [H,W,3] or [H,W,4] whose channels are
    `channels` (rgb or bgr), converted as an image file with those pixels would be (ITU-R 601 luma,
    transparency laid on white)."""
    from fercli.data.imagefaces import converted

    if isinstance(image, Image.Image):
        return np.asarray(converted(image, "L"), dtype=np.uint8)
    if channels not in CHANNELS:
        raise FerError(f"channels must be rgb or bgr, got '{channels}'", USAGE)
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise FerError(f"an image array must be uint8, got {a.dtype}", USAGE)
    if a.ndim == 2:
        return a
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise FerError(f"an image array must be [H,W], [H,W,3] or [H,W,4], got shape {a.shape}", USAGE)
    if channels == "bgr":
        a = a[..., [2, 1, 0, 3][: a.shape[2]]]
    img = Image.fromarray(np.ascontiguousarray(a), "RGB" if a.shape[2] == 3 else "RGBA")
    return np.asarray(converted(img, "L"), dtype=np.uint8)
