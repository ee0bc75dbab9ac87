"""How well each saliency method finds the features the synthetic faces were drawn from, on every test face
of `fer demo`'s data and model.

    python bench/saliency_regions.py [--faces 2800] [--epochs 3]

Trains the demo's network (vgg4s, 3 epochs, the same recipe and data as `fer demo`) in a temporary folder,
then scores grad, smoothgrad, ig and gradcam on all test faces (explain/regions.py: the share of each
map's |attribution| on the brows, eyes and mouth, and the pointing game), with chance beside them.
`fer demo` prints the same table on 3 faces per class.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=int, default=2800)
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args()

    from fercli import console
    from fercli.data.prep import prepare
    from fercli.data.prepared import PreparedData
    from fercli.engine.recipe import NO_AUGMENT, build_recipe
    from fercli.engine.train import RunSettings, train
    from fercli.explain.regions import localisation_table, synthetic_localisation
    from fercli.explain.saliency import METHODS
    from fercli.hardware import cpu_name
    from fercli.infer.model import FerModel

    console.reset(quiet=True)
    base = Path(tempfile.mkdtemp(prefix="fer-regions-"))
    data = base / "fer-data.safetensors"
    prepare([], str(data), synthetic=a.faces, seed=1)  # as fer demo prepares its faces
    recipe = build_recipe("cpu", dict(arch="vgg4s", epochs=a.epochs, batch=32, lr=0.05, **NO_AUGMENT))
    run = train(recipe, RunSettings(data=str(data), device="cpu", project=str(base / "runs"), name="demo",
                                    progress=False))  # fmt: skip
    d = PreparedData.open(data)
    test = d.indices("test")
    found, maps = synthetic_localisation(FerModel.load(run["run_dir"], "cpu"), d, test, a.faces, 1)
    blank = (np.abs(maps).reshape(len(test), len(METHODS), -1).max(2) == 0).mean(0)
    print(f"{found['faces']} test faces; best valid_acc {100 * run['best_valid_acc']:.1f}%; {cpu_name()}")
    print(localisation_table(found))
    print("blank maps: " + ", ".join(f"{m} {100 * b:.1f}%" for m, b in zip(METHODS, blank)))


if __name__ == "__main__":
    main()
