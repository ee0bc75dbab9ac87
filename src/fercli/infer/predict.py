"""`fer predict`: a submission CSV from any input, streamed.

Inputs: a CSV in any layout prep reads (or - for stdin), a prepared data file, an image file, or a
folder or zip of images. Rows come out as soon as their block is predicted (the CSV is read in ~8 MB
blocks, images in batches), so memory stays bounded and `| head` sees the first rows at once.

Images are read per `--faces` (photos/crops.py): unless it is `whole`, rows name the face and its box,
`id,face,x,y,w,h,emotion`, one per face found (face crops give one `whole` row, predicted as before).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from fercli import console
from fercli.csvrows import field, row
from fercli.data.crowd import FERPLUS_CLASSES
from fercli.defaults import PREDICT_BATCH
from fercli.errors import NOT_FOUND, USAGE, FerError

if TYPE_CHECKING:
    from fercli.infer.model import FerModel


def _faces(
    path: str, batch: int, skip_bad: bool, tag: bool, id_prefix: str = ""
) -> Iterator[tuple[list[str], np.ndarray]]:
    """(row prefixes, uint8 faces [n,48,48]) blocks of one input read whole: a prefix is the CSV-quoted
    id (after `id_prefix`), and with `tag` (the photo layout) also `whole` and the 48x48 box."""
    from fercli.data.csvfaces import CsvFaces
    from fercli.data.imagefaces import ImageFaces, is_image_source
    from fercli.data.prepared import PreparedData

    def rows(ids: list[str]) -> list[str]:
        end = ",whole,0,0,48,48" if tag else ""
        return [field(id_prefix + i) + end for i in ids]

    if is_image_source(path):
        faces = ImageFaces(path, skip_bad)
        named = ((faces.display_name(entry), img) for _, entry, img in faces.decoded(skip_bad))
        for ids, imgs in _in_batches(named, batch):
            yield rows(ids), imgs
    elif path.lower().endswith(".safetensors"):
        data = PreparedData.open(path)
        for i in range(0, len(data), batch):
            yield rows([str(k) for k in range(i, min(i + batch, len(data)))]), data.images[i : i + batch]
    else:
        for chunk in CsvFaces(path, skip_bad=skip_bad):
            yield rows(chunk.ids), chunk.images


def _photo_faces(
    path: str, batch: int, skip_bad: bool, mode: str, detector: Any
) -> Iterator[tuple[list[str], np.ndarray]]:
    """(row prefixes `id,face,x,y,w,h`, uint8 faces [n,48,48]) blocks of the images of one input, each
    image read per `mode` (photos/crops.py)."""
    from fercli.data.imagefaces import ImageFaces
    from fercli.photos.crops import faces_of_images, row_prefix

    found = faces_of_images(ImageFaces(path, skip_bad), mode, detector, skip_bad)
    yield from _in_batches(((row_prefix(name, f), f.crop) for name, _, _, faces in found for f in faces), batch)


def _in_batches(rows: Iterator[tuple[str, np.ndarray]], batch: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """(row prefix, uint8 face [48,48]) pairs gathered into blocks of `batch`: (prefixes, faces [n,48,48])."""
    prefixes, faces = [], []
    for prefix, face in rows:
        prefixes.append(prefix)
        faces.append(face)
        if len(faces) == batch:
            yield prefixes, np.stack(faces)
            prefixes, faces = [], []
    if faces:
        yield prefixes, np.stack(faces)


def _primed(blocks: Iterator[tuple[list[str], np.ndarray]]) -> Iterator[tuple[list[str], np.ndarray]]:
    """The same blocks, with the first one read now (so its errors come now)."""
    first = next(blocks, None)

    def rest() -> Iterator[tuple[list[str], np.ndarray]]:
        if first is not None:
            yield first
        yield from blocks

    return rest()


def probs_header(classes: tuple[str, ...], probs: bool) -> list[str]:
    return [f"p_{c}" for c in classes] if probs else []


def format_rows(prefixes: list[str], probs: np.ndarray, names: tuple[str, ...] | None, with_probs: bool) -> str:
    """CSV lines: each row's prefix (its id fields, already CSV: csvrows.row), the class, then maybe its
    probabilities."""
    pred = probs.argmax(1)
    labels = [field(names[p]) for p in pred] if names else [str(p) for p in pred]
    if not with_probs:
        return "".join(f"{i},{lab}\n" for i, lab in zip(prefixes, labels))
    cols = [",".join(f"{v:.6f}" for v in row) for row in probs]
    return "".join(f"{i},{lab},{c}\n" for i, lab, c in zip(prefixes, labels, cols))


def predict_stream(
    model: FerModel,
    inputs: list[str],
    out: TextIO,
    *,
    probs: bool = False,
    names: bool = False,
    batch: int = PREDICT_BATCH,
    skip_bad: bool = False,
    faces: str = "auto",
    classes: str = "model",
) -> int:
    """Write `id,emotion[,p_<class>...]` rows for every face of every input to `out` (`id,face,x,y,w,h,
    emotion,...` when an input is images and `faces` is not whole); return the count. `classes` fer2013
    maps a FER+ model's probabilities onto FER2013's classes (crowd.class_set)."""
    from fercli.data.imagefaces import is_image_source
    from fercli.photos.crops import WHOLE, check_mode

    if batch < 1:
        raise FerError("--batch must be at least 1", USAGE)
    check_mode(faces)
    if sum(i == "-" for i in inputs) > 1:
        raise FerError("stdin (-) can be read only once", USAGE)
    seen: set[str] = set()
    from fercli.data.imagefaces import is_video

    for path in inputs:
        if path != "-" and not os.path.exists(path):
            raise FerError(f"{path}: no such file or folder", NOT_FOUND)
        if is_video(path):
            raise FerError(f"{path}: a video; videos go through `fer annotate {path} -o DIR`", USAGE)
        if os.path.abspath(path) in seen:
            raise FerError(f"{path} is given twice (its ids would repeat)", USAGE)
        seen.add(os.path.abspath(path))
    written, _ = model.class_set(classes)
    photos = faces != WHOLE and any(is_image_source(p) for p in inputs)
    if written == FERPLUS_CLASSES and not names and not photos:
        console.warn(f"{model.path} predicts FER+'s 8 classes: code 0 is neutral, 1 happiness, 2 surprise, 3 sadness, "
                     "4 anger, 5 disgust, 6 fear, 7 contempt, not FER2013's (0 angry, 1 disgust, ...); "
                     "--classes fer2013 writes FER2013's codes (a Kaggle submission)")  # fmt: skip

    def stream(path: str) -> Iterator[tuple[list[str], np.ndarray]]:
        if photos and is_image_source(path):
            return _photo_faces(path, batch, skip_bad, faces, model.detector)
        # row ids restart in each CSV or data file: with several inputs, name the file
        named = len(inputs) > 1 and not is_image_source(path)
        return _faces(path, batch, skip_bad, photos, f"{path}:" if named else "")

    # Every input's first block is read before the header is written: a bad input leaves no output.
    streams = [_primed(stream(path)) for path in inputs]
    lead = ["id", "face", "x", "y", "w", "h", "emotion"] if photos else ["id", "emotion"]
    out.write(row(lead + probs_header(written, probs)))
    count = 0
    for blocks in streams:
        for prefixes, crops in blocks:
            p = model.predict(crops, classes, batch)  # [n, written classes]
            out.write(format_rows(prefixes, p, written if names else None, probs))
            out.flush()
            count += len(prefixes)
    return count
