"""Defaults that a command's option and the core function behind it both state, in one place: the help
text and a Python call then agree. Light (no torch, no numpy): the commands import it for `--help`."""

from __future__ import annotations

PROJECT = "runs"  # the folder of run folders: fer train writes there, MODEL arguments look there
PREDICT_BATCH = 256  # faces fer predict reads, predicts and writes at a time

# Faces per forward pass on a CPU, whatever batch the caller reads and writes in (infer/inference.py): a
# pass's activations then stay in the cores' caches. The built-in model with flip, 3,584 faces, 2 threads,
# AMD EPYC (AVX2), 2026-12-02, images/s by forward batch: 16: 856, 32: 1,067, 64: 1,110, 128: 934, 256: 687,
# 512: 621. A GPU takes the whole batch in one pass.
CPU_FORWARD = 64

# Test-time augmentation: the views of each face a prediction averages (infer/inference.tta_views). "crops"
# adds four diagonal 1-pixel shifts of the face and of its mirror: 10 views, 5x the forward passes of
# "flip". The built-in model on PublicTest (docs/recipes.md, "Test-time augmentation"): 87.40% none,
# 88.18% flip, 88.87% crops.
TTA_MODES = ("none", "flip", "crops")

# fer ascent: steps; initial step size in normalised-gradient units (decays to 10%); random shift per
# step in pixels; total-variation weight; blur every N steps (0 never).
ASCENT_STEPS = 200
ASCENT_LR = 0.1
ASCENT_JITTER = 2
ASCENT_TV = 0.05
ASCENT_BLUR_EVERY = 4

# fer annotate on a video, and FerModel.video: a face track's probabilities are averaged over its last N
# searched frames. On Megamind.avi (opencv-doc; 640x480, --every 2) the label changed between a track's
# consecutive searched frames 22.5% of the time with 1, 16.9% with 3 and 12.4% with 5: 3 takes a quarter
# of the flicker away for a lag of about two searched frames (docs/faces.md).
VIDEO_SMOOTH = 3
