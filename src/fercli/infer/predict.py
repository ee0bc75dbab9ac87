"""`fer predict`: a submission CSV from any input, streamed.

Inputs: a CSV in any layout prep reads (or - for stdin), a prepared data file, an image file, or a
folder or zip of images. Rows come out as soon as their block is predicted (the CSV is read in ~8 MB
blocks, images in batches), so memory stays bounded and `| head` sees the first rows at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TextIO

import numpy as np
import torch

from fercli.errors import NOT_FOUND, USAGE, FerError


def _faces(path: str, batch: int, skip_bad: bool) -> Iterator[tuple[list[str], np.ndarray]]:
    """(ids, uint8 faces [n,48,48]) blocks of one input."""
    from fercli.data.csvfaces import CsvFaces
    from fercli.data.imagefaces import ImageFaces, is_image_source
    from fercli.data.prepared import PreparedData

    if is_image_source(path):
        faces = ImageFaces(path)
        ids, imgs = [], []
        for _, entry, img in faces.decoded(skip_bad):
            ids.append(faces.display_name(entry))
            imgs.append(img)
            if len(imgs) == batch:
                yield ids, np.stack(imgs)
                ids, imgs = [], []
        if imgs:
            yield ids, np.stack(imgs)
    elif path.lower().endswith(".safetensors"):
        data = PreparedData.open(path)
        for i in range(0, len(data), batch):
            yield [str(k) for k in range(i, min(i + batch, len(data)))], data.images[i : i + batch]
    else:
        for chunk in CsvFaces(path, skip_bad=skip_bad):
            yield chunk.ids, chunk.images


def _primed(blocks: Iterator[tuple[list[str], np.ndarray]]) -> Iterator[tuple[list[str], np.ndarray]]:
    """The same blocks, with the first one read now (so its errors come now)."""
    first = next(blocks, None)

    def rest() -> Iterator[tuple[list[str], np.ndarray]]:
        if first is not None:
            yield first
        yield from blocks

    return rest()


def _fmt_rows(ids: list[str], probs: np.ndarray, names: tuple[str, ...] | None, with_probs: bool) -> str:
    pred = probs.argmax(1)
    labels = [names[p] for p in pred] if names else [str(p) for p in pred]
    if not with_probs:
        return "".join(f"{csv_field(i)},{lab}\n" for i, lab in zip(ids, labels))
    cols = [",".join(f"{v:.6f}" for v in row) for row in probs]
    return "".join(f"{csv_field(i)},{lab},{c}\n" for i, lab, c in zip(ids, labels, cols))


def csv_field(text: str) -> str:
    if any(ch in text for ch in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def predict_stream(
    model_path: str | os.PathLike,
    inputs: list[str],
    out: TextIO,
    *,
    tta: bool | None = None,
    probs: bool = False,
    names: bool = False,
    batch: int = 256,
    device: str = "auto",
    skip_bad: bool = False,
) -> int:
    """Write `id,emotion[,p_<class>...]` rows for every face of every input to `out`; return the count."""
    from fercli.data.imagefaces import is_image_source
    from fercli.engine.device import pick_device
    from fercli.files.checkpoint import classes_of, load_model, model_tta
    from fercli.infer.inference import predict_probs

    if batch < 1:
        raise FerError("--batch must be at least 1", USAGE)
    if sum(i == "-" for i in inputs) > 1:
        raise FerError("stdin (-) can be read only once", USAGE)
    seen: set[str] = set()
    for path in inputs:
        if path != "-" and not os.path.exists(path):
            raise FerError(f"{path}: no such file or folder", NOT_FOUND)
        if os.path.abspath(path) in seen:
            raise FerError(f"{path} is given twice (its ids would repeat)", USAGE)
        seen.add(os.path.abspath(path))
    dev = pick_device(device, announce=False)
    model, meta = load_model(model_path, dev)
    mean, std = meta["normalize"]["mean"], meta["normalize"]["std"]
    tta = model_tta(meta, tta)
    # Every input's first block is read before the header is written: a bad input leaves no output.
    streams = [_primed(_faces(path, batch, skip_bad)) for path in inputs]
    classes = classes_of(meta)  # the checkpoint's own: FER2013's 7 or FER+'s 8
    header = "id,emotion" + ("".join(f",p_{c}" for c in classes) if probs else "")
    out.write(header + "\n")
    count = 0
    for path, stream in zip(inputs, streams):
        for ids, faces in stream:
            if len(inputs) > 1 and not is_image_source(path):
                ids = [f"{path}:{i}" for i in ids]  # row ids restart in each file: name the file
            p = predict_probs(model, torch.from_numpy(np.array(faces)), mean, std, dev, batch, tta)
            out.write(_fmt_rows(ids, p.numpy(), classes if names else None, probs))
            out.flush()
            count += len(ids)
    return count
