"""fercli: facial expression recognition on FER2013-style data, from the command line (`fer`) and Python.

    import fercli
    model = fercli.load("builtin")
    model.faces("photo.jpg")  # [Face(face='0', box=Box(x=..., ...), emotion='happiness', probs={...})]

`import fercli` is light: torch loads with the first call that needs it. See docs/python.md.
"""

from typing import Any

from fercli.api import load, prepare, train
from fercli.errors import FerError
from fercli.version import __version__

__all__ = ["Face", "FerError", "FerModel", "FrameFaces", "__version__", "load", "prepare", "train"]

_MODEL_TYPES = ("Face", "FerModel", "FrameFaces")


def __getattr__(name: str) -> Any:
    """The model types, imported when first named (they need torch)."""
    if name in _MODEL_TYPES:
        from fercli.infer import model

        return getattr(model, name)
    raise AttributeError(f"module 'fercli' has no attribute {name!r}")
