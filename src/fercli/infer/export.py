"""`fer export`: a model as one ONNX file, for onnxruntime, OpenVINO, TensorRT and ONNX runtimes in browsers
and phones (the `onnx` extra: onnx and onnxscript write it, onnxruntime checks it).

The graph is the whole of `fer predict`'s forward pass, so a user of the file needs nothing of fercli:
  input  `faces`  uint8 [N,48,48], grayscale pixels 0-255 (N is dynamic; FER2013's crops as they are)
  output `probs`  float32 [N,classes], softmax probabilities, in the class order of the metadata
The training set's normalisation, the flip-averaging the checkpoint validated with (its TTA) and, with
`classes` fer2013, the fold of FER+'s 8 classes onto FER2013's 7 are inside the graph. The metadata
(`metadata_props`) names the classes (`classes`, a JSON list) and says what the input is.

After writing, the file is run with onnxruntime on random faces and held to the checkpoint's own
probabilities (within TOLERANCE); a file that does not match is not left behind.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fercli.classes import IMAGE_SIZE
from fercli.errors import USAGE, FerError
from fercli.files.atomic import atomic_path
from fercli.infer.inference import tta_views
from fercli.version import __version__

OPSET = 18  # onnxruntime 1.16+ (2023), OpenVINO 2023.1+, TensorRT 10 read it
TOLERANCE = 1e-4  # largest |probability difference| from the checkpoint on the check's faces
CHECK_FACES = 64
INSTALL_HINT = 'exporting to ONNX needs the onnx extra: pip install "fercli[onnx]"'
INPUT = f"faces: uint8 [N,{IMAGE_SIZE},{IMAGE_SIZE}], grayscale 0-255"
OUTPUT = "probs: float32 [N,classes], softmax probabilities in the order of `classes`"


class _Graph(nn.Module):
    """uint8 faces [N,48,48] -> probabilities [N,classes]: the forward pass of FerModel.probs."""

    def __init__(self, net: nn.Module, mean: float, std: float, tta: str, fold: np.ndarray | None) -> None:
        super().__init__()
        self.net, self.mean, self.std, self.tta = net, mean, std, tta
        self.register_buffer("fold", None if fold is None else torch.from_numpy(fold))

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        x = (faces.unsqueeze(1).float() / 255.0 - self.mean) / self.std  # [N,1,48,48]
        views = tta_views(x, self.tta)
        p = sum(self.net(v).float().softmax(1) for v in views) / len(views)
        return p if self.fold is None else p @ self.fold


def _modules() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError as e:
        raise FerError(f"{INSTALL_HINT} ({e.name} is missing)", USAGE) from e
    try:
        import onnxruntime
    except ImportError:
        onnxruntime = None
    return onnx, onnxruntime


def export_onnx(model: Any, path: str | os.PathLike, classes: str = "model") -> Path:
    """Write `model` (a FerModel) to `path` as ONNX, atomically, after checking it with onnxruntime when
    that is installed. Returns the path."""
    from fercli import console

    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise FerError(f"{path}: an ONNX file's name ends in .onnx", USAGE)
    onnx, ort = _modules()
    names, fold = model.class_set(classes)
    net = copy.deepcopy(model.net).to("cpu", memory_format=torch.contiguous_format).eval()
    graph = _Graph(net, *model.mean_std, model.tta, fold).eval()
    example = torch.zeros(2, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "model.onnx"
        # torch.onnx reports its phases with print(): kept off stdout, which carries data only
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            try:
                torch.onnx.export(graph, (example,), str(raw), input_names=["faces"], output_names=["probs"],
                                  dynamic_shapes={"faces": {0: torch.export.Dim("N")}}, opset_version=OPSET,
                                  dynamo=True, external_data=False, verbose=False)  # fmt: skip
            except Exception as e:  # the exporter's many error types; a bug of ours or of torch, in one line
                raise FerError(f"{model.path}: ONNX export failed ({type(e).__name__}: {str(e)[:200]})") from e
        proto = onnx.load(str(raw))
    props = {
        "classes": json.dumps(list(names)),
        "input": INPUT,
        "output": OUTPUT,
        "normalize": json.dumps({"mean": model.mean_std[0], "std": model.mean_std[1]}),
        "tta": json.dumps(model.tta),
        "arch": model.arch,
        "source": model.path.name,
        "fercli_version": __version__,
    }
    onnx.helper.set_model_props(proto, props)
    proto.producer_name, proto.producer_version = "fercli", __version__
    proto.doc_string = f"fercli {model.arch} facial expression model. Input {INPUT}. Output {OUTPUT}."
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
        if ort is None:
            console.warn("onnxruntime is not installed: the file was not checked against the checkpoint")
        else:
            diff = check_onnx(tmp, model, classes, ort)
            if diff > TOLERANCE:
                raise FerError(f"{path}: the exported graph's probabilities differ from the checkpoint's by {diff:.2e} "
                               f"(over {TOLERANCE:g}); nothing written")  # fmt: skip
            console.info(f"onnxruntime matches the checkpoint within {diff:.1e} on {CHECK_FACES} faces")
    return path


def check_onnx(path: str | os.PathLike, model: Any, classes: str = "model", ort: Any = None) -> float:
    """Largest |probability difference| between the ONNX file run by onnxruntime on the CPU and the
    model's own predictions (FerModel.predict, in the `classes` set), on CHECK_FACES random faces."""
    if ort is None:
        import onnxruntime as ort
    faces = np.random.default_rng(0).integers(0, 256, (CHECK_FACES, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are not the user's business
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(["probs"], {"faces": faces})[0]
    return float(np.abs(got - model.predict(faces, classes)).max())
