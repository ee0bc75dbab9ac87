"""Faces followed through a video: each face of a searched frame gets the id of the track it continues.

A greedy IoU tracker (as in Bochinski et al. 2017): the pairs of (track, face) are taken in order of the
overlap between the track's last box and the face's box, each track and face at most once, while the
overlap (intersection over union) is at least MIN_IOU; a face left over starts a new track. A track
that finds no face for MAX_MISSED searched frames in a row ends, and its id is never given again.
"""

from __future__ import annotations

from dataclasses import dataclass

from fercli.photos.detect import Box

MIN_IOU = 0.3  # the same face a few frames on: its box moved by less than half its size
MAX_MISSED = 10  # searched frames a face may be missed (looked away, blinked past the detector) and keep its id


def iou(a: Box, b: Box) -> float:
    w = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    h = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    inter = max(0, w) * max(0, h)
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _Track:
    id: int
    box: Box
    missed: int = 0


class Tracker:
    """`update(boxes)` for each searched frame, in order: the track id of each box."""

    def __init__(self, min_iou: float = MIN_IOU, max_missed: int = MAX_MISSED) -> None:
        self.min_iou, self.max_missed = min_iou, max_missed
        self.tracks: list[_Track] = []
        self.next_id = 0

    def update(self, boxes: list[Box]) -> list[int]:
        pairs = sorted(((iou(t.box, b), ti, bi) for ti, t in enumerate(self.tracks) for bi, b in enumerate(boxes)),
                       reverse=True)  # fmt: skip
        ids: list[int | None] = [None] * len(boxes)
        taken: set[int] = set()
        for overlap, ti, bi in pairs:
            if overlap < self.min_iou:
                break
            if ti in taken or ids[bi] is not None:
                continue
            taken.add(ti)
            track = self.tracks[ti]
            track.box, track.missed, ids[bi] = boxes[bi], 0, track.id
        for ti, track in enumerate(self.tracks):
            if ti not in taken:
                track.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        for bi, b in enumerate(boxes):
            if ids[bi] is None:
                ids[bi] = self.next_id
                self.tracks.append(_Track(self.next_id, b))
                self.next_id += 1
        return [int(i) for i in ids]  # type: ignore[arg-type]
