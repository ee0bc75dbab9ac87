"""The leak check (data/leaks.py) and prep's refusal to replace a prepared file of other data: one answer
for the same model whichever file holds the split."""

from __future__ import annotations

import numpy as np
import pytest

import fercli
from fercli.data.leaks import face_thumbnails
from fercli.data.prep import prepare
from fercli.data.prepared import PreparedData
from fercli.errors import USAGE, FerError
from fercli.infer.evaluate import evaluate

from conftest import faces, pixels_text, write_csv

N_TRAIN, N_TEST, EXACT, NEAR = 300, 60, 9, 6


def _dataset_csv(path, test_labels_shift: int = 0):
    """A FER2013-style CSV whose PublicTest repeats EXACT training faces pixel for pixel and NEAR more
    re-encoded (pixels moved by up to 2 grey levels), as FER2013 itself does."""
    images, labels = faces(N_TRAIN + N_TEST, seed=5)
    test = images[N_TRAIN:].copy()
    test[:EXACT] = images[:EXACT]
    jitter = np.random.default_rng(1).integers(-2, 3, (NEAR, 48, 48))
    test[EXACT : EXACT + NEAR] = np.clip(images[EXACT : EXACT + NEAR].astype(int) + jitter, 0, 255)
    test_labels = (labels[N_TRAIN:] + test_labels_shift) % 7
    rows = [f"{lab},{pixels_text(img)},Training" for img, lab in zip(images[:N_TRAIN], labels[:N_TRAIN])]
    rows += [f"{lab},{pixels_text(img)},PublicTest" for img, lab in zip(test, test_labels)]
    return write_csv(path, "emotion,pixels,Usage", rows)


def _model_trained_on(data_path, path, tiny_model):
    """A checkpoint that says it was trained on `data_path`'s train split: its hash and its faces' thumbnails."""
    from fercli.files.checkpoint import load_model, read_meta, save_checkpoint

    data = PreparedData.open(data_path)
    net, _ = load_model(tiny_model, "cpu")
    meta = read_meta(tiny_model) | {"data": {"hash": data.content_hash}}
    save_checkpoint(path, net.state_dict(), meta, train_faces=face_thumbnails(data.images[data.indices("train")]))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_model):
    base = tmp_path_factory.mktemp("leaks")
    src = _dataset_csv(base / "fer2013.csv")
    relabelled = _dataset_csv(base / "relabelled.csv", test_labels_shift=1)
    a, b, c = (str(base / f"{k}.safetensors") for k in "abc")
    prepare([str(src)], a)
    prepare([str(relabelled)], b)  # the same splits, other labels: another file, another hash
    prepare([str(src)], c, seed=1)  # val carved with another seed: another cut of train
    return a, b, c, _model_trained_on(a, base / "model.safetensors", tiny_model)


def test_the_data_sets_own_copies_are_said_the_same_way_whichever_file_is_given(files, capsys):
    a, b, _, model = files
    d = PreparedData.open(a)
    in_train = set(d.rows[d.indices("train")].tolist())  # the copied faces the model trained on (val was carved)
    copied = sum(i in in_train for i in range(EXACT + NEAR))
    assert copied >= 10
    said = {}
    for path in (a, b):
        m = evaluate(fercli.load(model, "cpu"), path, "test")
        assert m["trained_faces"] == {"faces": N_TEST, "copies_of_train": copied, "other_cut": 0}
        said[path] = [line for line in capsys.readouterr().err.splitlines() if "split copy training faces" in line]
    assert said[a] == said[b] and len(said[a]) == 1
    assert f"{copied} of {N_TEST} faces of the test split" in said[a][0] and "--dedup" in said[a][0]


def test_another_cut_of_the_same_data_is_refused_then_scored_with_force(files, capsys):
    a, _, c, model = files
    with pytest.raises(FerError) as e:
        evaluate(fercli.load(model, "cpu"), c, "val")
    moved = int((~np.isin(PreparedData.open(c).indices("val"), PreparedData.open(a).indices("val"))).sum())
    assert e.value.code == USAGE and f"{moved} of " in str(e.value) and "--force" in str(e.value)
    m = evaluate(fercli.load(model, "cpu"), c, "val", force=True)
    assert m["trained_faces"]["other_cut"] == moved > 0
    # The model's own file: its val holds no face the model trained on, beyond the data's own copies.
    assert evaluate(fercli.load(model, "cpu"), a, "val")["trained_faces"]["other_cut"] == 0


def test_prep_replaces_a_prepared_file_only_with_the_same_data_or_force(tmp_path, fer):
    src = _dataset_csv(tmp_path / "fer2013.csv")
    other = _dataset_csv(tmp_path / "relabelled.csv", test_labels_shift=1)
    out = tmp_path / "fer-data.safetensors"
    assert fer("prep", src, "-o", out).code == 0
    before, old_hash = out.read_bytes(), PreparedData.open(out).content_hash
    assert fer("prep", src, "-o", out).code == 0 and out.read_bytes() == before  # the same data again
    r = fer("prep", other, "-o", out)
    assert r.code == USAGE and out.read_bytes() == before
    line = r.err.strip().splitlines()[-1]
    assert line.startswith(f"error: {out}: holds other prepared data")
    assert "from fer2013.csv)" in line and "from relabelled.csv)" in line and "--force" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fer-data.safetensors", "fer2013.csv", "relabelled.csv"]
    r = fer("prep", other, "-o", out, "--force")
    replaced = PreparedData.open(out)
    assert r.code == 0 and replaced.content_hash != old_hash
    assert replaced.meta["sources"][0]["path"].endswith("relabelled.csv")
