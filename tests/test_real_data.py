"""Training on real FER2013 faces (skips without ../shared): the CPU recipe, with its augmentation, for
750 steps on 3,000 faces (about 50 s here) must beat the majority class on held-out PublicTest faces."""

from __future__ import annotations

import numpy as np
import pytest

import fercli

from conftest import NO_REAL_DATA, SHARED

FER_GZ = SHARED / "fer2013.csv.gz"


@pytest.mark.skipif(not FER_GZ.exists(), reason=NO_REAL_DATA)
def test_cpu_recipe_learns_real_faces(tmp_path):
    from fercli.data.prep import prepare
    from fercli.data.prepared import PreparedData, write_prepared
    from fercli.engine.recipe import build_recipe
    from fercli.engine.train import RunSettings, train
    from fercli.infer.evaluate import evaluate

    full = tmp_path / "full.safetensors"
    meta = prepare([str(FER_GZ)], str(full))
    assert meta["origin"]["protocol"] == "holdout"  # no PrivateTest here: PublicTest stays the test split
    d = PreparedData.open(full)
    rng = np.random.default_rng(0)
    tr = rng.choice(d.indices("train"), 3000, replace=False)
    val = rng.choice(d.indices("val"), 400, replace=False)
    test = rng.choice(d.indices("test"), 1000, replace=False)
    pick = np.concatenate([tr, val, test])
    splits = np.repeat(np.array([0, 1, 2], dtype=np.int8), [len(tr), len(val), len(test)])
    small = tmp_path / "small.safetensors"
    write_prepared(small, [np.asarray(d.images[pick])], d.labels[pick], splits, d.rows[pick], d.source[pick],
                   meta["sources"], None)  # fmt: skip

    r = build_recipe("cpu", {"epochs": 16})  # 750 steps of 64 faces: a small net needs ~500 to leave "all happy"
    assert r.augments  # the recipe's own augmentation is on
    out = train(r, RunSettings(data=str(small), device="cpu", project=str(tmp_path / "runs"), progress=False))
    m = evaluate(fercli.load(out["run_dir"], "cpu"), str(small), "test")
    majority = np.bincount(d.labels[test]).max() / len(test)
    # 36.9% against 25.3% in a trial run; 6 points is four standard errors on 1,000 faces.
    assert m["accuracy"] >= majority + 0.06, (m["accuracy"], majority, out["history"])
