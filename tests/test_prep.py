"""`fer prep`: every layout users have, every bad-input case, the val carve and the file round trip."""

from __future__ import annotations

import gzip
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from fercli.classes import SPLITS
from fercli.data.prep import carve_val, prepare
from fercli.data.prepared import PreparedData
from fercli.errors import FerError

from conftest import FER_ZIP, NO_REAL_DATA, faces, fer_subprocess, pixels_text, read_all_faces, write_csv


def _split(data: PreparedData, name: str) -> np.ndarray:
    return data.indices(name)


def test_fer2013_csv_maps_usage_to_splits_and_round_trips(tmp_path, fer2013_csv, fer):
    path, images, labels = fer2013_csv
    out = tmp_path / "d.safetensors"
    r = fer("prep", path, "-o", out)
    assert r.code == 0, r.err
    assert r.out == ""  # stdout is for data only
    assert "train" in r.err and "70" in r.err
    data = PreparedData.open(out)
    assert isinstance(data.images, np.memmap)
    assert [len(_split(data, s)) for s in SPLITS] == [70, 14, 14]
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels)
    np.testing.assert_array_equal(data.rows, np.arange(98))
    assert data.meta["counts"]["train"]["total"] == 70
    assert data.meta["val_carved"] is None
    assert len(data.content_hash) == 16


def test_train_and_test_csv_carve_stratified_val(tmp_path):
    images, labels = faces(140)
    train = write_csv(
        tmp_path / "train.csv", "emotion,pixels", [f"{lab},{pixels_text(i)}" for i, lab in zip(images, labels)]
    )
    test = write_csv(tmp_path / "test.csv", "id,pixels", [f"{100 + k},{pixels_text(images[k])}" for k in range(10)])
    meta = prepare([str(train), str(test)], str(tmp_path / "d.safetensors"), val_frac=0.2, seed=3)
    data = PreparedData.open(tmp_path / "d.safetensors")
    assert meta["val_carved"] == {"from": "train", "frac": 0.2, "seed": 3, "stratified": True}
    val = data.labels[_split(data, "val")]
    assert np.bincount(val, minlength=7).tolist() == [4] * 7  # 20 per class, 20% each
    test_idx = _split(data, "test")
    assert (data.labels[test_idx] == -1).all()
    assert data.rows[test_idx].tolist() == list(range(100, 110))  # ids kept


def test_carve_is_reproducible_and_seed_dependent():
    labels = np.repeat(np.arange(7), 50)
    splits = np.zeros(len(labels), dtype=np.int8)
    a, b, c = carve_val(labels, splits, 0.1, 1), carve_val(labels, splits, 0.1, 1), carve_val(labels, splits, 0.1, 2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.bincount(labels[a == 1], minlength=7).tolist() == [5] * 7


@pytest.mark.parametrize(
    "variant",
    ["label-feature", "crlf", "bom", "quoted", "extra-columns", "gzip", "pixels-only"],
)
def test_csv_variants(tmp_path, variant):
    images, labels = faces(14)
    header, rows, kw = "emotion,pixels", [f"{lab},{pixels_text(i)}" for i, lab in zip(images, labels)], {}
    if variant == "label-feature":
        header = "label,feature"
    elif variant == "crlf":
        kw["newline"] = "\r\n"
    elif variant == "bom":
        kw["bom"] = True
    elif variant == "quoted":
        header, rows = '"emotion","pixels"', [f'{lab},"{pixels_text(i)}"' for i, lab in zip(images, labels)]
    elif variant == "extra-columns":
        header, rows = (
            "id,emotion,note,pixels",
            [f"{k},{lab},x y,{pixels_text(i)}" for k, (i, lab) in enumerate(zip(images, labels))],
        )
    elif variant == "gzip":
        kw["gz"] = True
    elif variant == "pixels-only":
        header, rows = "pixels", [pixels_text(i) for i in images]
    src = write_csv(tmp_path / "faces.csv", header, rows, **kw)
    prepare([str(src)], str(tmp_path / "d.safetensors"), val_frac=0)
    data = PreparedData.open(tmp_path / "d.safetensors")
    np.testing.assert_array_equal(data.images, images)
    expected = -np.ones(14) if variant == "pixels-only" else labels
    np.testing.assert_array_equal(data.labels, expected)


def test_numpy_block_split_matches_the_per_row_path(tmp_path):
    """Clean blocks are cut into rows in numpy (the speed path); blocks with anything irregular fall
    back to per-row Python. With small blocks this file mixes both; the results must be the same."""
    images, labels = faces(12)
    usage = ["Training", "PublicTest", "PrivateTest"]
    rows = [f"{lab},{pixels_text(i)},{usage[k % 3]}" for k, (i, lab) in enumerate(zip(images, labels))]
    rows[3] = rows[3] + "\r"  # a CRLF line
    rows[5] = ""  # a blank line
    rows[7] = "8," + rows[7][2:]  # a bad label
    rows[9] = f'{labels[9]},"{pixels_text(images[9])}",Training'  # quoted
    src = write_csv(tmp_path / "mixed.csv", "emotion,pixels,Usage", rows)
    for block in (7000, 20000, 1 << 20):
        assert read_all_faces(src, block, True, False) == read_all_faces(src, block, True, True)
    fast = read_all_faces(src, 1 << 20, True, False)
    assert fast[5:] == (1, ["line 9: label '8' is not a class code 0..6"])
    assert len(fast[1]) == 10 * 48 * 48  # ten faces


def test_clean_csv_never_takes_the_per_row_path(tmp_path, fer2013_csv, monkeypatch):
    from fercli.data.csvfaces import CsvFaces

    def refuse(self, lines):
        raise AssertionError("per-row Python split used on a clean file")

    monkeypatch.setattr(CsvFaces, "_split_rows", refuse)
    path, images, _ = fer2013_csv
    chunks = list(CsvFaces(str(path), block_bytes=50_000))
    np.testing.assert_array_equal(np.concatenate([c.images for c in chunks]), images)


def test_stdin_csv(tmp_path):
    images, labels = faces(7)
    body = "emotion,pixels\n" + "".join(f"{lab},{pixels_text(i)}\n" for i, lab in zip(images, labels))
    r = fer_subprocess("prep", "-", "-o", tmp_path / "d.safetensors", "--val-frac", "0", input=body.encode())
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(PreparedData.open(tmp_path / "d.safetensors").images, images)


def _png(img: np.ndarray, mode: str = "L", size: int = 48) -> bytes:
    pil = Image.fromarray(img).convert(mode).resize((size, size))
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def test_image_zip_with_splits_and_any_size_or_mode(tmp_path):
    images, labels = faces(21)
    from fercli.classes import CLASSES

    zpath = tmp_path / "faces.zip"
    names = {}
    with zipfile.ZipFile(zpath, "w") as z:
        for k, (img, lab) in enumerate(zip(images, labels)):
            split = "train" if k < 14 else "test"
            mode, size = ("RGB", 96) if k % 3 == 0 else ("L", 48)
            names[f"{split}/{CLASSES[lab]}/img_{k:03d}.png"] = k
            z.writestr(f"{split}/{CLASSES[lab]}/img_{k:03d}.png", _png(img, mode, size))
        z.writestr("__MACOSX/._junk.png", b"junk")
    meta = prepare([str(zpath)], str(tmp_path / "d.safetensors"), val_frac=0)
    data = PreparedData.open(tmp_path / "d.safetensors")
    assert len(data) == 21
    assert len(_split(data, "test")) == 7
    order = [names[m] for m in meta["sources"][0]["members"]]  # sorted member paths
    np.testing.assert_array_equal(data.labels, labels[order])
    # 48x48 grayscale passes unchanged; RGB 96x96 comes back close to the original after the round trip.
    gray, rgb = order.index(1), order.index(0)
    np.testing.assert_array_equal(data.images[gray], images[1])
    assert np.abs(data.images[rgb].astype(int) - images[0]).mean() < 12


def test_emotion_folders_without_split(tmp_path):
    from fercli.classes import CLASSES

    images, labels = faces(14)
    for k, (img, lab) in enumerate(zip(images, labels)):
        d = tmp_path / "imgs" / CLASSES[lab]
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{k}.png").write_bytes(_png(img))
    meta = prepare([str(tmp_path / "imgs")], str(tmp_path / "d.safetensors"), val_frac=0.5)
    assert meta["counts"]["train"]["total"] + meta["counts"]["val"]["total"] == 14


def _bad_cases(tmp_path):
    images, labels = faces(3)
    good = [f"{lab},{pixels_text(i)}" for i, lab in zip(images, labels)]
    short = "3," + " ".join(["1"] * 100)
    return {
        "wrong-count": (["emotion,pixels", good[0], short], "line 3: expected 2304 pixels, found 100"),
        "pixel-256": (
            ["emotion,pixels", good[0], "1," + " ".join(["256"] * 2304)],
            "line 3: a pixel is not an integer",
        ),
        "pixel-float": (["emotion,pixels", "1," + " ".join(["1.5"] * 2304)], "line 2: a pixel is not an integer"),
        "label-7": (["emotion,pixels", good[0], good[1], "7," + pixels_text(images[0])], "line 4: label '7'"),
        "missing-column": (["emotion,pics", good[0]], "missing column 'pixels'"),
        "empty": ([], "empty file"),
        "field-count": (["emotion,pixels", good[0], "1,2,3"], "line 3: expected 2 fields"),
    }


@pytest.mark.parametrize(
    "case", ["wrong-count", "pixel-256", "pixel-float", "label-7", "missing-column", "empty", "field-count"]
)
def test_bad_csv_names_file_and_line_and_leaves_nothing(tmp_path, fer, case):
    lines, message = _bad_cases(tmp_path)[case]
    src = tmp_path / "bad.csv"
    src.write_text("\n".join(lines) + ("\n" if lines else ""))
    out = tmp_path / "out.safetensors"
    r = fer("prep", src, "-o", out)
    assert r.code == 1
    assert str(src) in r.err and message in r.err
    assert "Traceback" not in r.err
    assert len(r.err.strip().splitlines()) <= 2  # the default notice, then one error line
    assert list(tmp_path.iterdir()) == [src]  # no output, no temporary left behind


def test_skip_bad_counts_and_reports_rows(tmp_path, fer):
    images, labels = faces(5)
    rows = [f"{lab},{pixels_text(i)}" for i, lab in zip(images, labels)]
    rows.insert(2, "9," + pixels_text(images[0]))
    rows.insert(4, "1,1 2 3")
    src = write_csv(tmp_path / "bad.csv", "emotion,pixels", rows)
    r = fer("prep", src, "-o", tmp_path / "d.safetensors", "--skip-bad", "--val-frac", "0")
    assert r.code == 0, r.err
    assert "skipped 2 bad rows" in r.err and "line 4" in r.err and "line 6" in r.err
    data = PreparedData.open(tmp_path / "d.safetensors")
    np.testing.assert_array_equal(data.images, images)


def test_truncated_gzip_and_corrupt_zip_member(tmp_path, fer):
    images, labels = faces(50)
    body = "emotion,pixels\n" + "".join(f"{lab},{pixels_text(i)}\n" for i, lab in zip(images, labels))
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress(body.encode())[:-200])
    r = fer("prep", gz, "-o", tmp_path / "o.safetensors")
    assert r.code == 1 and "corrupt or truncated gzip" in r.err and str(gz) in r.err

    zpath = tmp_path / "z.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("train/happy/ok.png", _png(images[0]))
        z.writestr("train/happy/broken.png", b"\x89PNG\r\n\x1a\nnot really")
    r = fer("prep", zpath, "-o", tmp_path / "o.safetensors")
    assert r.code == 1 and "member train/happy/broken.png" in r.err
    assert not (tmp_path / "o.safetensors").exists()


def test_no_source_is_a_usage_error_said_first(tmp_path, fer, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = fer("prep")
    assert r.code == 2 and r.err.startswith("error: give at least one SOURCE") and "using" not in r.err
    assert not (tmp_path / "fer-data.safetensors").exists()


def test_missing_source_exit_code(tmp_path, fer):
    r = fer("prep", tmp_path / "nope.csv", "-o", tmp_path / "o.safetensors")
    assert r.code == 3 and "no such file" in r.err


def test_prepared_file_rejects_foreign_safetensors(tmp_path):
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(3, np.float32)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(FerError, match="not a fercli prepared data file"):
        PreparedData.open(tmp_path / "x.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 20)
    with pytest.raises(FerError, match="not a safetensors file"):
        PreparedData.open(tmp_path / "junk.safetensors")


def test_synthetic_faces_are_balanced_and_seeded(tmp_path):
    meta = prepare([], str(tmp_path / "s.safetensors"), synthetic=700, seed=1)
    assert meta["sources"][0]["kind"] == "synthetic"
    assert sum(meta["counts"][s]["total"] for s in SPLITS) == 700
    a, b = faces(70, 5), faces(70, 5)
    np.testing.assert_array_equal(a[0], b[0])
    assert np.bincount(a[1]).tolist() == [10] * 7


@pytest.mark.skipif(not FER_ZIP.exists(), reason=NO_REAL_DATA)
def test_real_fer2013_zip_counts(tmp_path):
    meta = prepare([str(FER_ZIP)], str(tmp_path / "d.safetensors"))
    c = meta["counts"]
    train = {k: c["train"][k] + c["val"][k] for k in c["train"]}
    assert [train[k] for k in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")] == [
        3995,
        436,
        4097,
        7215,
        4830,
        3171,
        4965,
    ]
    assert c["test"]["total"] == 3589 and c["test"]["happy"] == 895


def test_split_protocol_follows_privatetest_and_says_where_splits_came_from(tmp_path, fer):
    """With PrivateTest present, FER2013's own protocol (PublicTest is val); without it, PublicTest stays the
    test split and val is carved from Training, so model selection never sees the reported split."""
    images, labels = faces(84)
    usage = ["Training"] * 70 + ["PublicTest"] * 14
    rows = [f"{lab},{pixels_text(img)},{u}" for img, lab, u in zip(images, labels, usage)]
    src = write_csv(tmp_path / "fer2013.csv", "emotion,pixels,Usage", rows)
    r = fer("prep", src, "-o", tmp_path / "auto.safetensors", "--val-frac", "0.2")
    assert r.code == 0, r.err
    assert "holdout protocol" in r.err and "fer2013.csv: PublicTest (14)" in r.err
    data = PreparedData.open(tmp_path / "auto.safetensors")
    assert [len(_split(data, s)) for s in SPLITS] == [56, 14, 14]
    np.testing.assert_array_equal(_split(data, "test"), np.arange(70, 84))
    origin = data.meta["origin"]
    assert origin["protocol"] == "holdout"
    assert origin["splits"]["train"] == ["fer2013.csv: Training (56)"]
    assert origin["splits"]["val"] == ["carved from train: 0.2 of each class, seed 0 (14)"]
    assert origin["splits"]["test"] == ["fer2013.csv: PublicTest (14)"]
    # Asked for explicitly, the standard protocol makes PublicTest val even without PrivateTest.
    meta = prepare([str(src)], str(tmp_path / "std.safetensors"), protocol="standard")
    assert meta["origin"]["splits"]["val"] == ["fer2013.csv: PublicTest (14)"] and "test" not in meta["counts"]
    assert meta["val_carved"] is None
    r = fer("prep", src, "-o", tmp_path / "x.safetensors", "--protocol", "nope")
    assert r.code == 2 and "--protocol must be one of auto, standard, holdout" in r.err
    assert not (tmp_path / "x.safetensors").exists()


def test_image_release_names_its_usage_and_follows_the_same_rule(tmp_path):
    """The image release's test/ folder holds PublicTest_<id>.jpg: PublicTest, under the same rule as the CSV."""
    from fercli.classes import CLASSES

    images, labels = faces(28)
    zpath = tmp_path / "fer2013.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for k, (img, lab) in enumerate(zip(images, labels)):
            folder, usage = ("train", "Training") if k < 21 else ("test", "PublicTest")
            z.writestr(f"{folder}/{CLASSES[lab]}/{usage}_{k}.png", _png(img, "L", 48))
    meta = prepare([str(zpath)], str(tmp_path / "a.safetensors"), val_frac=0)
    assert meta["origin"] == {
        "protocol": "holdout",
        "splits": {"train": ["fer2013.zip: Training (21)"], "test": ["fer2013.zip: PublicTest (7)"]},
    }
    meta = prepare([str(zpath)], str(tmp_path / "s.safetensors"), protocol="standard")
    assert meta["counts"]["val"]["total"] == 7 and "test" not in meta["counts"]


def test_prep_tables_fit_80_columns_without_cutting_anything(tmp_path):
    """FER2013's real sizes (five-digit totals) and FER+'s eleven columns, on an 80-column terminal."""
    from rich.console import Console

    from fercli.classes import CLASSES
    from fercli.data import crowd
    from fercli.data.prep import counts_table, votes_table

    def counts(classes):
        return {s: {**{c: 12345 for c in classes}, "unlabeled": 0, "total": 25837} for s in ("train", "val", "test")}

    meta = {"content_hash": "81682e038d9a357b", "counts": counts(CLASSES),
            "origin": {"protocol": "holdout", "splits": {"train": ["fer2013.csv.gz: Training (25837)"],
                                                         "val": ["carved from train: 0.1 of each class (2872)"]}},
            "votes": {"faces": 32298, "counts": counts(crowd.FERPLUS_CLASSES)}}  # fmt: skip
    con = Console(width=80, record=True, color_system=None)
    con.print(counts_table(meta))
    con.print(votes_table(meta))
    text = con.export_text()
    assert "…" not in text and max(len(line.rstrip()) for line in text.splitlines()) <= 80, text
    assert "train: fer2013.csv.gz: Training (25837)" in text and "contempt" in text and "unlabeled" in text


def test_prep_counts_duplicates_and_dedup_drops_the_held_out_copies_of_train_faces(tmp_path, fer):
    """Exact copies (same pixels) within and across splits on every prep; with --dedup also re-encoded
    copies (a face changed by a few grey levels, as a JPEG of it is), whose val and test copies are dropped."""
    from fercli.data.prepared import PreparedData

    images, labels = faces(40, seed=5)
    train, test = list(images[:30]), list(images[30:])
    test[0] = train[3]  # an exact copy of a train face in test
    noisy = np.clip(train[7].astype(int) + np.random.default_rng(0).integers(-2, 3, train[7].shape), 0, 255)
    test[1] = noisy.astype(np.uint8)  # a near-exact copy
    train[10] = train[11]  # a repeat within train
    rows = [f"{lab},{pixels_text(img)},Training" for img, lab in zip(train, labels[:30])]
    rows += [f"{lab},{pixels_text(img)},PublicTest" for img, lab in zip(test, labels[30:])]
    src = write_csv(tmp_path / "fer2013.csv", "emotion,pixels,Usage", rows)
    r = fer("prep", src, "-o", tmp_path / "d.safetensors", "--val-frac", "0")
    assert r.code == 0, r.err
    dup = PreparedData.open(tmp_path / "d.safetensors").meta["duplicates"]
    assert dup["train"]["within"] == 1 and dup["test"] == {"within": 0, "of_train": 1}
    assert "test 1 exact copies of train faces" in r.err and "1 repeats within train" in r.err
    r = fer("prep", src, "-o", tmp_path / "dd.safetensors", "--val-frac", "0", "--dedup")
    assert r.code == 0, r.err
    d = PreparedData.open(tmp_path / "dd.safetensors")
    assert d.meta["duplicates"]["test"]["near_of_train"] == 1 and d.meta["duplicates"]["dropped"]["test"] == 2
    assert d.meta["counts"]["test"]["total"] == 8 and d.meta["counts"]["train"]["total"] == 30
    kept = np.array(d.images[d.indices("test")])
    assert not any((kept == t).all((1, 2)).any() for t in (train[3], test[1]))
