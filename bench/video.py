"""Frames per second of `fer annotate` on a 640x480 video, per detector and --every, against the floor of
reading and writing the same video with nothing found or drawn (same script, same machine).

    python bench/video.py                  # Debian's opencv-doc Megamind.avi when installed, else a clip made here
    python bench/video.py --frames 300

The clip is 640x480 (Megamind.avi, a face talking, resized; or the astronaut's face drifting over a
background). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

MEGAMIND = "/usr/share/doc/opencv-doc/examples/data/Megamind.avi"


def make_clip(path: Path, frames: int) -> str:
    import cv2

    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (640, 480))
    if os.path.exists(MEGAMIND):
        cap, source = cv2.VideoCapture(MEGAMIND), "Megamind.avi (opencv-doc), resized to 640x480"
        n = 0
        while n < frames:
            ok, frame = cap.read()
            if not ok:  # loop the clip
                cap.release()
                cap = cv2.VideoCapture(MEGAMIND)
                continue
            out.write(cv2.resize(frame, (640, 480)))
            n += 1
        cap.release()
    else:
        import skimage.data

        from fercli.photos.composites import background

        face = cv2.cvtColor(skimage.data.astronaut()[40:200, 150:310], cv2.COLOR_RGB2BGR)
        bg = cv2.cvtColor(background(480, 640, np.random.default_rng(0)), cv2.COLOR_GRAY2BGR)
        for i in range(frames):
            frame = bg.copy()
            x = 40 + (3 * i) % 400
            frame[120:280, x : x + 160] = face
            out.write(frame)
        source = "the astronaut's face drifting over a background (made here)"
    out.release()
    return source


def floor(path: Path, out: Path) -> float:
    """Seconds to read every frame and write it again: what annotate costs with no face to find."""
    import cv2

    t = time.perf_counter()
    cap = cv2.VideoCapture(str(path))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (640, 480))
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        writer.write(frame)
    writer.release()
    cap.release()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=250)
    a = ap.parse_args()

    import torch

    import fercli
    from fercli import console
    from fercli.hardware import cpu_name
    from fercli.infer.annotate import annotate

    console.reset(quiet=True)
    work = Path(tempfile.mkdtemp(prefix="fer-video-"))
    clip = work / "clip.avi"
    source = make_clip(clip, a.frames)
    base = floor(clip, work / "floor.avi")
    rows = {"read and write only": {"fps": round(a.frames / base, 1), "ratio_to_floor": 1.0}}
    print(f"{a.frames} frames of 640x480 from {source}; {cpu_name()}, {torch.get_num_threads()} threads")
    print(f"{'run':34s} {'fps':>7s} {'x floor':>8s} {'faces':>6s}")
    print(f"{'read and write only':34s} {a.frames / base:7.1f} {1.0:8.2f}")
    for detector in ("centerface", "haar"):
        model = fercli.load("builtin", "cpu", detector=detector)
        model.faces(np.zeros((480, 640), np.uint8), "detect")  # loads the detector outside the timing
        for every in (1, 2, 5):
            t = time.perf_counter()
            n = annotate([str(clip)], work / f"{detector}-{every}", model, every=every, out=io.StringIO())
            spent = time.perf_counter() - t
            name = f"{detector} --every {every}"
            rows[name] = {"fps": round(a.frames / spent, 1), "ratio_to_floor": round(base / spent, 3), "faces": n}
            print(f"{name:34s} {a.frames / spent:7.1f} {base / spent:8.3f} {n:6d}")
    print(json.dumps({"frames": a.frames, "source": source, "runs": rows, "cpu": cpu_name(),
                      "threads": torch.get_num_threads(), "python": platform.python_version(),
                      "date": time.strftime("%Y-%m-%d")}))  # fmt: skip


if __name__ == "__main__":
    main()
