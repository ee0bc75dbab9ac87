"""The model that ships inside the package, so `fer predict builtin photo.jpg` works right after install.

It is trained by this project's own `fer train` (`python bench/builtin_model.py`): the `cpu` recipe on
FER2013 faces with the FER+ crowd's vote distributions as targets, 8 classes. Its card, with the measured
accuracy and the licence note, is docs/builtin-model.md.
"""

from __future__ import annotations

from pathlib import Path

BUILTIN_NAME = "builtin"
BUILTIN_PATH = Path(__file__).with_name("ferplus-vgg4s.safetensors")
