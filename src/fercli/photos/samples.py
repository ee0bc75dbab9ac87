"""Real photos whose licences are known, built at run time from installed packages (none is committed), to
measure detection (bench/wild.py) and to test it:
  astronaut     scikit-image's `data.astronaut()`: Eileen Collins, NASA, public domain
  grace hopper  matplotlib's `sample_data/grace_hopper.jpg`: US Navy, public domain
  messi         Debian's opencv-doc `examples/data/messi5.jpg`, when that package is installed (OpenCV's
                sample data, under the package's licence statement)
  no face       scikit-image's coffee (CC0), rocket (NASA, public domain) and chelsea (a cat, CC0)
  groups        tiles of the photos of one person: 2x2 and 3x2 grids (faces of 70-120 px)
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

OPENCV_DOC = "/usr/share/doc/opencv-doc/examples/data"


@dataclass
class RealPhoto:
    name: str
    gray: np.ndarray  # uint8 [H,W]
    faces: int  # people in it whose face is visible


def _gray(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint8)


def portraits() -> list[RealPhoto]:
    """The photos of one person that the installed packages hold (RGB arrays are read as fercli reads files)."""
    out = []
    try:
        import skimage.data

        out.append(RealPhoto("astronaut", _gray(skimage.data.astronaut()), 1))
    except ImportError:
        pass
    spec = importlib.util.find_spec("matplotlib")  # found, not imported
    mpl = os.path.dirname(spec.origin) if spec and spec.origin else ""
    hopper = os.path.join(mpl, "mpl-data", "sample_data", "grace_hopper.jpg")
    if os.path.exists(hopper):
        out.append(RealPhoto("grace hopper", np.asarray(Image.open(hopper).convert("L")), 1))
    messi = os.path.join(OPENCV_DOC, "messi5.jpg")
    if os.path.exists(messi):
        out.append(RealPhoto("messi", np.asarray(Image.open(messi).convert("L")), 1))
    return out


def no_faces() -> list[RealPhoto]:
    try:
        import skimage.data
    except ImportError:
        return []
    return [RealPhoto(n, _gray(getattr(skimage.data, n)()), 0) for n in ("coffee", "rocket", "chelsea")]


def tiled(photos: list[RealPhoto], cols: int, rows: int, tile: tuple[int, int] = (320, 240)) -> RealPhoto:
    """A group photo: the photos (repeated, every other one mirrored) fitted into a cols x rows grid."""
    tw, th = tile
    grid = np.zeros((rows * th, cols * tw), np.uint8)
    for k in range(cols * rows):
        p = photos[k % len(photos)]
        img = Image.fromarray(p.gray[:, ::-1] if (k // len(photos)) % 2 else p.gray)
        img.thumbnail((tw, th), Image.Resampling.LANCZOS)
        a = np.asarray(img)
        y, x = (k // cols) * th + (th - a.shape[0]) // 2, (k % cols) * tw + (tw - a.shape[1]) // 2
        grid[y : y + a.shape[0], x : x + a.shape[1]] = a
    return RealPhoto(f"group {cols}x{rows}", grid, sum(photos[k % len(photos)].faces for k in range(cols * rows)))


def real_photos() -> Iterator[RealPhoto]:
    """Every real photo and group the installed packages allow."""
    people = portraits()
    yield from people
    if people:
        yield tiled(people, 2, 2)
        yield tiled(people, 3, 2)
    yield from no_faces()
