"""The bad-input suite: random, truncated and mutated CSV, gzip, zip, image and safetensors files fed
to `fer prep`, `fer predict`, `fer train --resume` and checkpoint loading (hypothesis).

Every case must end in a correct result or one clean error: `fer` exits 0 with a whole output, or
with its error code, exactly one `error:` line and no output file; never a traceback (any exception
other than FerError escaping), a hang (a 30 s alarm per case) or a temporary left behind. Where the
right answer is known the result is checked against it: the numpy CSV path against the per-row one,
prep's faces against the reader's.

Cases are derandomized so CI runs the same ones every time; HYPOTHESIS_PROFILE=explore draws new ones,
five times as many. The number of cases run is printed at the end of the pytest run.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fercli.errors import FerError

from conftest import counted_case, faces, interrupted_run, pixels_text, read_all_faces, untrained_checkpoint
from conftest import fer_in_process as fer

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("explore", parent=settings.get_profile("ci"), derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
SCALE = 5 if os.environ.get("HYPOTHESIS_PROFILE") == "explore" else 1
HANG_S = 30

# ---- the harness -----------------------------------------------------------------------------------


def case(kind: str):
    return counted_case(kind, HANG_S)


def clean_outcome(code: int, err: str, output: Path) -> bool:
    """Whole output and exit 0, or one error line, an error code and no output; never a temporary.
    Returns whether the command succeeded."""
    assert "Traceback" not in err
    assert not [p.name for p in output.parent.iterdir() if p.name.endswith(".tmp")]
    if code == 0:
        assert output.exists()
        return True
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert code in (1, 2, 3, 4), (code, err)
    assert not output.exists()
    return False


# ---- what gets mutated -------------------------------------------------------------------------------

NASTY = [b",", b"\n", b"\r", b'"', b" ", b"\t", b"0", b"9", b"256", b"-1", b"1.5", b"\x00", b"\xff", b"\xef\xbb\xbf"]


@st.composite
def mutated(draw, data: bytes, hot: int | None = None) -> bytes:
    """1-4 edits: a byte replaced, bytes inserted, a range deleted, or the tail cut off. `hot` biases
    positions into the first `hot` bytes (a safetensors header), where one byte matters most."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        end = len(out) if hot is None or draw(st.booleans()) else min(hot, len(out))
        pos = draw(st.integers(0, max(0, end - 1)))
        kind = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        piece = draw(st.sampled_from(NASTY) | st.binary(min_size=1, max_size=6))
        if kind == "replace":
            out[pos : pos + len(piece)] = piece
        elif kind == "insert":
            out[pos:pos] = piece
        elif kind == "delete":
            del out[pos : pos + draw(st.integers(1, 64))]
        else:
            del out[pos:]
    return bytes(out)


def _png(img: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    """The good files every mutation starts from, and a small model to predict with."""
    from fercli.classes import CLASSES
    from fercli.data.prep import prepare

    d = tmp_path_factory.mktemp("base")
    images, labels = faces(4)
    usage = ["Training", "Training", "PublicTest", "PrivateTest"]
    body = "emotion,pixels,Usage\n" + "".join(
        f"{lab},{pixels_text(img)},{u}\n" for img, lab, u in zip(images, labels, usage)
    )
    members = {f"{s}/{CLASSES[lab]}/{k}.png": _png(img) for k, (img, lab, s) in
               enumerate(zip(images, labels, ["train", "train", "val", "test"]))}  # fmt: skip
    members["test/happy/4.jpg"] = _png(images[0], "JPEG")
    (d / "faces.csv").write_text(body)
    prepare([str(d / "faces.csv")], str(d / "prepared.safetensors"), val_frac=0)

    untrained_checkpoint(d / "model.safetensors")

    # A last.safetensors with resume state: a tiny run stopped after two steps.
    prepare([], str(d / "toy.safetensors"), synthetic=140, seed=0)
    run = interrupted_run(d / "toy.safetensors", d / "runs", 2, arch="vgg4s", width=0.125, epochs=2, batch=16)
    return {
        "dir": d,
        "csv": body.encode(),
        "members": members,
        "prepared": (d / "prepared.safetensors").read_bytes(),
        "model": d / "model.safetensors",
        "last": (run / "last.safetensors").read_bytes(),
    }


def predictions_are_sound(out: Path, rows: int, what: str = "") -> None:
    """A successful predict: a row per face, a class 0..6 and probabilities that are numbers summing to 1."""
    lines = out.read_text().splitlines()
    assert len(lines) == rows + 1
    for line in lines[1:]:
        cells = line.split(",")
        p = np.array(cells[-7:], dtype=float)
        assert cells[-8] in {str(c) for c in range(7)}
        assert np.isfinite(p).all() and abs(p.sum() - 1) < 1e-3, f"{what}: {line}"


def _header_len(raw: bytes) -> int:
    return 8 + int.from_bytes(raw[:8], "little")


# ---- prep: CSV, gzip, random bytes, zip and images ---------------------------------------------------


@settings(max_examples=200 * SCALE)
@given(st.data())
def test_mutated_csv(base, data):
    raw = data.draw(mutated(base["csv"]))
    block = data.draw(st.sampled_from([4096, 9000, 1 << 20]))
    skip = data.draw(st.booleans())
    with case("csv") as d:
        src = d / "faces.csv"
        src.write_bytes(raw)
        fast = read_all_faces(src, block, skip, python_only=False)
        assert fast == read_all_faces(src, block, skip, python_only=True)
        out = d / "out.safetensors"
        code, err, stdout = fer("prep", src, "-o", out, "--val-frac", "0", *(["--skip-bad"] if skip else []))
        assert stdout == ""
        if clean_outcome(code, err, out):
            from fercli.data.prepared import PreparedData

            assert PreparedData.open(out).images.tobytes() == read_all_faces(src, 1 << 20, skip, False)[1]
        elif fast[0] == "error":
            assert fast[1] in err  # the reader's own message, file and line


@settings(max_examples=60 * SCALE)
@given(st.data())
def test_mutated_or_truncated_gzip(base, data):
    packed = gzip.compress(base["csv"])
    raw = data.draw(mutated(packed) | st.integers(0, len(packed) - 1).map(lambda n: packed[:n]))
    with case("gzip") as d:
        src = d / "faces.csv.gz"
        src.write_bytes(raw)
        out = d / "out.safetensors"
        code, err, _ = fer("prep", src, "-o", out, "--val-frac", "0")
        if clean_outcome(code, err, out):
            assert gzip.decompress(raw).count(b"\n") >= 2  # it did hold whole rows


@settings(max_examples=60 * SCALE)
@given(st.binary(max_size=3000), st.sampled_from([".csv", ".zip", ".png", ".jpg", ".safetensors"]))
def test_random_bytes_to_prep_and_predict(base, raw, suffix):
    with case("random-bytes") as d:
        src = d / f"input{suffix}"
        src.write_bytes(raw)
        clean_outcome(*fer("prep", src, "-o", d / "out.safetensors")[:2], d / "out.safetensors")
        clean_outcome(*fer("predict", base["model"], src, "-o", d / "p.csv")[:2], d / "p.csv")


@settings(max_examples=80 * SCALE)
@given(st.data())
def test_mutated_zip_and_images(base, data):
    members = dict(base["members"])
    target = data.draw(st.sampled_from(["zip", "member"]))
    if target == "member":
        name = data.draw(st.sampled_from(sorted(members)))
        members[name] = data.draw(mutated(members[name], hot=64))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, raw in members.items():
            z.writestr(name, raw)
    raw = buf.getvalue() if target == "member" else data.draw(mutated(buf.getvalue()))
    skip = data.draw(st.booleans())
    with case("zip-image") as d:
        src = d / "faces.zip"
        src.write_bytes(raw)
        out = d / "out.safetensors"
        code, err, _ = fer("prep", src, "-o", out, *(["--skip-bad"] if skip else []))
        if clean_outcome(code, err, out):
            from fercli.data.prepared import PreparedData

            assert 1 <= len(PreparedData.open(out)) <= len(members)
        elif target == "member" and not skip and "cannot decode image" in err:
            assert "member" in err  # names the zip member


# ---- safetensors: prepared data, checkpoints, their metadata, resume state --------------------------


@settings(max_examples=60 * SCALE)
@given(st.data())
def test_mutated_prepared_file(base, data):
    raw = data.draw(mutated(base["prepared"], hot=_header_len(base["prepared"])))
    with case("prepared") as d:
        src = d / "data.safetensors"
        src.write_bytes(raw)
        out = d / "p.csv"
        code, err, _ = fer("predict", base["model"], src, "--probs", "-o", out)
        if clean_outcome(code, err, out):
            from fercli.data.prepared import PreparedData

            predictions_are_sound(out, len(PreparedData.open(src)))


@settings(max_examples=80 * SCALE)
@given(st.data())
def test_mutated_checkpoint(base, data):
    good = base["model"].read_bytes()
    raw = data.draw(mutated(good, hot=_header_len(good)))
    with case("checkpoint") as d:
        model = d / "model.safetensors"
        model.write_bytes(raw)
        out = d / "p.csv"
        code, err, _ = fer("predict", model, base["dir"] / "faces.csv", "--probs", "-o", out)
        if clean_outcome(code, err, out):
            predictions_are_sound(out, 4)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
# Values at the edges of what a field accepts, where validation is most likely to be wrong.
EDGE_LIST = [0, -1, 1, 0.0, -0.0, 1e-300, 1e308, -1e308, float("nan"), float("inf"), 2**63, "", "vgg4", [], [0], {},
             None, True]  # fmt: skip
EDGE = st.sampled_from(EDGE_LIST)


def _key_paths(meta: dict, leaves_only: bool = False, prefix: tuple = ()) -> list[tuple]:
    """Every key path in the metadata (or only those to non-dict values), so that a mutation can reach
    any field at any depth."""
    paths = []
    for k, v in meta.items():
        nested = isinstance(v, dict) and v
        if not (leaves_only and nested):
            paths.append((*prefix, k))
        if nested:
            paths += _key_paths(v, leaves_only, (*prefix, k))
    return paths


DELETE = object()
EDGE_VALUES = [DELETE, *EDGE_LIST]


def _with(meta: dict, path: tuple, value: object) -> dict:
    """A copy of meta with the field at `path` set to value, or removed when value is DELETE."""
    meta = copy.deepcopy(meta)
    parent = meta
    for k in path[:-1]:
        parent = parent[k]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return meta


@st.composite
def mutated_meta(draw, meta: dict) -> dict:
    for _ in range(draw(st.integers(1, 3))):
        paths = _key_paths(meta)
        if not paths:
            break
        meta = _with(meta, draw(st.sampled_from(paths)), DELETE if draw(st.booleans()) else draw(EDGE | JSON))
    return meta


def _rewrite_meta(raw: bytes, dest: Path, meta: dict) -> None:
    """The same tensors with other fercli metadata (json.dumps writes NaN and Infinity as JSON5 does)."""
    from safetensors.torch import load, save_file

    save_file(load(raw), str(dest), metadata={"fercli-model": json.dumps(meta)})


def _meta_of(raw: bytes) -> dict:
    header = json.loads(raw[8 : _header_len(raw)])
    return json.loads(header["__metadata__"]["fercli-model"])


def predict_with_meta(base: dict, meta: dict, kind: str, what: str = "") -> None:
    """`fer predict` with the base checkpoint's tensors under `meta`: a clean outcome, sound predictions."""
    with case(kind) as d:
        model = d / "model.safetensors"
        _rewrite_meta(base["model"].read_bytes(), model, meta)
        out = d / "p.csv"
        code, err, _ = fer("predict", model, base["dir"] / "faces.csv", "--probs", "-o", out)
        if clean_outcome(code, err, out):
            predictions_are_sound(out, 4, what)


def resume_with_meta(base: dict, meta: dict, kind: str, what: str = "") -> int | None:
    """`fer train --resume` of the base last.safetensors under `meta`, stopped at its first step as by
    Ctrl-C when it starts at all: None (ran to its end) or the clean FerError's code."""
    from fercli.engine.recipe import Recipe
    from fercli.engine.train import RunSettings, train
    from fercli.errors import INTERRUPTED

    with case(kind) as d:
        run = d / "train" / "exp"
        run.mkdir(parents=True)
        _rewrite_meta(base["last"], run / "last.safetensors", meta)
        settings_ = RunSettings(data=str(base["dir"] / "toy.safetensors"), device="cpu", project=str(d),
                                progress=False, stop_at_step=0)  # fmt: skip
        code = None
        try:
            train(Recipe(), settings_, resume=str(run))
        except FerError as e:
            assert "\n" not in str(e) and str(e), what
            assert e.code in (1, 2, 3, 4, INTERRUPTED), (what, str(e))
            code = e.code
        assert not list(run.glob(".*.tmp"))
        return code


@settings(max_examples=80 * SCALE)
@given(st.data())
def test_checkpoint_metadata_of_any_shape(base, data):
    predict_with_meta(base, data.draw(mutated_meta(_meta_of(base["model"].read_bytes()))), "checkpoint-metadata")


@settings(max_examples=40 * SCALE)
@given(st.data())
def test_resume_state_of_any_shape(base, data):
    """`fer train --resume` over a last.safetensors whose metadata (recipe, resume state, data) is
    mutated: a clean error, or a run that carries on (here stopped at once, as by Ctrl-C)."""
    resume_with_meta(base, data.draw(mutated_meta(_meta_of(base["last"]))), "resume-state")


def test_every_checkpoint_field_at_every_edge_value(base):
    """Random mutation rarely lands an edge value on a given field, so sweep them all: each metadata
    field of a checkpoint, removed or set to each edge value, through `fer predict`."""
    meta = _meta_of(base["model"].read_bytes())
    for path in _key_paths(meta, leaves_only=True):
        for value in EDGE_VALUES:
            predict_with_meta(base, _with(meta, path, value), "checkpoint-fields", f"{'.'.join(path)} = {value!r}")


def test_every_resume_field_at_every_edge_value(base):
    """The same sweep over a last.safetensors' recipe, resume state and data reference, through
    `fer train --resume` (stopped at its first step, as by Ctrl-C, when it starts at all)."""
    from fercli.errors import INTERRUPTED

    meta = _meta_of(base["last"])
    paths = [p for p in _key_paths(meta, leaves_only=True) if p[0] in ("recipe", "resume", "data")]
    started = 0
    for path in paths:
        for value in EDGE_VALUES:
            code = resume_with_meta(base, _with(meta, path, value), "resume-fields", f"{'.'.join(path)} = {value!r}")
            started += code == INTERRUPTED
    assert started > 50  # many harmless edits (a seed, a patience, a history) reach training itself


# ---- decompression bombs and oversized inputs (fixed cases) ----------------------------------------


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height; its pixel data is a few bytes (the bomb's trick)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_and_oversized_member_are_refused(tmp_path):
    for side in (10_000, 100_000):  # over our limit; over PIL's own, which trips first
        bomb = tmp_path / f"bomb{side}.png"
        bomb.write_bytes(_png_declaring(side, side))
        code, err, _ = fer("prep", bomb, "-o", tmp_path / "out.safetensors")
        assert code == 1 and f"bomb{side}.png: image declares" in err and "refusing" in err
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("train/happy/huge.png", b"\0" * ((64 << 20) + 1))  # 64 MB of zeros: 64 kB zipped
    code, err, _ = fer("prep", big, "-o", tmp_path / "out.safetensors")
    assert code == 1 and "member train/happy/huge.png" in err and "larger than 64 MB" in err
    assert not (tmp_path / "out.safetensors").exists()
