"""The FER2013 label set, split names and training-target modes shared by every command (no numpy here:
the CLI module imports it)."""

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # FER2013 codes 0..6
SPLITS = ("train", "val", "test")
# What `fer train --labels` learns (crowd.py): FER2013's labels, or FER+ crowd votes as a majority class or
# a distribution; auto follows the data.
LABEL_MODES = ("auto", "fer2013", "majority", "probability")  # split codes 0..2 in a prepared file
IMAGE_SIZE = 48
UNLABELED = -1

# Where a face came from, as its source names it: a split folder (train/val/test) or one of FER2013's
# Usage values. Readers record these origin codes; `fer prep` then maps them onto SPLITS by protocol
# (see prep.resolve_splits): FER2013's PublicTest is val or test depending on whether PrivateTest is there.
ORIGINS = ("train", "val", "test", "Training", "PublicTest", "PrivateTest")
USAGE_CODE = {
    "train": 0, "training": 3,
    "val": 1, "valid": 1, "validation": 1,
    "test": 2,
    "publictest": 4,
    "privatetest": 5,
    # the FER+ folder layout: FER2013Train/, FER2013Valid/ (FER2013's PublicTest), FER2013Test/ (PrivateTest)
    "fer2013train": 3, "fer2013valid": 4, "fer2013test": 5,
}  # fmt: skip
