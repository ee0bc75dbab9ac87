"""Files a hostile or careless user hands fer: each finding of the hostile-input review, one test each.

Nothing a file can do may hurt the user: no write outside `-o`, no input overwritten, no traceback, bounded
memory, clean signals. The property-based suite over the same ground is tests/test_hostile_suite.py.
"""

from __future__ import annotations

import base64
import csv
import gzip
import io
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import faces, fer_in_process, fer_subprocess, pixels_text, write_csv


def png(img: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and "internal error" not in err, err
    assert len([line for line in lines if line.startswith("error:")]) == 1, err
    return next(line for line in lines if line.startswith("error:"))


def no_temporaries(root: Path) -> None:
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name], list(root.rglob("*"))


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return faces(1)[0][0]


# ---- 1. nothing written outside -o --------------------------------------------------------------------


MEMBERS = {  # how a member name could reach outside -o; {v} is the victim's absolute path
    "absolute": "{v}", "double slash": "/{v}", "drive letter": "C:/x/victim.jpg",
    "backslash parents": "a\\..\\..\\victim.jpg", "dot dot": "../victim.jpg", "inner dot dot": "ok/../../victim.jpg",
}  # fmt: skip


@pytest.mark.parametrize("kind", list(MEMBERS))
def test_zip_members_never_write_outside_the_output_folder(tiny_model, face, tmp_path, kind):
    victim = tmp_path / "victim.jpg"
    victim.write_bytes(b"precious")
    zpath = tmp_path / "photos.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("good.png", png(face))
        z.writestr(zipfile.ZipInfo(MEMBERS[kind].format(v=victim)), png(face))
    out = tmp_path / "out"
    code, err, _ = fer_in_process("annotate", zpath, "-o", out, "-m", tiny_model)
    line = one_error(err)
    assert code == 1 and "photos.zip member" in line and "refusing" in line, err
    assert victim.read_bytes() == b"precious" and not out.exists()
    code, err, stdout = fer_in_process("annotate", zpath, "-o", out, "-m", tiny_model, "--skip-bad")
    assert code == 0 and "skipped" in err and victim.read_bytes() == b"precious", err
    assert [p.relative_to(out).as_posix() for p in out.rglob("*")] == ["good.png"]
    assert len(stdout.splitlines()) == 2  # the header and good.png's row


def test_a_symlink_in_the_output_folder_cannot_lead_outside(tiny_model, face, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(outside)
    zpath = tmp_path / "p.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("sub/a.png", png(face))
    code, err, _ = fer_in_process("annotate", zpath, "-o", out, "-m", tiny_model)
    assert code == 2 and "outside" in one_error(err)
    assert list(outside.iterdir()) == []


def test_two_members_with_one_output_path_are_refused_before_any_write(tiny_model, face, tmp_path):
    zpath = tmp_path / "d.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("a/b.png", png(face))
        z.writestr("a/./b.png", png(np.flipud(face).copy()))
    code, err, _ = fer_in_process("annotate", zpath, "-o", tmp_path / "out", "-m", tiny_model)
    assert code == 2 and "would be written twice" in one_error(err) and not (tmp_path / "out").exists()


# ---- 2. inputs and special files never destroyed -------------------------------------------------------


def test_predict_refuses_to_write_over_its_input(tiny_model, face, tmp_path):
    src = write_csv(tmp_path / "same.csv", "pixels", [pixels_text(face)])
    before = src.read_bytes()
    for out in (src, tmp_path / "link.csv"):
        if out.name == "link.csv":
            out.symlink_to(src)
        code, err, stdout = fer_in_process("predict", tiny_model, src, "-o", out)
        assert code == 2 and "one of the inputs" in one_error(err) and stdout == ""
        assert src.read_bytes() == before
    code, err, _ = fer_in_process("predict", tiny_model, src, "-o", tiny_model)
    assert code == 2 and "one of the inputs" in err


def test_annotate_refuses_the_input_folder_and_any_input_file(tiny_model, face, tmp_path):
    photos = tmp_path / "photos"
    (photos / "x").mkdir(parents=True)
    for rel in ("a.png", "x/a.png"):
        (photos / rel).write_bytes(png(face))
    before = {p: p.read_bytes() for p in photos.rglob("*.png")}
    for out in (photos, photos / "x"):  # the folder itself; a folder where a.png would land on x/a.png
        code, err, _ = fer_in_process("annotate", photos, "-o", out, "-m", tiny_model)
        assert code == 2 and ("input folder" in err or "one of the inputs" in err), err
        assert {p: p.read_bytes() for p in photos.rglob("*.png")} == before
    assert sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*")) == ["a.png", "x", "x/a.png"]


def test_annotate_refuses_to_write_a_video_over_itself(tiny_model, tmp_path, monkeypatch):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not really a video")
    monkeypatch.chdir(tmp_path)
    code, err, stdout = fer_in_process("annotate", "clip.mp4", "-o", ".", "-m", tiny_model)
    assert code == 2 and "one of the inputs" in one_error(err) and stdout == ""
    assert clip.read_bytes() == b"not really a video"


def test_an_output_onto_a_fifo_is_written_into_never_replaced(tiny_model, face, tmp_path):
    src = write_csv(tmp_path / "x.csv", "pixels", [pixels_text(face)] * 3)
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    code, err, _ = fer_in_process("predict", tiny_model, src, "-o", fifo)
    reader.join(30)
    assert code == 0, err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still the FIFO
    assert got and got[0].decode().splitlines()[0] == "id,emotion" and len(got[0].decode().splitlines()) == 4


# ---- 3. no traceback -----------------------------------------------------------------------------------


def test_a_dangling_symlink_or_a_fifo_in_a_folder_is_named_or_skipped(tiny_model, face, tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "a.png").write_bytes(png(face))
    (d / "b.png").symlink_to(tmp_path / "gone.png")
    os.mkfifo(d / "c.png")  # reading it would block forever
    out = tmp_path / "o.csv"
    code, err, _ = fer_in_process("predict", tiny_model, d, "-o", out)
    assert code == 1 and "b.png: cannot read (a dangling symbolic link)" in one_error(err) and not out.exists()
    (d / "b.png").unlink()
    code, err, _ = fer_in_process("predict", tiny_model, d, "-o", out)
    assert code == 1 and "c.png: not a regular file" in one_error(err)
    (d / "b.png").symlink_to(tmp_path / "gone.png")
    code, err, _ = fer_in_process("predict", tiny_model, d, "-o", out, "--skip-bad")
    assert code == 0, err
    assert [r[0] for r in csv.reader(out.read_text().splitlines()[1:])] == [str(d / "a.png")]


def test_an_unreadable_file_is_an_error_or_skipped(tiny_model, face, tmp_path, monkeypatch):
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "a.png").write_bytes(png(face))
    (d / "b.png").write_bytes(png(face))
    real_open = os.open

    def denied(path, flags, *a, **k):  # as root chmod 000 is no barrier: refuse the way the kernel would
        if str(path).endswith("b.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", denied)
    code, err, _ = fer_in_process("predict", tiny_model, d)
    assert code == 1 and "b.png: cannot read (permission denied)" in one_error(err)
    code, err, stdout = fer_in_process("predict", tiny_model, d, "--skip-bad")
    assert code == 0 and len(stdout.splitlines()) == 2


def _zip_with_patched_member(path: Path, data: bytes, flag: int = 0, method: int | None = None) -> None:
    """A stored member whose flag bits (1: encrypted) or compression method are patched in both headers."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("face.png", data)
    raw = bytearray(path.read_bytes())
    local = raw.index(b"PK\x03\x04")
    central = raw.index(b"PK\x01\x02")
    for at, flag_at, method_at in ((local, 6, 8), (central, 8, 10)):
        raw[at + flag_at : at + flag_at + 2] = struct.pack("<H", flag)
        if method is not None:
            raw[at + method_at : at + method_at + 2] = struct.pack("<H", method)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("kind", ["encrypted", "method"])
def test_encrypted_or_unsupported_zip_members_are_one_line_errors(tiny_model, face, tmp_path, kind):
    z = tmp_path / "faces.zip"
    encrypted = kind == "encrypted"
    _zip_with_patched_member(z, png(face), flag=1 if encrypted else 0, method=None if encrypted else 99)
    want = "encrypted zip member" if kind == "encrypted" else "compression method not supported"
    code, err, _ = fer_in_process("predict", tiny_model, z)
    assert code == 1 and "member face.png" in one_error(err) and want in err
    code, err, _ = fer_in_process("prep", z, "-o", tmp_path / "d.safetensors")
    assert code == 1 and want in one_error(err) and not (tmp_path / "d.safetensors").exists()


def safetensors_bytes(header: dict | bytes, data: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def checkpoint_with(tiny_model: Path, meta_change=None, header_change=None) -> bytes:
    """The tiny model's bytes with its header or metadata edited."""
    raw = tiny_model.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header, data = json.loads(raw[8 : 8 + n]), raw[8 + n :]
    if meta_change is not None:
        meta = json.loads(header["__metadata__"]["fercli-model"])
        out = meta_change(meta)
        header["__metadata__"]["fercli-model"] = out if isinstance(out, str) else json.dumps(meta)
    if header_change is not None:
        header_change(header)
    return safetensors_bytes(header, data)


DEEP = "[" * 100_000 + "]" * 100_000
CASES = {
    "nested header": lambda m: safetensors_bytes(DEEP.encode()),
    "long integer in header": lambda m: safetensors_bytes(
        ('{"x": {"dtype": "U8", "shape": [' + "9" * 5000 + '], "data_offsets": [0, 0]}}').encode()
    ),
    "nested metadata": lambda m: checkpoint_with(m, meta_change=lambda meta: DEEP),
    "long integer in metadata": lambda m: checkpoint_with(m, meta_change=lambda meta: '{"a": ' + "7" * 5000 + "}"),
    "unhashable dtype": lambda m: checkpoint_with(
        m, header_change=lambda h: next(v for k, v in h.items() if k != "__metadata__").update(dtype=[])
    ),
    "arch_args torch refuses": lambda m: checkpoint_with(
        m, meta_change=lambda meta: meta.update(arch="vgg", arch_args={"width": 0.25, "dropout": 2})
    ),
    "class name with a comma": lambda m: checkpoint_with(
        m, meta_change=lambda meta: meta.update(classes=["neu,tral", *meta["classes"][1:]])
    ),
    "shape product past 2**64": lambda m: safetensors_bytes(
        {"x": {"dtype": "U8", "shape": [2**32, 2**32], "data_offsets": [0, 0]}}
    ),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_hostile_checkpoints_are_one_line_errors(tiny_model, face, tmp_path, kind):
    ck = tmp_path / "ck.safetensors"
    ck.write_bytes(CASES[kind](tiny_model))
    src = write_csv(tmp_path / "x.csv", "pixels", [pixels_text(face)])
    code, err, stdout = fer_in_process("predict", ck, src, "--probs", "--names")
    assert code == 1 and "ck.safetensors" in one_error(err) and stdout == "", (kind, err)


@pytest.mark.parametrize("where", ["file", "stdout"])
def test_non_utf8_file_names_are_written_as_escapes(tiny_model, face, tmp_path, where):
    d = tmp_path / "imgs"
    d.mkdir()
    name = os.fsdecode(b"caf\xe9,1.png")  # Latin-1 bytes: not UTF-8, and a comma
    (d / name).write_bytes(png(face))
    out = tmp_path / "o.csv"
    args = ["predict", tiny_model, d, "--device", "cpu"] + (["-o", out] if where == "file" else [])
    r = fer_subprocess(*args, env={"PYTHONIOENCODING": "utf-8:strict"})
    assert r.returncode == 0, r.stderr.decode()
    text = (out.read_bytes() if where == "file" else r.stdout).decode("utf-8")  # valid UTF-8
    (row,) = list(csv.reader(text.splitlines()[1:]))
    assert row[0].endswith("caf\\xe9,1.png") and len(row) == 7  # id,face,x,y,w,h,emotion


# ---- 4. images decoded right -----------------------------------------------------------------------


def test_16_bit_palette_cmyk_alpha_and_rotated_images_keep_their_contrast(face):
    from fercli.data.imagefaces import decode_face

    want = decode_face(png(face), "8-bit").astype(int)
    variants = {
        "16-bit": png((face.astype(np.uint16) * 257), format="PNG"),
        "palette": _saved(Image.fromarray(face).convert("P")),
        "cmyk": _saved(Image.fromarray(face).convert("CMYK"), "JPEG", quality=100),
        "alpha": _saved(Image.fromarray(np.dstack([face, np.full_like(face, 255)]), "LA")),
        "rgba": _saved(Image.fromarray(face).convert("RGBA")),
    }
    for what, data in variants.items():
        got = decode_face(data, what).astype(int)
        tolerance = 6 if what == "cmyk" else 1  # a JPEG's loss
        assert np.abs(got - want).mean() <= tolerance, (what, np.abs(got - want).mean())
    # half transparent: laid on white, not on black
    clear = _saved(Image.fromarray(np.dstack([face, np.zeros_like(face)]), "LA"))
    assert decode_face(clear, "clear").min() == 255
    # EXIF orientation 6 (rotate 90 clockwise to view): turned upright before anything else
    img = Image.fromarray(np.rot90(face, 1).copy())
    exif = img.getexif()
    exif[0x0112] = 6
    rotated = _saved(img, "JPEG", quality=100, exif=exif.tobytes())
    assert np.abs(decode_face(rotated, "exif").astype(int) - want).mean() < 6


def _saved(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_empty_and_unknown_images_say_what_is_read(tiny_model, tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    code, err, _ = fer_in_process("predict", tiny_model, tmp_path / "empty.jpg")
    line = one_error(err)
    assert code == 1 and "empty.jpg: cannot decode image (empty file; fer reads JPEG, PNG" in line and "0x" not in line
    heic = tmp_path / "photo.heic"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(300))
    code, err, _ = fer_in_process("predict", tiny_model, heic)
    line = one_error(err)
    assert code == 1 and "not a CSV file: it looks like an ISO media file (HEIC" in line and len(line) < 300


# ---- 5. signals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_remove_temporaries_and_exit_130(tiny_model, tmp_path, sig):
    out = tmp_path / "out.csv"
    proc = subprocess.Popen([sys.executable, "-m", "fercli", "predict", str(tiny_model), "-", "-o", str(out)],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.csv.*")) and time.monotonic() < deadline:  # the temporary is open
        time.sleep(0.05)
    assert list(tmp_path.glob(".out.csv.*")), "predict never started its output"
    time.sleep(0.2)  # now blocked on stdin
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.decode().strip().endswith("interrupted"), err
    assert list(tmp_path.iterdir()) == []


def test_a_closed_pipe_ends_a_video_quietly_with_141_and_no_temporary(tiny_model, tmp_path):
    cv2 = pytest.importorskip("cv2")
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 96))
    for i in range(600):  # long enough that the job is still writing rows when the reader goes
        writer.write(np.full((96, 96, 3), i % 255, dtype=np.uint8))
    writer.release()
    out = tmp_path / "out"
    # --faces whole is a photos option; on a video every searched frame still gives a row only per face,
    # so make every frame print: a detector that finds one box everywhere.
    code = (
        "import sys; from fercli.photos import detect; from fercli.photos.detect import Box;"
        "detect.FaceDetector.__call__ = lambda self, gray: [Box(0, 0, 48, 48)];"
        "sys.argv = ['fer', *sys.argv[1:]]; from fercli.cli import main; main()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, "annotate", str(clip), "-o", str(out), "-m", str(tiny_model),
                             "--probs"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    proc.stdout.readline()
    proc.stdout.close()  # `| head -1`
    err = proc.stderr.read().decode()
    proc.wait(60)
    assert proc.returncode == 141 and "Traceback" not in err and "error" not in err, err
    assert not out.exists() or list(out.iterdir()) == []


def test_ctrl_c_is_said_in_predict(tiny_model, face, tmp_path, monkeypatch):
    from fercli.infer.model import FerModel

    src = write_csv(tmp_path / "x.csv", "pixels", [pixels_text(face)])

    def interrupted(*a, **k):  # Ctrl-C while the model runs
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(FerModel, "probs", interrupted)
    code, err, _ = fer_in_process("predict", tiny_model, src)
    assert code == 130 and err.strip() == "interrupted"


# ---- 6. bounded memory -----------------------------------------------------------------------------------


def _peak_rss_mb(*args: object) -> tuple[int, float]:
    """(exit code, peak RSS in MB) of `fer ARGS` in a child of a child (RUSAGE_CHILDREN is per process)."""
    probe = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True);"
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "fercli", *map(str, args)],
                         capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    return int(out[0]), int(out[1]) / 1024


def test_a_gzip_without_newlines_is_refused_within_bounded_memory(tiny_model, face, tmp_path):
    good = write_csv(tmp_path / "good.csv", "pixels", [pixels_text(face)] * 50)
    bomb = tmp_path / "bomb.csv.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        for _ in range(300):
            f.write(b"1" * (1 << 20))  # 300 MB of one line, about 300 kB of gzip
    code_ok, normal = _peak_rss_mb("predict", tiny_model, good, "--device", "cpu")
    code, peak = _peak_rss_mb("predict", tiny_model, bomb, "--device", "cpu")
    assert code_ok == 0 and code == 1
    assert peak < normal + 100, (normal, peak)


def test_a_checkpoint_full_of_thumbnails_is_capped_and_compared_in_bounded_memory(tiny_model, tmp_path):
    from fercli.data.prep import prepare
    from fercli.files.checkpoint import MAX_TRAIN_FACES, TRAIN_FACES

    data = tmp_path / "d.safetensors"
    prepare([], str(data), synthetic=400, seed=3)
    raw = tiny_model.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["fercli-model"])
    meta["data"] = {"hash": "0" * 16, "path": "elsewhere"}
    header["__metadata__"]["fercli-model"] = json.dumps(meta)
    rng = np.random.default_rng(0)
    for count, name in ((MAX_TRAIN_FACES, "full"), (MAX_TRAIN_FACES + 1, "over")):
        thumbs = rng.integers(0, 256, (count, 64), dtype=np.uint8)
        header["__metadata__"][TRAIN_FACES] = base64.b64encode(zlib.compress(thumbs.tobytes(), 1)).decode()
        (tmp_path / f"{name}.safetensors").write_bytes(safetensors_bytes(header, raw[8 + n :]))
    code_ok, normal = _peak_rss_mb("eval", tiny_model, "--data", data, "--device", "cpu")
    code, peak = _peak_rss_mb("eval", tmp_path / "full.safetensors", "--data", data, "--device", "cpu")
    assert code_ok == 0 and code == 0
    assert peak < normal + 100, (normal, peak)
    code, err, _ = fer_in_process("eval", tmp_path / "over.safetensors", "--data", data)
    assert code == 1 and f"over {MAX_TRAIN_FACES:,} faces" in one_error(err)


# ---- 7. CSV and terminal integrity -------------------------------------------------------------------


def test_ids_with_commas_quotes_and_newlines_round_trip_through_a_csv_reader(tiny_model, face, tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    names = ['a,b.png', 'say "hi".png', "two\nlines.png"]
    for n in names:
        (d / n).write_bytes(png(face))
    code, err, stdout = fer_in_process("predict", tiny_model, d, "--probs", "--names", "--faces", "whole")
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(stdout)))
    assert rows[0][:2] == ["id", "emotion"] and len(rows[0]) == 9
    assert sorted(Path(r[0]).name for r in rows[1:]) == sorted(names)
    assert all(len(r) == 9 for r in rows)


def test_names_from_data_reach_the_terminal_escaped(tiny_model, tmp_path):
    pytest.importorskip("cv2")
    name = "\x1b[31mred\x1b[0m.png"
    (tmp_path / name).write_bytes(png(np.full((100, 200), 128, dtype=np.uint8)))  # a photo without faces
    code, err, _ = fer_in_process("predict", tiny_model, tmp_path / name, "--faces", "detect")
    assert code == 0 and "\x1b" not in err and "\\x1b[31mred" in err


# ---- 8 and 9. the split a file name gives, and the smaller mends ----------------------------------------


@pytest.mark.parametrize("name,split", [("latest.csv", "train"), ("evaluation.csv", "train"),
                                        ("fer2013_test.csv", "test"), ("my-val.csv", "val"),
                                        ("PublicTest.csv.gz", "test"), ("contest.csv", "train")])  # fmt: skip
def test_prep_takes_a_split_from_whole_words_of_a_file_name(face, tmp_path, name, split):
    from fercli.data.prep import prepare

    src = write_csv(tmp_path / name, "emotion,pixels", [f"3,{pixels_text(face)}"] * 4, gz=name.endswith(".gz"))
    meta = prepare([str(src)], str(tmp_path / "d.safetensors"), val_frac=0)
    assert list(meta["counts"]) == [split], meta["counts"]


def test_smaller_mends(tiny_model, face, tmp_path, monkeypatch):
    # FER_THREADS names itself
    monkeypatch.setenv("FER_THREADS", "0")
    code, err, _ = fer_in_process("predict", tiny_model, tmp_path / "x.csv")
    assert code == 2 and "FER_THREADS must be at least 1" in one_error(err)
    monkeypatch.delenv("FER_THREADS")
    # a figure is PNG: another suffix is refused before any work
    code, err, _ = fer_in_process("ascent", "-m", tiny_model, "-o", tmp_path / "fig.jpg", "--steps", "1")
    assert code == 2 and "fig.jpg: figures are written as PNG" in one_error(err)
    assert not (tmp_path / "fig.jpg").exists()
    # --class-vis keeps an explicit --filters
    code, err, _ = fer_in_process("ascent", "-m", tiny_model, "-o", tmp_path / "c.png", "--steps", "1",
                                  "--class-vis", "--filters", "0:2")  # fmt: skip
    assert code == 0, err
    code, err, _ = fer_in_process("ascent", "-m", tiny_model, "-o", tmp_path / "c.png", "--steps", "1",
                                  "--class-vis", "--filters", "0:16")  # fmt: skip
    assert code == 2 and "--filters 0:16" in one_error(err)  # 7 classes: said, not silently replaced by 0:7
    # annotate writes no CSV header before failing on a bad video
    (tmp_path / "bad.mp4").write_bytes(b"junk")
    code, err, stdout = fer_in_process("annotate", tmp_path / "bad.mp4", "-o", tmp_path / "o", "-m", tiny_model)
    assert code == 1 and stdout == "" and one_error(err)
    # a video given to predict says where videos go
    code, err, _ = fer_in_process("predict", tiny_model, tmp_path / "bad.mp4")
    assert code == 2 and "fer annotate" in one_error(err)


def test_the_help_shows_bracketed_words(fer):
    r = fer("annotate", "--help")
    assert "fercli[faces]" in " ".join(r.out.split())


def test_patience_given_on_resume_is_used(synthetic_data, tmp_path):
    from fercli.engine.recipe import build_recipe
    from fercli.engine.train import RunSettings, train
    from fercli.files.checkpoint import read_meta

    from conftest import interrupted_run

    run = interrupted_run(synthetic_data, tmp_path / "runs", 2, arch="vgg4s", width=0.125, epochs=1, batch=64)
    assert read_meta(run / "last.safetensors")["resume"]["patience"] == 0
    settings = RunSettings(device="cpu", project=str(tmp_path / "runs"), progress=False, patience=3)
    train(build_recipe("default", {}), settings, resume=str(run))
    assert read_meta(run / "last.safetensors")["resume"]["patience"] == 3


def test_matplotlib_is_quiet_under_a_read_only_home(tiny_model, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR")}
    # As root no folder is read-only: make HOME unwritable the way matplotlib checks it (os.access).
    code = (
        "import os, runpy, sys; real = os.access;"
        f"os.access = lambda p, m, **k: False if str(p).startswith({str(home)!r}) else real(p, m, **k);"
        f"sys.argv = ['fer', 'ascent', '-m', {str(tiny_model)!r}, '-o', 'a.png', '--steps', '1'];"
        "runpy.run_module('fercli', run_name='__main__')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, env={**env, "HOME": str(home)}, cwd=tmp_path)
    err = r.stderr.decode()
    assert r.returncode == 0 and "atplotlib" not in err, err
    assert (tmp_path / "a.png").exists()
