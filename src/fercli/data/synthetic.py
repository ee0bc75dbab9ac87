"""Built-in synthetic faces: a toy data set of cartoon 48x48 faces, never a stand-in for FER2013.

Each of the 7 expressions is a setting of the features that tell real expressions apart (mouth curve
and openness, brow angle and height, eye openness), jittered per face, then drawn under a random pose
(rotation, scale, shift), brightness, contrast and pixel noise. A small CNN learns it to >90% in a few
CPU epochs, which is what the tests and `fer demo` need.
"""

from __future__ import annotations

import numpy as np

from fercli.classes import CLASSES, IMAGE_SIZE

# Per class: mouth curve (+ smile, - frown), mouth openness, brow tilt (+ inner ends down, as in anger),
# brow lift (+ raised), eye openness (1 = neutral).
EXPRESSIONS = {
    "angry": (-0.35, 0.00, 0.55, -0.06, 0.85),
    "disgust": (-0.60, 0.15, 0.30, -0.03, 0.45),
    "fear": (-0.25, 0.55, -0.45, 0.08, 1.35),
    "happy": (0.85, 0.25, 0.00, 0.00, 0.60),
    "sad": (-0.75, 0.00, -0.55, 0.02, 0.75),
    "surprise": (0.00, 0.95, 0.00, 0.12, 1.45),
    "neutral": (0.00, 0.00, 0.00, 0.00, 1.00),
}
PARAMS = np.array([EXPRESSIONS[c] for c in CLASSES], dtype=np.float32)  # [7, 5]
JITTER = np.array([0.12, 0.08, 0.12, 0.025, 0.12], dtype=np.float32)


def _soft(d: np.ndarray, edge: float = 0.03) -> np.ndarray:
    """Signed distance (negative inside) -> coverage in 0..1 with an antialiased edge."""
    return 1.0 / (1.0 + np.exp(np.clip(d / edge, -30, 30)))


def synthetic_faces(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n faces as uint8 [n,48,48] and their labels int64 [n] (balanced classes, shuffled)."""
    images, labels, _ = synthetic_faces_and_regions(n, seed)
    return images, labels


# Margin around each drawn feature, in the face's own [-1,1] frame (0.06 is about 1.4 px at scale 1): the
# feature regions hold each stroke and the skin right beside it, where an edge detector's gradient lives.
REGION_MARGIN = 0.06


def synthetic_faces_and_regions(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """synthetic_faces' faces and labels, and where their features are: bool [n,48,48], true on the brows,
    eyes and mouth (with REGION_MARGIN) that tell the expressions apart. What a saliency map should find."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    p = PARAMS[labels] + rng.normal(0, 1, (n, 5)).astype(np.float32) * JITTER
    curve, opening, tilt, lift, eye = (p[:, i, None, None] for i in range(5))

    # Pose: map each output pixel back into the face's own frame ([-1,1] box, y down).
    angle = rng.uniform(-0.26, 0.26, n)  # +-15 degrees
    scale = rng.uniform(0.85, 1.15, n)
    shift = rng.uniform(-0.12, 0.12, (n, 2))
    g = (np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5) / IMAGE_SIZE * 2 - 1
    gy, gx = np.meshgrid(g, g, indexing="ij")
    cos, sin = (np.cos(angle) / scale)[:, None, None], (np.sin(angle) / scale)[:, None, None]
    ux, uy = gx[None] - shift[:, 0, None, None], gy[None] - shift[:, 1, None, None]
    x = (cos * ux + sin * uy).astype(np.float32)
    y = (-sin * ux + cos * uy).astype(np.float32)
    ax = np.abs(x)

    skin = rng.uniform(0.55, 0.8, (n, 1, 1)).astype(np.float32)
    back = rng.uniform(0.05, 0.45, (n, 1, 1)).astype(np.float32)
    img = back + 0.1 * gy[None]
    face = _soft(np.sqrt((x / 0.78) ** 2 + (y / 0.92) ** 2) - 1.0)
    img = img * (1 - face) + skin * face
    dark = 0.1

    # Eyes: ellipses whose height follows eye openness.
    eye_d = np.sqrt(((ax - 0.32) / 0.14) ** 2 + ((y + 0.18) / (0.075 * eye + 1e-3)) ** 2) - 1.0
    img = img * (1 - _soft(eye_d * 0.1)) + dark * _soft(eye_d * 0.1)

    # Brows: short thick strokes whose inner ends drop (anger) or rise (sadness, fear).
    brow_y = -0.43 - lift + tilt * (0.32 - ax) * 0.6
    brow_d = np.maximum(np.abs(y - brow_y) - 0.035, np.abs(ax - 0.32) - 0.17)
    img = img * (1 - _soft(brow_d, 0.015)) + dark * _soft(brow_d, 0.015)

    # Mouth: a curved lip line; openness fills a dark gap below it.
    half = 0.3
    bend = 1 - (x / half) ** 2
    lip_y = 0.48 + 0.16 * curve * bend - 0.05 * opening
    in_width = np.abs(x) - half
    lip_d = np.maximum(np.abs(y - lip_y) - 0.03, in_width)
    gap_d = np.maximum(np.maximum(lip_y - y, y - (lip_y + 0.22 * opening * bend)), in_width)
    mouth = np.maximum(_soft(lip_d, 0.015), _soft(gap_d, 0.015) * (opening > 0.05))
    img = img * (1 - mouth) + dark * mouth
    m = REGION_MARGIN
    regions = (
        (np.sqrt(((ax - 0.32) / (0.14 + m)) ** 2 + ((y + 0.18) / (0.075 * eye + m)) ** 2) <= 1.0)
        | (brow_d <= m)
        | (lip_d <= m)
        | ((gap_d <= m) & (opening > 0.05))
    )

    # Photometric variation: contrast, brightness, sensor noise.
    contrast = rng.uniform(0.7, 1.3, (n, 1, 1)).astype(np.float32)
    bright = rng.uniform(-0.12, 0.12, (n, 1, 1)).astype(np.float32)
    img = (img - 0.5) * contrast + 0.5 + bright + rng.normal(0, 0.04, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), labels, regions
