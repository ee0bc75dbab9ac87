"""Faces in the wild, measured: detection recall and time on composite photos, and what detection costs
in accuracy end to end.

    python bench/wild.py                      # FER2013 PublicTest faces (../shared), the built-in model
    python bench/wild.py --photos 100 --model runs/train/exp

Composites: 640x480 photos, each with six PublicTest faces pasted at 64, 96, 128, 160, 192 and 96 px on
a smooth random background (fercli.photos.composites). A detection counts when its centre lies in a
pasted face and its size is within 2x. Detectors compared: fercli's two (CenterFace, the default, and the
Haar cascade it falls back to), CenterFace at another threshold, OpenCV's default Haar cascade, and
scikit-image's LBP cascade when scikit-image is installed. End to end, per fercli detector: the model's
accuracy on the pasted faces (a missed face counts as wrong) and on the faces found, against the same
faces given as crops, scored against the FER+ crowd majority (a FER+ model) or the FER2013 labels.

Real photos (fercli.photos.samples): faces found on photos of one person, on group photos tiled from them,
and false detections on photos without a face, from the packages installed (scikit-image, matplotlib,
and Debian's opencv-doc when present). Run it on a quiet machine.
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
TURN = 30.0  # degrees a rolled face is turned by, either way


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


def centerface(threshold: float | None = None, side: int | None = None):
    """fercli's CenterFace detector at another heatmap threshold, or searching photos at another size."""
    from fercli.photos import detect

    det = detect.FaceDetector("centerface")

    def find(gray: np.ndarray) -> list:
        shipped = detect.CENTERFACE_THRESHOLD, detect.CENTERFACE_MAX_SIDE
        detect.CENTERFACE_THRESHOLD = threshold or shipped[0]
        detect.CENTERFACE_MAX_SIDE = side or shipped[1]
        try:
            return det(gray)
        finally:
            detect.CENTERFACE_THRESHOLD, detect.CENTERFACE_MAX_SIDE = shipped

    return find


def real_photo_counts(find) -> dict[str, str]:
    """Faces found over faces present, per kind of real photo; false detections on photos of none."""
    from fercli.photos.samples import real_photos

    out: dict[str, list[int]] = {}
    for photo in real_photos():
        got = len(find(photo.gray))
        kind = "no face" if photo.faces == 0 else "one face" if photo.faces == 1 else "group"
        tally = out.setdefault(kind, [0, 0])
        tally[0] += min(got, photo.faces) if photo.faces else got
        tally[1] += photo.faces if photo.faces else 1
    return {k: (f"{a} false in {b} photos" if k == "no face" else f"{a}/{b}") for k, (a, b) in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=100)
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--crops", type=int, default=1000, help="PublicTest faces read as 224 px images")
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

    detectors = {
        "fercli centerface (default)": detect.FaceDetector("centerface"),
        "fercli haar alt2 n=3 (fallback)": detect.FaceDetector("haar"),
        "centerface t=0.5": centerface(0.5),
        "centerface at 480 px": centerface(side=480),
        "centerface at 320 px": centerface(side=320),
        "haar default n=3": haar("haarcascade_frontalface_default.xml", 3),
    }
    try:
        detectors["skimage lbp n=3"] = lbp()
    except ImportError:
        pass
    for find in detectors.values():
        find(photos[0].image)  # loads the network or cascade outside the timing
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
        row = {"recall_64_up": round(float(np.mean([v for vs in hits.values() for v in vs])), 3),
               "recall_96_up": round(float(np.mean([v for s, vs in hits.items() if s >= 96 for v in vs])), 3),
               "recall_by_size": {s: round(float(np.mean(v)), 3) for s, v in sorted(hits.items())},
               "false_per_photo": round(false / len(photos), 2),
               "ms_per_photo": round(1000 * spent / len(photos), 1),
               "real_photos": real_photo_counts(find)}  # fmt: skip
        table[name] = row
        print(f"{name:32s} recall>=64px {row['recall_64_up']:.3f} >=96px {row['recall_96_up']:.3f}  false/photo "
              f"{row['false_per_photo']:.2f}  {row['ms_per_photo']:.0f} ms  real: {row['real_photos']}",
              file=sys.stderr)  # fmt: skip

    def acc(x: list, y: list) -> float:
        p = model.predict(np.stack(x))
        return float((p.argmax(1) == np.array(y)).mean())

    # End to end with each of fercli's detectors: crops as cut from the photo vs the pasted faces themselves.
    direct = [faces[i] for c in photos for i in c.faces]
    direct_truth = [truth[i] for c in photos for i in c.faces]
    end_to_end = {"accuracy_as_crops": round(acc(direct, direct_truth), 4)}
    for name in ("fercli centerface (default)", "fercli haar alt2 n=3 (fallback)"):
        find = detectors[name]
        cut_faces, cut_truth, found_direct = [], [], []
        for c in photos:
            found = find(c.image)
            for k, i in zip(matches(found, c.boxes), c.faces):
                if k is not None:
                    cut_faces.append(cut(c.image, found[k]))
                    cut_truth.append(truth[i])
                    found_direct.append(faces[i])
        found_acc = acc(cut_faces, cut_truth)
        end_to_end[name] = {"accuracy_on_found_faces": round(found_acc, 4),
                            "accuracy_of_found_faces_as_crops": round(acc(found_direct, cut_truth), 4),
                            "accuracy_end_to_end": round(found_acc * len(cut_faces) / len(direct), 4)}  # fmt: skip
        print(f"{name:32s} end to end {end_to_end[name]}", file=sys.stderr)
    # Rolled faces: composites whose faces are turned by +-TURN degrees; recall per detector, and accuracy
    # on the faces found with and without turning each crop level from CenterFace's eye landmarks.
    turned = [composite(faces, SIZES, rng, turn=TURN) for _ in range(max(1, args.photos // 2))]
    rolled: dict[str, object] = {"photos": len(turned), "turn": TURN}
    for name in ("fercli centerface (default)", "fercli haar alt2 n=3 (fallback)"):
        find = detectors[name]
        pairs = []  # (photo, found box, true box, face index) of each face found
        for c in turned:
            found = find(c.image)
            hits = zip(matches(found, c.boxes), c.boxes, c.faces)
            pairs += [(c, found[k], t, i) for k, t, i in hits if k is not None]
        entry: dict[str, float | None] = {"recall": round(len(pairs) / sum(len(c.boxes) for c in turned), 3)}
        if pairs:
            y = [truth[i] for *_, i in pairs]
            for key, upright in (("accuracy_on_found_as_cut", False), ("accuracy_on_found_turned_level", True)):
                entry[key] = round(acc([cut(c.image, b, upright=upright) for c, b, _, _ in pairs], y), 4)
            entry["accuracy_of_found_as_crops"] = round(acc([faces[i] for *_, i in pairs], y), 4)
            roll_error = np.median([abs(b.angle - t.angle) for _, b, t, _ in pairs])
            entry["median_roll_error_deg"] = round(float(roll_error), 1)
        rolled[name] = entry
        print(f"{name:32s} faces turned by +-{TURN} deg: {entry}", file=sys.stderr)

    # Face crops read as images: FER2013 faces upscaled to 224 px (as some copies of the data are), read by
    # --faces auto with the shipped detector, against the same faces read as 48x48 rows.
    import io as _io

    from PIL import Image

    from fercli.photos.crops import faces_in

    pick = np.arange(min(args.crops, len(faces)))
    as_rows = acc(list(faces[pick]), list(truth[pick]))
    read, whole = [], 0
    auto_find = detect.FaceDetector()
    for i in pick:
        buf = _io.BytesIO()
        Image.fromarray(faces[i]).resize((224, 224), Image.Resampling.BILINEAR).save(buf, format="PNG")
        got = faces_in(buf.getvalue(), f"face {i}", "auto", auto_find)
        whole += got[0].face == "whole" if got else 0
        read.append(got[0].crop if got else np.zeros((48, 48), np.uint8))
    crops224 = {"faces": len(pick), "read_whole": whole, "accuracy_as_rows": round(as_rows, 4),
                "accuracy_as_224px_images": round(acc(read, list(truth[pick])), 4)}  # fmt: skip
    print(f"224 px crops under --faces auto: {crops224}", file=sys.stderr)
    result = {
        "photos": len(photos), "faces": len(direct), "sizes": SIZES, "detectors": table, "crops_224": crops224,
        "rolled": rolled,
        "model": str(args.model), "scored_against": "FER+ majority" if len(classes) == 8 else "FER2013 labels",
        **end_to_end,
        "cpu": cpu_name(), "threads": torch.get_num_threads(), "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
