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
    from fercli.data.synthetic import synthetic_faces_and_regions
    from fercli.engine.recipe import NO_AUGMENT, build_recipe
    from fercli.engine.train import RunSettings, train
    from fercli.explain.regions import localisation, localisation_table
    from fercli.explain.saliency import METHODS, explain
    from fercli.files.checkpoint import load_model
    from fercli.hardware import cpu_name

    console.reset(quiet=True)
    base = Path(tempfile.mkdtemp(prefix="fer-regions-"))
    data = base / "fer-data.safetensors"
    prepare([], str(data), synthetic=a.faces, seed=1)  # as fer demo prepares its faces
    recipe = build_recipe("cpu", dict(arch="vgg4s", epochs=a.epochs, batch=32, lr=0.05, **NO_AUGMENT))
    run = train(recipe, RunSettings(data=str(data), device="cpu", project=str(base / "runs"), name="demo",
                                    progress=False))  # fmt: skip
    net, meta = load_model(Path(run["run_dir"]) / "best.safetensors", "cpu")
    d = PreparedData.open(data)
    test = d.indices("test")
    regions = synthetic_faces_and_regions(a.faces, 1)[2][d.rows[test]]
    res = explain(net, meta, np.array(d.images[test]), np.array(d.labels[test]), list(METHODS), "pred", "cpu")
    found = localisation(res["maps"], regions, list(METHODS))
    blank = (np.abs(res["maps"]).reshape(len(test), len(METHODS), -1).max(2) == 0).mean(0)
    print(f"{found['faces']} test faces; best valid_acc {100 * run['best_valid_acc']:.1f}%; {cpu_name()}")
    print(localisation_table(found))
    print("blank maps: " + ", ".join(f"{m} {100 * b:.1f}%" for m, b in zip(METHODS, blank)))


if __name__ == "__main__":
    main()
