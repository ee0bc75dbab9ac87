"""The FER2013 label set and split names shared by every command."""

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # FER2013 codes 0..6
SPLITS = ("train", "val", "test")  # split codes 0..2 in a prepared file
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
}  # fmt: skip
