"""The FER2013 label set and split names shared by every command."""

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # FER2013 codes 0..6
SPLITS = ("train", "val", "test")  # split codes 0..2 in a prepared file
IMAGE_SIZE = 48
UNLABELED = -1

# How the names found in users' files map onto our splits.
USAGE_TO_SPLIT = {
    "training": "train",
    "train": "train",
    "publictest": "val",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "privatetest": "test",
    "test": "test",
}
USAGE_CODE = {name: SPLITS.index(split) for name, split in USAGE_TO_SPLIT.items()}  # name -> split code
