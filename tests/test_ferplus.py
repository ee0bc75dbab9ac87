"""FER+ crowd votes: the targets made from votes, the row join with fer2013.csv, the FER+ folder layout,
and 8-class models through every command."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

import fercli
from fercli.data import crowd
from fercli.data.prep import prepare
from fercli.data.prepared import PreparedData

from conftest import NO_REAL_DATA, SHARED, faces, pixels_text, write_csv

VOTES_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"


def synthetic_votes(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """10 votes per face: 7 for the face's own emotion, 2 for another, 1 stray; every 10th face's crowd
    instead says contempt, every 13th unknown, every 17th not a face."""
    rng = np.random.default_rng(seed)
    votes = np.zeros((len(labels), 10), dtype=np.int64)
    for i, lab in enumerate(labels):
        main = crowd.VOTE_OF_FER2013[lab]
        if i % 17 == 16:
            main = 9
        elif i % 13 == 12:
            main = 8
        elif i % 10 == 9:
            main = 7
        votes[i, main] += 7
        votes[i, rng.integers(10)] += 2
        votes[i, rng.integers(10)] += 1
    return votes


def votes_lines(usage: list[str], votes: np.ndarray, names: list[str] | None = None) -> list[str]:
    names = names or [f"fer{i:07d}.png" for i in range(len(usage))]
    return [f"{u},{n}," + ",".join(map(str, v)) for u, n, v in zip(usage, names, votes)]


@pytest.fixture
def ferplus_csvs(tmp_path):
    """fer2013.csv (70 Training, 14 PublicTest, 14 PrivateTest) and its fer2013new.csv."""
    images, labels = faces(98)
    usage = ["Training"] * 70 + ["PublicTest"] * 14 + ["PrivateTest"] * 14
    csv = write_csv(tmp_path / "fer2013.csv", "emotion,pixels,Usage",
                    [f"{lab},{pixels_text(img)},{u}" for img, lab, u in zip(images, labels, usage)])  # fmt: skip
    votes = synthetic_votes(labels)
    new = write_csv(tmp_path / "fer2013new.csv", VOTES_HEADER, votes_lines(usage, votes))
    return csv, new, images, labels, usage, votes


# ---- targets from votes -----------------------------------------------------------------------------


def test_majority_follows_the_paper_outliers_ties_unknown_and_not_a_face():
    v = np.array([
        [6, 3, 0, 0, 0, 0, 0, 0, 1, 0],  # clear neutral
        [4, 4, 0, 0, 0, 0, 0, 0, 1, 1],  # a tie at 4/10: no majority
        [5, 1, 1, 1, 1, 1, 0, 0, 0, 0],  # 5 of 10, but the single votes are outliers: 5 of 5
        [0, 0, 0, 0, 0, 0, 0, 0, 8, 2],  # unknown
        [0, 0, 0, 0, 0, 0, 0, 2, 0, 8],  # not a face
        [0, 0, 0, 0, 0, 0, 0, 7, 3, 0],  # contempt: a FER+ class
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # no votes
    ])  # fmt: skip
    assert crowd.majority(v).tolist() == [0, -1, 0, -1, -1, 7, -1]
    shares, keep = crowd.distribution(v)
    assert keep.tolist() == [True, True, True, False, False, True, False]
    np.testing.assert_allclose(shares[0], [6 / 9, 3 / 9, 0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(shares[1], [0.5, 0.5, 0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(shares[2], [1, 0, 0, 0, 0, 0, 0, 0])  # single votes dropped
    np.testing.assert_allclose(shares[keep].sum(1), 1, rtol=1e-6)
    np.testing.assert_allclose(crowd.crowd_share(v[:2], np.array([1, 9])), [0.3, 0.1])


def test_training_targets_per_mode(ferplus_csvs, tmp_path):
    csv, new, _, labels, _, votes = ferplus_csvs
    out = tmp_path / "d.safetensors"
    prepare([str(csv), str(new)], str(out))
    d = PreparedData.open(out)
    t = crowd.training_targets(d, "fer2013")
    assert t.classes == crowd.CLASSES and t.train_y.tolist() == labels[:70].tolist()
    t = crowd.training_targets(d, "majority")
    want = crowd.majority(votes[:70])
    assert t.classes == crowd.FERPLUS_CLASSES and not t.soft
    assert t.train.tolist() == np.flatnonzero(want >= 0).tolist() and t.train_y.tolist() == want[want >= 0].tolist()
    t = crowd.training_targets(d, "probability")
    shares, keep = crowd.distribution(votes[:70])
    assert t.soft and t.train_y.shape == (keep.sum(), 8)
    np.testing.assert_allclose(t.train_y, shares[keep])
    assert t.val_y.tolist() == [y for y in crowd.majority(votes[70:84]) if y >= 0]  # val: the majority
    assert crowd.training_targets(d, "auto").mode == crowd.AUTO_WITH_VOTES


def test_vote_modes_need_votes(synthetic_data, fer, tmp_path):
    r = fer("train", "--data", synthetic_data, "--labels", "majority", "--epochs", "1", "--project", tmp_path)
    assert r.code == 2 and "needs FER+ votes" in r.err and "Traceback" not in r.err
    assert crowd.training_targets(PreparedData.open(synthetic_data), "auto").mode == "fer2013"
    r = fer("train", "--data", synthetic_data, "--labels", "crowd", "--project", tmp_path)
    assert r.code == 2 and "--labels must be one of" in r.err


# ---- prep: the row join -----------------------------------------------------------------------------


def test_prep_joins_votes_row_by_row(ferplus_csvs, tmp_path, fer):
    csv, new, images, labels, _, votes = ferplus_csvs
    out = tmp_path / "d.safetensors"
    r = fer("prep", csv, new, "-o", out)
    assert r.code == 0, r.err
    assert "FER+ crowd majority" in r.err and "contempt" in r.err
    d = PreparedData.open(out)
    np.testing.assert_array_equal(d.votes, votes)
    np.testing.assert_array_equal(d.labels, labels)  # the FER2013 label stays beside the votes
    np.testing.assert_array_equal(d.images, images)
    assert d.meta["votes"]["faces"] == 98 and d.meta["votes"]["columns"][-1] == "NF"
    maj = crowd.majority(votes[:70])
    assert d.meta["votes"]["counts"]["train"]["contempt"] == int((maj == 7).sum())
    # the order of the two files on the command line does not matter
    out2 = tmp_path / "d2.safetensors"
    assert fer("prep", new, csv, "-o", out2).code == 0
    np.testing.assert_array_equal(PreparedData.open(out2).votes, votes)


def test_a_file_without_usage_pairs_with_its_usage_block(ferplus_csvs, tmp_path):
    _, new, images, labels, _, votes = ferplus_csvs
    train = write_csv(tmp_path / "train.csv", "emotion,pixels",
                      [f"{lab},{pixels_text(img)}" for img, lab in zip(images[:70], labels[:70])])  # fmt: skip
    test = write_csv(tmp_path / "test.csv", "id,pixels",
                     [f"{k},{pixels_text(img)}" for k, img in enumerate(images[70:84])])  # fmt: skip
    out = tmp_path / "d.safetensors"
    meta = prepare([str(train), str(test), str(new)], str(out))
    d = PreparedData.open(out)
    np.testing.assert_array_equal(d.votes, votes[:84])  # train.csv: Training rows; test.csv: the first 14-row block
    assert meta["origin"]["protocol"] == "holdout"  # no PrivateTest: PublicTest is the test split
    assert len(d.indices("test")) == 14


@pytest.mark.parametrize("damage, says", [
    (lambda lines: lines[:50], "row 50"),  # a short votes file
    (lambda lines: lines[:3] + [lines[3].replace("Training", "PublicTest", 1)] + lines[4:], "line 5"),
    (lambda lines: lines[:7] + [lines[7].rsplit(",", 1)[0] + ",x"] + lines[8:], "line 9"),
])  # fmt: skip
def test_votes_that_do_not_pair_name_the_first_bad_row(ferplus_csvs, tmp_path, fer, damage, says):
    csv, new, *_ = ferplus_csvs
    lines = new.read_text().splitlines()
    new.write_text("\n".join([lines[0], *damage(lines[1:])]) + "\n")
    out = tmp_path / "d.safetensors"
    r = fer("prep", csv, new, "-o", out)
    assert r.code != 0 and says in r.err and "fer2013new.csv" in r.err
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))


def test_votes_alone_or_twice_are_usage_errors(ferplus_csvs, tmp_path, fer):
    _, new, *_ = ferplus_csvs
    r = fer("prep", new, "-o", tmp_path / "d.safetensors")
    assert r.code == 2 and "give it too" in r.err
    copy = tmp_path / "copy.csv"
    copy.write_bytes(new.read_bytes())
    assert fer("prep", new, copy, "-o", tmp_path / "d.safetensors").code == 2


# ---- prep: the FER+ folder layout -------------------------------------------------------------------


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def ferplus_layout(images: np.ndarray, votes: np.ndarray, with_test: bool = False) -> dict[str, bytes]:
    """Files of the FER+ layout: 40 Training and 10 Valid (and 10 Test) faces; Training's label.csv also has a
    blank-name line and a repeated name, and its folder an image that label.csv does not list."""
    files: dict[str, bytes] = {}
    parts = [("FER2013Train", 0, 40), ("FER2013Valid", 40, 50)] + ([("FER2013Test", 50, 60)] if with_test else [])
    for folder, lo, hi in parts:
        lines = []
        for i in range(lo, hi):
            name = f"fer{i:07d}.png"
            files[f"{folder}/{name}"] = _png(images[i])
            lines.append(f'{name},"(0, 0, 48, 48)",' + ",".join(map(str, votes[i])))
        if folder == "FER2013Train":
            lines.insert(5, ',"(0, 0, 48, 48)",0,0,0,0,0,0,0,0,0,10')  # FER+: not a face, no name
            lines.append(lines[0].split(",", 1)[0] + ',"(0, 0, 48, 48)",0,10,0,0,0,0,0,0,0,0')  # a repeated name
            files[f"{folder}/unlisted.png"] = _png(images[0])
        files[f"{folder}/label.csv"] = ("\n".join(lines) + "\n").encode()
    return files


@pytest.mark.parametrize("as_zip", [False, True])
def test_ferplus_folder_layout_with_blank_and_repeated_names(tmp_path, fer, as_zip):
    images, labels = faces(60)
    votes = synthetic_votes(labels)
    files = ferplus_layout(images, votes)
    if as_zip:
        src = tmp_path / "ferplus.zip"
        with zipfile.ZipFile(src, "w") as z:
            for name, data in files.items():
                z.writestr(f"data/{name}", data)
    else:
        src = tmp_path / "data"
        for name, data in files.items():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes(data)
    out = tmp_path / "d.safetensors"
    r = fer("prep", src, "-o", out)
    assert r.code == 0, r.err
    assert "1 lines without a name" in r.err and "1 repeated" in r.err and "1 images that no label.csv lists" in r.err
    d = PreparedData.open(out)
    assert len(d) == 50 and (d.labels == -1).all()  # votes only: no FER2013 labels in this layout
    order = np.argsort(d.rows)
    np.testing.assert_array_equal(d.votes[order], votes[:50])  # the repeated name keeps its first votes
    np.testing.assert_array_equal(d.images[order], images[:50])
    # FER2013Valid is FER2013's PublicTest: without FER2013Test it is the test split, val is carved
    assert len(d.indices("test")) == 10 and d.meta["val_carved"] is not None
    t = crowd.training_targets(d, "majority")
    assert len(t.train) > 0 and len(t.val) > 0


def test_ferplus_layout_with_test_folder_uses_the_standard_protocol(tmp_path):
    images, labels = faces(60)
    src = tmp_path / "data"
    for name, data in ferplus_layout(images, synthetic_votes(labels), with_test=True).items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    meta = prepare([str(src)], str(tmp_path / "d.safetensors"))
    assert meta["origin"]["protocol"] == "standard"
    assert [meta["counts"][s]["total"] for s in ("train", "val", "test")] == [40, 10, 10]


def test_ferplus_folders_given_one_by_one_keep_their_origin(tmp_path):
    images, labels = faces(60)
    for name, data in ferplus_layout(images, synthetic_votes(labels)).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    out = str(tmp_path / "d.safetensors")
    meta = prepare([str(tmp_path / "FER2013Train"), str(tmp_path / "FER2013Valid") + "/"], out)
    assert meta["origin"]["splits"]["test"] == ["FER2013Valid: PublicTest (10)"]
    assert meta["origin"]["splits"]["train"][0].startswith("FER2013Train: Training (")


def test_label_csv_naming_a_missing_image(tmp_path, fer):
    images, labels = faces(60)
    src = tmp_path / "data"
    for name, data in ferplus_layout(images, synthetic_votes(labels)).items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    (src / "FER2013Valid" / "fer0000045.png").unlink()
    out = tmp_path / "d.safetensors"
    r = fer("prep", src, "-o", out)
    assert r.code != 0 and "label.csv" in r.err and "fer0000045.png" in r.err and not out.exists()
    r = fer("prep", src, "-o", out, "--skip-bad")
    assert r.code == 0 and len(PreparedData.open(out)) == 49
    (src / "FER2013Valid" / "label.csv").write_text('fer0000040.png,"(0, 0, 48, 48)",1,2,3\n')
    r = fer("prep", src, "-o", out)
    assert r.code != 0 and "label.csv line 1" in r.err and "expected 12 fields" in r.err


# ---- 8 classes through every command ----------------------------------------------------------------


@pytest.fixture(scope="module")
def ferplus_model(tmp_path_factory):
    """vgg4s trained 8 epochs on FER+ majority targets of 1,400 synthetic faces with votes (~15 s)."""
    base = tmp_path_factory.mktemp("ferplus")
    images, labels = faces(1400)
    usage = ["Training"] * 1200 + ["PublicTest"] * 200
    csv = write_csv(base / "fer2013.csv", "emotion,pixels,Usage",
                    [f"{lab},{pixels_text(img)},{u}" for img, lab, u in zip(images, labels, usage)])  # fmt: skip
    new = write_csv(base / "fer2013new.csv", VOTES_HEADER, votes_lines(usage, synthetic_votes(labels)))
    data = base / "d.safetensors"
    prepare([str(csv), str(new)], str(data))
    from fercli.engine.recipe import NO_AUGMENT, build_recipe
    from fercli.engine.train import RunSettings, train

    r = build_recipe("default", dict(arch="vgg4s", epochs=8, batch=32, lr=0.05, labels="majority", **NO_AUGMENT))
    out = train(r, RunSettings(data=str(data), device="cpu", project=str(base / "runs"), progress=False))
    return f"{out['run_dir']}/best.safetensors", data, out


def test_eight_class_model_through_every_command(ferplus_model, fer, tmp_path):
    from fercli.files.checkpoint import read_meta

    ckpt, data, out = ferplus_model
    meta = read_meta(ckpt)
    assert meta["classes"] == list(crowd.FERPLUS_CLASSES) and meta["recipe"]["labels"] == "majority"

    r = fer("predict", ckpt, data, "--names", "--probs")
    lines = r.out.splitlines()
    assert r.code == 0 and lines[0] == "id,emotion," + ",".join(f"p_{c}" for c in crowd.FERPLUS_CLASSES)
    assert all(row.split(",")[1] in crowd.FERPLUS_CLASSES for row in lines[1:])

    r = fer("eval", ckpt, "--data", data, "--split", "test", "--json")
    m = json.loads(r.out)
    d = PreparedData.open(data)
    truth = crowd.majority(d.votes[d.indices("test")])
    assert m["labels"] == "ferplus-majority" and m["n"] == int((truth >= 0).sum())  # clear majorities only
    assert list(m["per_class"]) == list(crowd.FERPLUS_CLASSES) and 0 < m["crowd"]["mean_share"] <= 1
    assert m["accuracy"] > 0.3  # well above chance (12.5%) on these easy synthetic faces

    r = fer("confmat", ckpt, "--data", data, "--split", "test", "--csv", "-o", tmp_path / "cm.png")
    assert r.code == 0 and r.out.splitlines()[0].split(",")[1:] == list(crowd.FERPLUS_CLASSES)
    assert len(r.out.splitlines()) == 9 and (tmp_path / "cm.png").exists()

    r = fer("saliency", "--model", ckpt, "--data", data, "--index", "0", "--target", "contempt",
            "-o", tmp_path / "s.png", "--npy", tmp_path / "s.npy")  # fmt: skip
    assert r.code == 0, r.err
    r = fer("saliency", "--model", ckpt, "--data", data, "--per-class", "1", "-o", tmp_path / "p.png")
    assert r.code == 0, r.err
    r = fer("saliency", "--model", ckpt, "--data", data, "--index", "0", "--target", "8", "-o", tmp_path / "x.png")
    assert r.code == 2 and "0..7" in r.err

    r = fer("ascent", "--model", ckpt, "--class-vis", "--steps", "2", "--filters", "7", "-o", tmp_path / "a.png")
    assert r.code == 0, r.err

    r = fer("audit", "--model", ckpt, "--data", data, "--top", "1", "-o", tmp_path / "au.png")
    rows = r.out.splitlines()
    assert r.code == 0 and rows[0].endswith(",crowd,crowd_share")
    for row in rows[1:]:
        f = row.split(",")
        assert f[3] in crowd.FERPLUS_CLASSES and f[-2] in crowd.VOTE_COLUMNS and 0 <= float(f[-1]) <= 1


def test_probability_targets_train(ferplus_model, tmp_path):
    from fercli.engine.recipe import NO_AUGMENT, build_recipe
    from fercli.engine.train import RunSettings, train

    _, data, _ = ferplus_model
    r = build_recipe("default", dict(arch="vgg4s", width=0.125, epochs=1, batch=32, lr=0.05, labels="probability",
                                     **NO_AUGMENT))  # fmt: skip
    out = train(r, RunSettings(data=str(data), device="cpu", project=str(tmp_path), progress=False))
    row = out["history"][0]
    assert np.isfinite(row["loss"]) and 0 <= row["valid_acc"] <= 1
    from fercli.files.checkpoint import read_meta

    assert read_meta(f"{out['run_dir']}/best.safetensors")["recipe"]["labels"] == "probability"


def test_seven_class_model_on_voted_data_reports_the_crowd(ferplus_model, trained_synthetic, tmp_path):
    """A FER2013 model is still scored on FER2013 labels; the votes add the crowd's share."""
    from fercli.infer.evaluate import evaluate

    ckpt, _, _, _ = trained_synthetic
    _, data, _ = ferplus_model
    m = evaluate(fercli.load(ckpt, "cpu"), str(data), "test", force=True)
    assert m["labels"] == "fer2013" and len(m["classes"]) == 7 and 0 <= m["crowd"]["mean_share"] <= 1


# ---- real data --------------------------------------------------------------------------------------


@pytest.mark.skipif(not (SHARED / "fer2013new.csv").exists(), reason=NO_REAL_DATA)
def test_real_votes_pair_with_fer2013(tmp_path):
    out = tmp_path / "real.safetensors"
    meta = prepare([str(SHARED / "fer2013.csv.gz"), str(SHARED / "fer2013new.csv")], str(out))
    d = PreparedData.open(out)
    assert meta["votes"]["faces"] == 32298 == len(d)
    maj = crowd.majority(d.votes)
    ok = maj >= 0
    # Paired right, the FER2013 label is the crowd's majority on about two faces in three (shuffled: ~18%).
    agree = float((crowd.VOTE_OF_FER2013[d.labels[ok]] == maj[ok]).mean())
    assert 0.6 < agree < 0.75, agree
    assert int((maj[d.indices("test")] >= 0).sum()) == 3199


def test_a_header_with_a_stray_carriage_return_is_not_a_votes_file(tmp_path):
    """Found by test_bad_input's mutations: a \\r inside the first line made the csv module raise from the
    votes-file sniffing, before the face reader could name the bad row."""
    from fercli.data.votefiles import is_votes_csv

    path = tmp_path / "x.csv"
    path.write_bytes(b"e\rotion,pixels,Usage\n0,1 2,Training\n")
    assert is_votes_csv(str(path)) is False
