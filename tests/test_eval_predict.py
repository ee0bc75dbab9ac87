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

from fercli.checkpoint import load_model, save_checkpoint
from fercli.classes import CLASSES
from fercli.inference import predict_probs
from fercli.predict import predict_stream
from fercli.prepared import PreparedData
from fercli.recipe import build_recipe
from fercli.train import RunSettings, train

from conftest import faces, fer_subprocess, pixels_text, write_csv


@pytest.fixture(scope="session")
def model(synthetic_data, tmp_path_factory):
    project = tmp_path_factory.mktemp("runs")
    r = build_recipe("default", dict(arch="vgg4s", width=0.125, epochs=1, batch=32, lr=0.05))
    out = train(r, RunSettings(data=str(synthetic_data), device="cpu", project=str(project), progress=False))
    return f"{out['run_dir']}/best.safetensors"


def _predict(model, inputs, **kw) -> list[list[str]]:
    buf = io.StringIO()
    predict_stream(model, [str(i) for i in inputs], buf, device="cpu", **kw)
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

    from fercli.checkpoint import read_meta

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
