"""Composite photos: FER2013-style face crops pasted at known sizes and places on a larger background.
They measure detection (bench/wild.py) and test it, since the truth of every face's box is known.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from fercli.photos.detect import Box


@dataclass
class Composite:
    image: np.ndarray  # uint8 [H,W] gray
    boxes: list[Box]  # where each face was pasted (its whole crop), with the roll it was pasted at
    faces: list[int]  # which of the given faces, in the same order


def background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field with fine grain: no face-like structure, not flat either. uint8 [h,w]."""
    coarse = rng.uniform(60, 200, size=(h // 64 + 2, w // 64 + 2)).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
    return np.clip(field + rng.normal(0, 6, size=(h, w)), 0, 255).astype(np.uint8)


def composite(faces: np.ndarray, sizes: list[int], rng: np.random.Generator, shape: tuple[int, int] = (480, 640),
              tries: int = 200, turn: float = 0.0) -> Composite:  # fmt: skip
    """Paste faces[i] (uint8 [n,S,S]) for each size, resized with Pillow's bilinear filter, at random places
    that do not overlap (a size that finds no place is left out); with `turn`, each face rolled by +-turn
    degrees (clockwise as seen, the sign at random; the corners keep the background)."""
    h, w = shape
    img = background(h, w, rng)
    boxes: list[Box] = []
    used: list[int] = []
    pick = rng.permutation(len(faces))
    for k, size in enumerate(sizes):
        for _ in range(tries):
            x, y = int(rng.integers(0, w - size + 1)), int(rng.integers(0, h - size + 1))
            if all(x + size <= b.x or b.x + b.w <= x or y + size <= b.y or b.y + b.h <= y for b in boxes):
                face = Image.fromarray(faces[pick[k % len(faces)]]).resize((size, size), Image.Resampling.BILINEAR)
                roll = float(turn * rng.choice([-1, 1])) if turn else 0.0
                if roll:  # Pillow turns counterclockwise
                    mask = np.asarray(Image.new("L", (size, size), 255).rotate(-roll, Image.Resampling.NEAREST)) > 0
                    turned = np.asarray(face.rotate(-roll, Image.Resampling.BILINEAR))
                    img[y : y + size, x : x + size][mask] = turned[mask]
                else:
                    img[y : y + size, x : x + size] = np.asarray(face)
                boxes.append(Box(x, y, size, size, roll))
                used.append(int(pick[k % len(faces)]))
                break
    return Composite(img, boxes, used)


def matches(found: list[Box], truth: list[Box]) -> list[int | None]:
    """For each true box, the index of the found box whose centre lies inside it (and whose size is within
    a factor of 2), or None: a found face is credited to one true face at most."""
    taken: set[int] = set()
    out: list[int | None] = []
    for t in truth:
        hit = None
        for i, f in enumerate(found):
            cx, cy = f.x + f.w / 2, f.y + f.h / 2
            if i not in taken and t.x <= cx < t.x + t.w and t.y <= cy < t.y + t.h and 0.5 <= f.w / t.w <= 2:
                hit = i
                taken.add(i)
                break
        out.append(hit)
    return out
