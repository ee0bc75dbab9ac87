"""CenterFace (Xu et al. 2019; StarClouds, MIT licence), a one-stage CNN face detector with five landmarks,
run by OpenCV's dnn module from the `faces` extra. The weights ship inside fercli (fercli/builtin/
centerface.onnx, with the licence beside it): nothing is downloaded.

The network takes an RGB image [1,3,H,W] of raw 0-255 values, H and W multiples of 32, and answers on a
grid of stride 4: a face-centre heatmap, log box sizes, centre offsets and landmark offsets relative to
the box. A gray photo is given as three equal channels (how fercli reads every photo).

OpenCV's dnn fixes a network's shapes at its first forward pass: a later input of another size gives
wrong answers (a photo without faces got hundreds), so each input shape gets its own network, read
from the weights once and kept while it is among the NETS used last.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from fercli.builtin import CENTERFACE_PATH
from fercli.errors import USAGE, FerError

STRIDE = 4  # input pixels per output cell
OUTPUTS = ["537", "538", "539", "540"]  # heatmap [1,1,h,w], scale [1,2,h,w], offset [1,2,h,w], landmarks [1,10,h,w]
NMS_IOU = 0.3  # boxes overlapping more than this are one face
PAD = 64  # inputs are padded up to multiples of this: fewer distinct shapes, each with its own network
NETS = 4  # networks kept, one per input shape (most recent first)


class CenterFace:
    """Faces of a uint8 gray image: (boxes float [n,4] as x, y, w, h; scores [n]; landmarks [n,5,2] as x, y:
    right eye, left eye, nose, right and left mouth corner), all in the image's pixels."""

    def __init__(self, cv2: Any) -> None:
        if not CENTERFACE_PATH.exists():
            raise FerError(f"CenterFace's weights are missing from this installation ({CENTERFACE_PATH})", USAGE)
        self.cv2 = cv2
        self.nets: OrderedDict[tuple[int, int], Any] = OrderedDict()
        self._net((PAD, PAD))  # fails now, not at the first photo, where OpenCV cannot read it

    def _net(self, shape: tuple[int, int]) -> Any:
        if shape in self.nets:
            self.nets.move_to_end(shape)
        else:
            self.nets[shape] = self.cv2.dnn.readNetFromONNX(str(CENTERFACE_PATH))
            if len(self.nets) > NETS:
                self.nets.popitem(last=False)
        return self.nets[shape]

    def __call__(self, gray: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, w = gray.shape
        ph, pw = -(-h // PAD) * PAD, -(-w // PAD) * PAD  # padded (not stretched)
        blob = np.zeros((1, 3, ph, pw), np.float32)
        blob[0, :, :h, :w] = gray
        net = self._net((ph, pw))
        net.setInput(blob)
        heat, scale, offset, marks = net.forward(OUTPUTS)
        ys, xs = np.nonzero(heat[0, 0] > threshold)
        score = heat[0, 0, ys, xs]
        bh, bw = np.exp(scale[0, 0, ys, xs]) * STRIDE, np.exp(scale[0, 1, ys, xs]) * STRIDE
        x0 = (xs + offset[0, 1, ys, xs] + 0.5) * STRIDE - bw / 2
        y0 = (ys + offset[0, 0, ys, xs] + 0.5) * STRIDE - bh / 2
        m = marks[0][:, ys, xs].T.reshape(-1, 5, 2)  # [n,5,(dy,dx)] as fractions of the box
        lm = np.stack([x0[:, None] + m[:, :, 1] * bw[:, None], y0[:, None] + m[:, :, 0] * bh[:, None]], 2)
        boxes = np.stack([x0, y0, bw, bh], 1).astype(np.float32)
        if not len(boxes):
            return boxes.reshape(0, 4), score, lm.reshape(0, 5, 2)
        keep = np.asarray(self.cv2.dnn.NMSBoxes(boxes.tolist(), score.tolist(), threshold, NMS_IOU)).reshape(-1)
        return boxes[keep], score[keep], lm[keep]
