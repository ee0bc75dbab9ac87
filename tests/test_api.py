"""The Python API on its own (no CLI): fercli.load and the FerModel it gives, prepare and train, and the
ONNX export, checked against what `fer predict` writes."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import fercli
from fercli.classes import CLASSES
from fercli.data.crowd import FERPLUS_CLASSES
from fercli.errors import USAGE, FerError
from fercli.files.checkpoint import model_tta, read_meta

from conftest import faces, pixels_text, write_csv


def _csv_probs(text: str) -> tuple[list[str], np.ndarray]:
    rows = list(csv.reader(io.StringIO(text)))
    cols = [i for i, c in enumerate(rows[0]) if c.startswith("p_")]
    return rows[0], np.array([[float(r[i]) for i in cols] for r in rows[1:]])


def test_import_fercli_stays_light():
    probe = ("import sys, fercli; assert callable(fercli.load) and callable(fercli.train); "
             "assert 'torch' not in sys.modules and 'numpy' not in sys.modules")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", probe]).returncode == 0


def test_predict_takes_arrays_and_images_and_matches_fer_predict(tiny_model, tmp_path, fer):
    model = fercli.load(tiny_model, device="cpu")
    assert model.classes == CLASSES and model.path == tiny_model and isinstance(model, fercli.FerModel)
    images, _ = faces(5)
    p = model.predict(images)
    assert p.shape == (5, 7) and p.dtype == np.float32 and np.allclose(p.sum(1), 1, atol=1e-5)
    # one face [48,48], and [N,1,48,48]; a batch of one may round differently in the last bit (oneDNN)
    np.testing.assert_allclose(model.predict(images[2]), p[2:3], atol=1e-6)
    np.testing.assert_allclose(model.predict(images[:, None]), p, atol=1e-6)
    as_pil = model.predict([Image.fromarray(i) for i in images])  # 48x48 images: read as they are
    np.testing.assert_allclose(as_pil, p, atol=1e-6)
    src = write_csv(tmp_path / "x.csv", "pixels", [pixels_text(i) for i in images])
    r = fer("predict", tiny_model, src, "--probs")
    assert r.code == 0, r.err
    np.testing.assert_allclose(_csv_probs(r.out)[1], p, atol=2e-6)  # the CSV's 6 decimals
    for bad, word in ((images.astype(np.float32), "uint8"), (images[:, :40], "shape")):
        with pytest.raises(FerError) as e:
            model.predict(bad)
        assert e.value.code == USAGE and word in str(e.value)


def test_a_ferplus_model_folds_onto_fer2013_in_python_as_on_the_command_line(fer, tmp_path):
    model = fercli.load("builtin", "cpu")
    assert model.classes == FERPLUS_CLASSES
    images, _ = faces(6)
    p8, p7 = model.predict(images), model.predict(images, classes="fer2013")
    assert p7.shape == (6, 7)
    np.testing.assert_allclose(p7[:, CLASSES.index("angry")], p8[:, [4, 7]].sum(1), atol=1e-6)  # anger + contempt
    np.testing.assert_allclose(p7[:, CLASSES.index("happy")], p8[:, 1], atol=1e-6)
    src = write_csv(tmp_path / "x.csv", "pixels", [pixels_text(i) for i in images])
    r = fer("predict", "builtin", src, "--probs", "--classes", "fer2013")
    assert r.code == 0 and "FER+" not in r.err
    header, got = _csv_probs(r.out)
    assert header[2:] == [f"p_{c}" for c in CLASSES]
    np.testing.assert_allclose(got, p7, atol=2e-6)


@pytest.fixture(scope="module")
def astronaut_png(tmp_path_factory):
    skdata = pytest.importorskip("skimage.data")
    pytest.importorskip("cv2")
    path = tmp_path_factory.mktemp("api") / "astronaut.png"  # lossless: the file and the array hold one image
    Image.fromarray(skdata.astronaut()).save(path)
    return path


def test_faces_of_a_file_a_pil_image_and_rgb_or_bgr_frames_agree_with_fer_predict(astronaut_png, fer):
    model = fercli.load("builtin", "cpu")
    rgb = np.asarray(Image.open(astronaut_png).convert("RGB"))
    from_file = model.faces(astronaut_png)
    assert len(from_file) == 1 and from_file[0].face == "0"
    f = from_file[0]
    assert 150 < f.box.x < 230 and 40 < f.box.y < 110 and 80 < f.box.w < 160  # her face, not the flag
    assert f.emotion == max(f.probs, key=f.probs.get) and abs(sum(f.probs.values()) - 1) < 1e-5
    for other in (model.faces(rgb), model.faces(Image.open(astronaut_png)),
                  model.faces(np.ascontiguousarray(rgb[..., ::-1]), channels="bgr")):  # fmt: skip
        assert [(g.box, g.emotion) for g in other] == [(f.box, f.emotion)]
        np.testing.assert_allclose(other[0].vector(), f.vector(), atol=1e-6)
    from fercli.infer.model import gray_image

    bgr = np.ascontiguousarray(rgb[..., ::-1])
    np.testing.assert_array_equal(gray_image(bgr, "bgr"), gray_image(rgb))
    assert np.abs(gray_image(bgr).astype(int) - gray_image(rgb)).mean() > 5  # BGR taken for RGB: other grays
    r = fer("predict", "builtin", astronaut_png, "--probs")
    header, got = _csv_probs(r.out)
    row = next(csv.reader(io.StringIO(r.out.splitlines()[1])))
    assert [int(v) for v in row[2:6]] == [f.box.x, f.box.y, f.box.w, f.box.h]
    np.testing.assert_allclose(got[0], f.vector(), atol=2e-6)
    whole = model.faces(rgb, faces="whole")
    assert whole[0].face == "whole" and whole[0].box.w == rgb.shape[1]
    with pytest.raises(FerError) as e:
        model.faces(rgb.astype(np.float32))
    assert e.value.code == USAGE and "uint8" in str(e.value)
    with pytest.raises(FerError):
        model.faces(rgb, channels="hsv")


def test_video_gives_each_searched_frame_its_faces(astronaut_png, tmp_path):
    cv2 = pytest.importorskip("cv2")
    model = fercli.load("builtin", "cpu")
    rgb = np.asarray(Image.open(astronaut_png).convert("RGB"))
    blank = np.full_like(rgb, 128)
    frames = [rgb, blank, rgb, blank, blank]
    got = list(model.video(frames, every=2))
    assert [g.frame for g in got] == [0, 2, 4] and [len(g.faces) for g in got] == [1, 1, 0]
    assert got[0].time_s is None and got[0].faces[0].box == model.faces(rgb, faces="detect")[0].box
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (rgb.shape[1], rgb.shape[0]))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    from_file = list(model.video(path))
    assert [len(g.faces) for g in from_file] == [1, 0, 1, 0, 0]
    assert from_file[2].time_s == pytest.approx(0.2)
    assert abs(from_file[0].faces[0].box.x - got[0].faces[0].box.x) <= 4  # the same face through MJPEG


def test_prepare_and_train_are_the_commands_core(tmp_path):
    data = tmp_path / "toy.safetensors"
    meta = fercli.prepare(synthetic=420, out=data, seed=3)
    assert data.exists() and sum(meta["counts"]["train"].values()) > 250
    run = fercli.train(data, arch="vgg4s", width=0.125, epochs=1, batch=64, project=tmp_path / "runs", progress=False)
    assert (run / "best.safetensors").exists() and json.loads((run / "args.json").read_text())["recipe"]["epochs"] == 1
    assert fercli.load(run, "cpu").predict(faces(3)[0]).shape == (3, 7)
    with pytest.raises(FerError) as e:
        fercli.train(data, epochs=1, time="1m")
    assert e.value.code == USAGE and "--time or --epochs" in str(e.value)
    with pytest.raises(FerError) as e:
        fercli.train(data, epoch=1)
    assert "unknown recipe option epoch" in str(e.value)


@pytest.mark.parametrize("tta", [[], ["--tta-crops"]])
def test_export_round_trips_through_onnxruntime(tiny_model, tmp_path, fer, tta):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    out = tmp_path / "m.onnx"
    r = fer("export", tiny_model, "-o", out, *tta)
    assert r.code == 0 and r.out == "", r.err
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["classes"]) == list(CLASSES) and "uint8" in props["input"]
    assert json.loads(props["tta"]) == ("crops" if tta else model_tta(read_meta(tiny_model), None))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    images, _ = faces(9)
    src = write_csv(tmp_path / "x.csv", "pixels", [pixels_text(i) for i in images])
    want = _csv_probs(fer("predict", tiny_model, src, "--probs", *tta).out)[1]
    for lo, hi in ((0, 1), (1, 9)):  # batch sizes 1 and 8 through one graph
        got = session.run(["probs"], {"faces": images[lo:hi]})[0]
        np.testing.assert_allclose(got, want[lo:hi], atol=1e-4)
    r = fer("export", tiny_model, "-o", tmp_path / "m.txt")
    assert r.code == 2 and "m.txt" in r.err and not (tmp_path / "m.txt").exists()


def test_export_says_how_to_install_the_extra(tiny_model, tmp_path, fer, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # `import onnxscript` raises ImportError
    r = fer("export", tiny_model, "-o", tmp_path / "m.onnx")
    assert r.code == 2 and 'pip install "fercli[onnx]"' in r.err and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()
