"""`fer eval`, `fer predict` and `fer confmat` on a tiny trained model."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import fercli
from fercli.classes import CLASSES
from fercli.data.prepared import PreparedData
from fercli.defaults import CPU_FORWARD
from fercli.engine.recipe import build_recipe
from fercli.engine.train import RunSettings, train
from fercli.errors import FerError
from fercli.files.checkpoint import load_model, save_checkpoint
from fercli.infer.inference import predict_probs
from fercli.infer.predict import predict_stream

from conftest import faces, fer_subprocess, pixels_text, write_csv


@pytest.fixture(scope="session")
def model(synthetic_data, tmp_path_factory):
    project = tmp_path_factory.mktemp("runs")
    r = build_recipe("default", dict(arch="vgg4s", width=0.125, epochs=1, batch=32, lr=0.05))
    out = train(r, RunSettings(data=str(synthetic_data), device="cpu", project=str(project), progress=False))
    return f"{out['run_dir']}/best.safetensors"


def _predict(model, inputs, tta=None, **kw) -> list[list[str]]:
    buf = io.StringIO()
    predict_stream(fercli.load(model, "cpu", tta), [str(i) for i in inputs], buf, **kw)
    return [line.split(",") for line in buf.getvalue().splitlines()]


def test_predict_csv_ids_rows_probs_and_names(model, tmp_path):
    images, _ = faces(9)
    with_id = write_csv(
        tmp_path / "test.csv", "id,pixels", [f"{100 + k},{pixels_text(i)}" for k, i in enumerate(images)]
    )
    no_id = write_csv(tmp_path / "plain.csv", "pixels", [pixels_text(i) for i in images])
    rows = _predict(model, [with_id])
    assert rows[0] == ["id", "emotion"] and len(rows) == 10
    assert [r[0] for r in rows[1:]] == [str(100 + k) for k in range(9)]
    assert all(r[1] in {str(c) for c in range(7)} for r in rows[1:])
    assert [r[0] for r in _predict(model, [no_id])[1:]] == [str(k) for k in range(9)]
    probs = _predict(model, [no_id], probs=True, names=True)
    assert probs[0] == ["id", "emotion", *(f"p_{c}" for c in CLASSES)]
    for r in probs[1:]:
        p = np.array(r[2:], dtype=float)
        assert abs(p.sum() - 1) < 1e-4 and r[1] == CLASSES[int(p.argmax())]


def test_predict_images_folder_zip_and_prepared_file(model, tmp_path, synthetic_data):
    images, _ = faces(3)
    folder = tmp_path / "imgs"
    folder.mkdir()
    zpath = tmp_path / "imgs.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for k, img in enumerate(images):
            Image.fromarray(img).convert("RGB").resize((64, 64)).save(folder / f"f{k}.png")
            z.write(folder / f"f{k}.png", f"faces/f{k}.png")
    assert [r[0] for r in _predict(model, [folder])[1:]] == [str(folder / f"f{k}.png") for k in range(3)]
    assert [r[0] for r in _predict(model, [zpath])[1:]] == [f"faces/f{k}.png" for k in range(3)]
    assert [r[0] for r in _predict(model, [folder / "f1.png"])[1:]] == [str(folder / "f1.png")]
    assert len(_predict(model, [synthetic_data])) == len(PreparedData.open(synthetic_data)) + 1


def test_tta_averages_the_mirror(model):
    net, meta = load_model(model)
    x = torch.from_numpy(faces(4)[0])
    m, s = meta["normalize"]["mean"], meta["normalize"]["std"]
    plain = predict_probs(net, x, m, s, torch.device("cpu"))
    mirror = predict_probs(net, x.flip(2), m, s, torch.device("cpu"))
    torch.testing.assert_close(predict_probs(net, x, m, s, torch.device("cpu"), tta=True), (plain + mirror) / 2)
    # crops: the face and its mirror, each also shifted one pixel diagonally four ways, the edge repeated
    views = []
    for face in (x, x.flip(2)):
        edged = torch.from_numpy(np.pad(face.numpy(), ((0, 0), (1, 1), (1, 1)), mode="edge"))
        views += [face] + [edged[:, 1 + dy : 49 + dy, 1 + dx : 49 + dx] for dy in (-1, 1) for dx in (-1, 1)]
    want = sum(predict_probs(net, v.contiguous(), m, s, torch.device("cpu")) for v in views) / 10
    torch.testing.assert_close(predict_probs(net, x, m, s, torch.device("cpu"), tta="crops"), want)
    assert not torch.allclose(want, (plain + mirror) / 2)
    with pytest.raises(FerError, match="tta 'mirror': choose from none, flip, crops"):
        fercli.load(model, "cpu", tta="mirror")


def test_cpu_forwards_in_cache_sized_passes_with_the_same_probabilities(model):
    net, meta = load_model(model)
    m, s = meta["normalize"]["mean"], meta["normalize"]["std"]
    x = torch.from_numpy(faces(CPU_FORWARD * 2 + 7)[0])
    passes = []
    hook = net.register_forward_pre_hook(lambda _, args: passes.append(len(args[0])))
    got = predict_probs(net, x, m, s, torch.device("cpu"), batch=512, tta="flip")
    hook.remove()
    # a 512-face batch forwarded CPU_FORWARD faces at a time, each chunk then its mirror, the rest last
    assert passes == [CPU_FORWARD] * 2 + [CPU_FORWARD] * 2 + [7] * 2
    one_face_a_pass = torch.cat([predict_probs(net, x[k : k + 1], m, s, torch.device("cpu"), tta="flip")
                                 for k in range(len(x))])  # fmt: skip
    torch.testing.assert_close(got, one_face_a_pass, rtol=1e-4, atol=1e-5)
    assert got.shape == (len(x), len(meta["classes"]))


def test_cli_stdout_is_only_csv_and_head_ends_cleanly(model, tmp_path):
    images, _ = faces(600)
    src = write_csv(tmp_path / "t.csv", "pixels", [pixels_text(i) for i in images])
    r = fer_subprocess("predict", model, "-", "--device", "cpu", input=src.read_bytes())
    lines = r.stdout.decode().splitlines()
    assert r.returncode == 0 and lines[0] == "id,emotion" and len(lines) == 601
    pipe = subprocess.run(
        f"set -o pipefail; {sys.executable} -m fercli predict {model} {src} --device cpu | head -3",
        shell=True, capture_output=True, executable="/bin/bash",
    )  # fmt: skip
    assert pipe.stdout.decode().splitlines()[0] == "id,emotion" and len(pipe.stdout.splitlines()) == 3
    assert pipe.returncode in (0, 141) and b"Traceback" not in pipe.stderr and b"Broken pipe" not in pipe.stderr
    out = tmp_path / "sub.csv"
    r = fer_subprocess("predict", model, src, "-o", out, "--device", "cpu")
    assert r.returncode == 0 and r.stdout == b"" and len(out.read_text().splitlines()) == 601


def test_bad_models_and_inputs_fail_in_one_line(model, tmp_path):
    from safetensors.torch import load_file, save_file

    from fercli.files.checkpoint import read_meta

    not_st = tmp_path / "junk.safetensors"
    not_st.write_bytes(b"hello world, not a model")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    wrong = tmp_path / "wrong.safetensors"
    meta = read_meta(model)
    save_checkpoint(wrong, load_file(model), {**meta, "arch": "vgg5"})
    images, _ = faces(2)
    src = write_csv(tmp_path / "t.csv", "pixels", [pixels_text(i) for i in images] + ["1 2 3"])
    cases = [
        ((not_st, src), "not a safetensors file"),
        ((foreign, src), "not a fercli checkpoint"),
        ((wrong, src), "weights do not fit network 'vgg5'"),
        ((model, src), "t.csv line 4: expected 2304 pixels, found 3"),
    ]
    for (m, inp), message in cases:
        r = fer_subprocess("predict", m, inp, "-o", tmp_path / "o.csv", "--device", "cpu")
        err = r.stderr.decode()
        assert r.returncode == 1 and message in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1
        assert not (tmp_path / "o.csv").exists()


def test_eval_json_schema_and_confmat(model, synthetic_data, tmp_path, fer):
    r = fer("eval", model, "--data", synthetic_data, "--split", "test", "--json", "--device", "cpu")
    assert r.code == 0, r.err
    m = json.loads(r.out)
    assert {"accuracy", "macro_f1", "n", "per_class", "confusion", "split", "model"} <= set(m)
    assert set(m["per_class"]) == set(CLASSES)
    assert set(m["per_class"]["happy"]) == {"precision", "recall", "f1", "support"}
    assert sum(v["support"] for v in m["per_class"].values()) == m["n"] == 140
    assert "accuracy" in r.err and "macro-F1" in r.err
    png = tmp_path / "cm.png"
    r = fer("confmat", model, "--data", synthetic_data, "--split", "test", "--out", png, "--csv", "--device", "cpu")
    assert r.code == 0, r.err
    rows = r.out.strip().splitlines()
    assert len(rows) == 8 and sum(int(v) for row in rows[1:] for v in row.split(",")[1:]) == 140
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 1000 and im.size[1] > 400
        assert np.asarray(im.convert("L")).std() > 10  # not blank


def test_predict_checks_every_input_before_writing_and_keeps_ids_unique(model, tmp_path):
    images, _ = faces(3)
    a = write_csv(tmp_path / "a.csv", "pixels", [pixels_text(i) for i in images])
    b = write_csv(tmp_path / "b.csv", "id,pixels", [f"{k},{pixels_text(i)}" for k, i in enumerate(images)])
    out = tmp_path / "sub.csv"
    for args, code, message in [
        ((a, tmp_path / "tset.csv"), 3, "tset.csv: no such file"),
        ((a, a), 2, "a.csv is given twice"),
    ]:
        r = fer_subprocess("predict", model, *args, "-o", out, "--device", "cpu")
        assert r.returncode == code and message in r.stderr.decode() and not out.exists(), r.stderr
        r = fer_subprocess("predict", model, *args, "--device", "cpu")
        assert r.returncode == code and r.stdout == b""  # not even the header
    # a bad second input fails before the first one's rows are written
    bad = tmp_path / "pic.csv"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    r = fer_subprocess("predict", model, a, bad, "--device", "cpu")
    assert r.returncode == 1 and r.stdout == b""
    assert "pic.csv: not a CSV file: it looks like a PNG image" in r.stderr.decode()
    rows = _predict(model, [a, b])
    ids = [r[0] for r in rows[1:]]
    assert len(ids) == len(set(ids)) == 6 and ids[0] == f"{a}:0" and ids[-1] == f"{b}:2"
    assert [r[0] for r in _predict(model, [a])[1:]] == ["0", "1", "2"]  # one input: ids as before


def test_swapped_arguments_and_bad_split_say_what_to_do(model, tmp_path, synthetic_data, fer):
    images, _ = faces(2)
    src = write_csv(tmp_path / "test.csv", "pixels", [pixels_text(i) for i in images])
    r = fer("predict", src, model)
    assert r.code == 1 and "not a safetensors file: it looks like a CSV file (the model comes first" in r.err
    r = fer("eval", model, "--data", synthetic_data, "--split", "tset")
    assert r.code == 2 and "--split 'tset': choose from train, val, test" in r.err


def test_tta_default_comes_from_the_checkpoint(model, synthetic_data, fer):
    """Training validated with flip averaging (the recipe's tta): eval and predict do the same unless told."""
    from fercli.files.checkpoint import read_meta

    assert read_meta(model)["recipe"]["tta"] is True
    runs = [json.loads(fer("eval", model, "--data", synthetic_data, *flag, "--json").out) for flag in
            ([], ["--tta"], ["--no-tta"], ["--tta-crops"])]  # fmt: skip
    assert [m["tta"] for m in runs] == ["flip", "flip", "none", "crops"]
    r = fer("eval", model, "--data", synthetic_data, "--tta-crops", "--no-tta")
    assert r.code == 2 and "--tta-crops and --no-tta" in r.err and len(r.err.strip().splitlines()) == 1
    assert runs[0]["confusion"] == runs[1]["confusion"]
    best = read_meta(model)["best"]["valid_acc"]
    val = json.loads(fer("eval", model, "--data", synthetic_data, "--json").out)
    assert val["accuracy"] == pytest.approx(best, abs=1e-9)  # the number training printed


def test_eval_on_another_file_says_so_and_refuses_training_faces(model, synthetic_data, tmp_path, fer):
    """A model scored on a re-prepared file whose val holds its training faces: warned, then refused."""
    from fercli.data.prep import prepare

    d = PreparedData.open(synthetic_data)
    tr = d.indices("train")
    other = tmp_path / "other.safetensors"
    # The same faces re-encoded (as the image release and the CSV differ), the training faces now in val.
    jittered = np.clip(d.images[tr[:300]].astype(int) + np.random.default_rng(0).integers(-3, 4, (300, 48, 48)), 0, 255)
    src = write_csv(tmp_path / "val.csv", "emotion,pixels", [f"{lab},{pixels_text(i.astype(np.uint8))}" for i, lab in
                    zip(jittered, d.labels[tr[:300]])])  # fmt: skip
    fresh, flabels = faces(50, seed=99)
    src_train = write_csv(tmp_path / "train.csv", "emotion,pixels",
                          [f"{lab},{pixels_text(i)}" for i, lab in zip(fresh, flabels)])  # fmt: skip
    prepare([str(src_train), str(src)], str(other))
    r = fer("eval", model, "--data", other, "--split", "val")
    assert r.code == 2, r.err
    assert "is not the data file this model was trained on" in r.err
    assert "300 of 300 faces of the val split were training faces of this model" in r.err and "--force" in r.err
    r = fer("eval", model, "--data", other, "--split", "val", "--force", "--json")
    assert r.code == 0 and json.loads(r.out)["n"] == 300 and "were training faces" in r.err
    # Unseen faces in another file's val: only the note that the file differs.
    fresh_val = write_csv(tmp_path / "fresh_val.csv", "emotion,pixels",
                          [f"{lab},{pixels_text(i)}" for i, lab in zip(fresh, flabels)])  # fmt: skip
    prepare([str(src_train), str(fresh_val)], str(tmp_path / "fresh.safetensors"))
    r = fer("eval", model, "--data", tmp_path / "fresh.safetensors", "--split", "val")
    assert r.code == 0 and "is not the data file" in r.err and "training faces" not in r.err


def test_metrics_match_a_hand_computed_confusion_matrix():
    from fercli.infer.evaluate import confusion, metrics_from_confusion

    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    cm = confusion(y_true, y_pred, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    m = metrics_from_confusion(cm, ("a", "b", "c"))
    # a: precision 2/2, recall 2/3; b: 1/2, 1/2; c: 1/2, 1/1
    f1 = [2 * (1 * 2 / 3) / (1 + 2 / 3), 0.5, 2 * 0.5 / 1.5]
    assert m["accuracy"] == pytest.approx(4 / 6) and m["n"] == 6
    assert [m["per_class"][c]["f1"] for c in "abc"] == pytest.approx(f1)
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert m["per_class"]["a"]["recall"] == pytest.approx(2 / 3) and m["per_class"]["c"]["precision"] == 0.5


def test_inference_runs_without_tf32_after_training_switched_it_on_and_restores_it(tiny_model):
    """Training turns on TF32 and cuDNN autotuning on CUDA; inference in the same process (fer demo, the
    benches) must still run in plain fp32 and leave the settings as it found them. The network records
    the settings it runs under, so the policy is tested on the CPU too. (torch 2.14 has the
    fp32_precision settings; setting the older allow_tf32 flags beside them is an error, so only the
    installed torch's path can run here.)"""
    from fercli import hardware

    assert hardware._tf32_switches()[0][2] == "fp32_precision"
    before = hardware._numerics()
    try:
        net, _ = load_model(tiny_model, "cpu")
        seen = []
        net.register_forward_hook(lambda *_: seen.append(hardware._numerics()))
        images, _ = faces(8)
        plain = predict_probs(net, images, 0.5, 0.25, torch.device("cpu"))
        hardware.tune_for_training(torch.device("cuda"))  # as training leaves it (touches no GPU)
        after_training = hardware._numerics()
        assert after_training == {"benchmark": True, "matmul": "tf32", "conv": "tf32"}
        again = predict_probs(net, images, 0.5, 0.25, torch.device("cpu"))
        assert torch.equal(plain, again) and len(seen) == 2
        assert all(s == {"benchmark": False, "matmul": "ieee", "conv": "ieee"} for s in seen)
        assert hardware._numerics() == after_training  # restored
    finally:
        hardware._restore(before)


def test_a_ferplus_model_warns_of_its_codes_and_maps_onto_fer2013s_for_a_submission(fer, tmp_path, synthetic_data):
    """`fer predict builtin test.csv > submission.csv` wrote FER+ codes where a FER2013 submission expects
    FER2013's: said on stderr, and --classes fer2013 writes FER2013's codes with contempt folded in."""
    from fercli.data import crowd

    images, _ = faces(12)
    src = write_csv(tmp_path / "test.csv", "pixels", [pixels_text(i) for i in images])
    own = fer("predict", "builtin", src, "--probs")
    assert own.code == 0 and "predicts FER+'s 8 classes" in own.err and "--classes fer2013" in own.err
    mapped = fer("predict", "builtin", src, "--probs", "--classes", "fer2013")
    assert mapped.code == 0 and "predicts FER+'s" not in mapped.err
    head, *rows = [line.split(",") for line in mapped.out.splitlines()]
    assert head == ["id", "emotion", *(f"p_{c}" for c in CLASSES)]
    ferplus = np.array([[float(x) for x in r[2:]] for r in own.out.splitlines()[1:] for r in [r.split(",")]])
    fer2013 = np.array([[float(x) for x in r[2:]] for r in rows])
    assert np.allclose(fer2013.sum(1), 1, atol=1e-4)
    for c, name in enumerate(CLASSES):  # each FER2013 class takes its own emotion's probability
        expect = ferplus[:, crowd.VOTE_OF_FER2013[c]] + (ferplus[:, 7] if name == crowd.CONTEMPT_INTO else 0)
        assert np.allclose(fer2013[:, c], expect, atol=2e-5), name
    assert [int(r[1]) for r in rows] == fer2013.argmax(1).tolist()
    names = fer("predict", "builtin", src, "--names")
    assert names.code == 0 and "predicts FER+'s" not in names.err  # names say which classes they are
    # eval scores the mapped probabilities against FER2013's labels
    m = json.loads(fer("eval", "builtin", "--data", synthetic_data, "--split", "test", "--classes", "fer2013",
                       "--json").out)  # fmt: skip
    assert m["labels"] == "fer2013" and m["classes"] == list(CLASSES) and m["n"] == 140
    bad = fer("predict", "builtin", src, "--classes", "ferplus")
    assert bad.code == 2 and "--classes must be one of model, fer2013" in bad.err
