"""Faces in the wild, measured: detection recall and time on composite photos, and what detection costs
in accuracy end to end.

    python bench/wild.py                      # FER2013 PublicTest faces (../shared), the built-in model
    python bench/wild.py --photos 100 --model runs/train/exp

Composites: 640x480 photos, each with six PublicTest faces pasted at 64, 96, 128, 160, 192 and 96 px on
a smooth random background (fercli.photos.composites). A detection counts when its centre lies in a
pasted face and its size is within 2x. Detectors compared: OpenCV's frontal-face Haar cascades at two
neighbour counts, and scikit-image's LBP cascade when scikit-image is installed. End to end: the model's
accuracy on the pasted faces (a missed face counts as wrong) and on the faces found, against the same
faces given as crops, scored against the FER+ crowd majority (a FER+ model) or the FER2013 labels.
Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from _common import SHARED

SIZES = [64, 96, 128, 160, 192, 96]


def haar(name: str, neighbours: int):
    import cv2

    from fercli.photos.detect import MIN_FACE, SCALE_FACTOR, Box

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)

    def find(gray: np.ndarray) -> list:
        found = cascade.detectMultiScale(gray, scaleFactor=SCALE_FACTOR, minNeighbors=neighbours,
                                         minSize=(MIN_FACE, MIN_FACE))  # fmt: skip
        return [Box(*b) for b in np.asarray(found).reshape(-1, 4).tolist()]

    return find


def lbp():
    import skimage.data
    from skimage.feature import Cascade

    from fercli.photos.detect import MIN_FACE, SCALE_FACTOR, Box

    cascade = Cascade(os.path.join(os.path.dirname(skimage.data.__file__), "lbpcascade_frontalface_opencv.xml"))

    def find(gray: np.ndarray) -> list:
        size = (MIN_FACE, MIN_FACE)
        hits = cascade.detect_multi_scale(img=gray, scale_factor=SCALE_FACTOR, step_ratio=1, min_size=size,
                                          max_size=(400, 400), min_neighbor_number=3)  # fmt: skip
        return [Box(h["c"], h["r"], h["width"], h["height"]) for h in hits]

    return find


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=100)
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--data", default=str(SHARED / "fer2013.csv.gz"))
    args = ap.parse_args()
    votes = os.path.join(os.path.dirname(args.data), "fer2013new.csv")
    if not os.path.exists(args.data):
        sys.exit(f"bench/wild.py needs the real data: {args.data} not found")

    import torch

    from accuracy import prepared
    from fercli.data.crowd import scored_faces
    from fercli.data.prepared import PreparedData
    from fercli.hardware import cpu_name
    from fercli.infer.model import FerModel
    from fercli.photos import detect
    from fercli.photos.composites import composite, matches
    from fercli.photos.crops import cut

    sources = [Path(args.data)] + ([Path(votes)] if os.path.exists(votes) else [])
    data = prepared(sources, 0.1, 0)
    model = FerModel.load(args.model, "cpu")
    classes = model.classes
    prepared_data = PreparedData.open(data)
    idx, truth = scored_faces(classes, prepared_data, "test")  # faces with a target, and the target
    faces = prepared_data.images[idx]
    rng = np.random.default_rng(0)
    photos = [composite(faces, SIZES, rng) for _ in range(args.photos)]

    detectors = {}
    for cascade in ("default", "alt2"):
        for k in (3, 5):
            detectors[f"haar {cascade} n={k}"] = haar(f"haarcascade_frontalface_{cascade}.xml", k)
    try:
        detectors["skimage lbp n=3"] = lbp()
    except ImportError:
        pass
    detectors["fercli (as shipped)"] = detect.FaceDetector()
    table = {}
    for name, find in detectors.items():
        hits: dict[int, list[bool]] = {}
        false, spent = 0, 0.0
        for c in photos:
            t = time.perf_counter()
            found = find(c.image)
            spent += time.perf_counter() - t
            m = matches(found, c.boxes)
            false += len(found) - sum(k is not None for k in m)
            for b, k in zip(c.boxes, m):
                hits.setdefault(b.w, []).append(k is not None)
        big = [v for s, vs in hits.items() if s >= 96 for v in vs]
        row = {"recall_96_up": round(float(np.mean(big)), 3),
               "recall_by_size": {s: round(float(np.mean(v)), 3) for s, v in sorted(hits.items())},
               "false_per_photo": round(false / len(photos), 2),
               "ms_per_photo": round(1000 * spent / len(photos), 1)}  # fmt: skip
        table[name] = row
        print(f"{name:28s} recall>=96px {row['recall_96_up']:.3f}  false/photo {row['false_per_photo']:.2f}  "
              f"{row['ms_per_photo']:.0f} ms", file=sys.stderr)  # fmt: skip

    # End to end with the shipped detector: crops as cut from the photo vs the pasted faces themselves.
    find = detectors["fercli (as shipped)"]
    cut_faces, cut_truth, direct, direct_truth, found_direct = [], [], [], [], []
    for c in photos:
        found = find(c.image)
        for k, i in zip(matches(found, c.boxes), c.faces):
            direct.append(faces[i])
            direct_truth.append(truth[i])
            if k is not None:
                cut_faces.append(cut(c.image, found[k]))
                cut_truth.append(truth[i])
                found_direct.append(faces[i])

    def acc(x: list, y: list) -> float:
        p = model.predict(np.stack(x))
        return float((p.argmax(1) == np.array(y)).mean())

    as_crops = acc(direct, direct_truth)
    found_acc = acc(cut_faces, cut_truth)
    result = {
        "photos": len(photos), "faces": len(direct), "sizes": SIZES, "detectors": table,
        "model": str(args.model), "scored_against": "FER+ majority" if len(classes) == 8 else "FER2013 labels",
        "accuracy_as_crops": round(as_crops, 4), "accuracy_on_found_faces": round(found_acc, 4),
        "accuracy_of_found_faces_as_crops": round(acc(found_direct, cut_truth), 4),
        "accuracy_end_to_end": round(found_acc * len(cut_faces) / len(direct), 4),
        "cpu": cpu_name(), "threads": torch.get_num_threads(), "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
