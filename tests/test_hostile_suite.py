"""The hostile-input suite: zips, folders, file names, symlinks, FIFOs, checkpoint headers and metadata, and
output paths built to hurt (hypothesis), fed to `fer annotate`, `fer predict` and `fer prep`.

For every case, whatever the outcome:
  - the exit code is a documented one (0, 1, 2, 3, 4);
  - a failure is exactly one `error:` line on stderr, never a traceback or an internal error;
  - nothing outside the output folder changed: the case's whole tree (inputs, the victims that absolute
    member names point at, symlink targets) is snapshotted, contents hashed, before and after;
  - no temporary is left anywhere in it.

Derandomized like the bad-input suite (HYPOTHESIS_PROFILE=explore draws new cases, five times as many);
the case count is printed at the end of the run with the bad-input suite's.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import counted_case, faces, fer_in_process, pixels_text, untrained_checkpoint

settings.register_profile("hostile-ci", derandomize=True, database=None, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
settings.register_profile("hostile-explore", parent=settings.get_profile("hostile-ci"), derandomize=False)
EXPLORE = os.environ.get("HYPOTHESIS_PROFILE") == "explore"
PROFILE = settings.get_profile("hostile-explore" if EXPLORE else "hostile-ci")
SCALE = 5 if EXPLORE else 1
HANG_S = 30
DOCUMENTED = {0, 1, 2, 3, 4}

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX file system features"),
    pytest.mark.filterwarnings("ignore:Duplicate name"),  # zips with a member twice are among the cases
]


# ---- the harness -----------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root: (kind, content hash or link target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st_ = os.lstat(p)
            if stat.S_ISLNK(st_.st_mode):
                out[str(p)] = ("link", os.readlink(p))
            elif stat.S_ISREG(st_.st_mode):
                out[str(p)] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
            else:
                out[str(p)] = ("other", stat.S_IFMT(st_.st_mode))
    return out


def case(kind: str):
    return counted_case(f"hostile-{kind}", HANG_S)


def run_checked(root: Path, out: Path | tuple[Path, ...], *args: object) -> tuple[int, str, str]:
    """`fer ARGS`, then every rule of the suite: whatever existed under root is unchanged, and anything new
    lies inside `out` (the output folder or file; or several)."""
    outs = out if isinstance(out, tuple) else (out,)

    def inside(k: str) -> bool:
        return any(Path(k) == o or o in Path(k).parents for o in outs)

    before = {k: v for k, v in snapshot(root).items()}
    code, err, stdout = fer_in_process(*args)
    assert "Traceback" not in err and "internal error" not in err, err
    assert code in DOCUMENTED, (code, err)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == (0 if code == 0 else 1), err
    after = snapshot(root)
    assert {k: after.get(k) for k in before if not inside(k)} == {k: v for k, v in before.items() if not inside(k)}
    assert all(inside(k) for k in set(after) - set(before)), (args, err)
    leftovers = [str(p) for p in root.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]
    assert not leftovers, leftovers
    return code, err, stdout


# ---- what gets built -------------------------------------------------------------------------------------

FACE = faces(1)[0][0]


def _encoded(img: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    return buf.getvalue()


CONTENTS = {
    "png": _encoded(FACE),
    "jpeg": _encoded(FACE, "JPEG"),
    "png16": _encoded(FACE.astype(np.uint16) * 257),
    "empty": b"",
    "truncated": _encoded(FACE)[:60],
    "junk": bytes(range(256)) * 3,
}
# Member and file names that could reach outside -o, break a CSV or a terminal, or trip an encoder.
NAME_TEMPLATES = [
    "{victim}", "/{victim}", "//{victim}", "C:/victim.png", "C:\\victim.png", "a\\..\\..\\victim.png",
    "../victim.png", "../../victim.png", "ok/../../victim.png", "./a.png", "a//b.png", "sub/a.png",
    "\x1b[31mred\x1b[0m.png", "a,b.png", 'say "hi".png', "line\nbreak.png", "tab\tname.png", "\u00e9t\u00e9.png",
    "x" * 200 + ".png", ".hidden.png", "__MACOSX/a.png", "a.PNG", "noext", "a.png/", " spaced .png",
]  # fmt: skip
NAME_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/"), min_size=1,
                    max_size=12).map(lambda s: s + ".png")  # fmt: skip
BYTE_NAMES = [b"caf\xe9.png", b"\xff\xfe.png", b"ok.png", b"a,\"b\".png", b"\x1b]0;title\x07.png", b"x\ny.png"]


@st.composite
def member_names(draw, victim: str) -> str:
    if draw(st.integers(0, 3)) == 0:
        return draw(NAME_TEXT)
    return draw(st.sampled_from(NAME_TEMPLATES)).format(victim=victim)


def _victims(d: Path) -> Path:
    """A folder outside the inputs and the output, holding files a hostile name might aim at."""
    outside = d / "outside"
    outside.mkdir()
    (outside / "victim.png").write_bytes(b"precious")
    return outside / "victim.png"


def _zip(path: Path, members: list[tuple[str, bytes, bool]]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, data, encrypted in members:
            info = zipfile.ZipInfo(name)
            if encrypted:
                info.flag_bits |= 0x1  # marked encrypted: zipfile refuses to read it
            z.writestr(info, data)


# ---- cases ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return untrained_checkpoint(tmp_path_factory.mktemp("hostile") / "model.safetensors")


COMMANDS = ["annotate", "predict", "prep"]


@settings(PROFILE, max_examples=700 * SCALE)
@given(st.data())
def test_hostile_zips(model, data):
    with case("zip") as d:
        victim = _victims(d)
        n = data.draw(st.integers(1, 4))
        members = [(data.draw(member_names(str(victim))), CONTENTS[data.draw(st.sampled_from(list(CONTENTS)))],
                    data.draw(st.integers(0, 9)) == 0) for _ in range(n)]  # fmt: skip
        src = d / "in" / "photos.zip"
        src.parent.mkdir()
        with contextlib.suppress(ValueError):  # a name zipfile itself will not write
            _zip(src, members)
        if not src.exists():
            return
        command, skip = data.draw(st.sampled_from(COMMANDS)), data.draw(st.booleans())
        flags = ["--skip-bad"] if skip and command != "prep" else []
        out = d / "out"
        if command == "annotate":
            code, err, stdout = run_checked(d, out, "annotate", src, "-o", out, "-m", model, *flags)
        elif command == "predict":
            code, err, stdout = run_checked(d, out, "predict", model, src, "-o", out / "p.csv", *flags)
        else:
            code, err, stdout = run_checked(d, out, "prep", src, "-o", out / "d.safetensors")
        assert victim.read_bytes() == b"precious"
        if code == 0 and command == "annotate":  # every output lies inside out, under a clean relative name
            for p in out.rglob("*"):
                assert ".." not in p.relative_to(out).parts


@settings(PROFILE, max_examples=600 * SCALE)
@given(st.data())
def test_hostile_folders(model, data):
    with case("folder") as d:
        victim = _victims(d)
        folder = d / "in" / "photos"
        folder.mkdir(parents=True)
        for _ in range(data.draw(st.integers(1, 5))):
            name = os.fsdecode(data.draw(st.sampled_from(BYTE_NAMES) | NAME_TEXT.map(os.fsencode)))
            where = folder / data.draw(st.sampled_from(["", "sub"])) / name
            where.parent.mkdir(exist_ok=True)
            if where.exists() or where.is_symlink():
                continue
            kind = data.draw(st.sampled_from(["file", "file", "dangling", "link", "fifo", "dir"]))
            try:
                if kind == "file":
                    where.write_bytes(CONTENTS[data.draw(st.sampled_from(list(CONTENTS)))])
                elif kind == "dangling":
                    where.symlink_to(d / "nowhere.png")
                elif kind == "link":  # a file outside, read through a link: it must stay as it is
                    where.symlink_to(victim)
                elif kind == "fifo":
                    os.mkfifo(where)
                else:
                    where.mkdir()
            except OSError:  # a name this file system will not take
                continue
        command, skip = data.draw(st.sampled_from(COMMANDS)), data.draw(st.booleans())
        flags = ["--skip-bad"] if skip and command != "prep" else []
        out = d / "out"
        target = data.draw(st.sampled_from(["out", "out", "input", "input-sub"]))
        if command == "annotate":
            o = {"out": out, "input": folder, "input-sub": folder / "sub"}[target]
            # new files inside the input folder are allowed (they replace no input); the input folder is not
            run_checked(d, o, "annotate", folder, "-o", o, "-m", model, *flags)
        elif command == "predict":
            o = out / "p.csv" if target == "out" else next(iter(sorted(folder.rglob("*"))), out / "p.csv")
            run_checked(d, out, "predict", model, folder, "-o", o, *flags)
        else:
            run_checked(d, out, "prep", folder, "-o", out / "d.safetensors")
        assert victim.read_bytes() == b"precious"


def _split(raw: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _join(header: dict | bytes, data: bytes) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


JSON_ATOMS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.just([]), st.just({}), st.just("\x1b[2J"), st.just("neu,tral"), st.just('"q"'),
)  # fmt: skip


@st.composite
def hostile_json(draw) -> bytes:
    """Raw JSON text that stresses the parser: deep nesting, long numbers, or both."""
    kind = draw(st.sampled_from(["deep", "digits", "wide"]))
    if kind == "deep":
        depth = draw(st.sampled_from([63, 65, 1000, 100_000]))
        return b"[" * depth + b"]" * depth
    if kind == "digits":
        return b'{"a": ' + b"9" * draw(st.sampled_from([99, 101, 5000, 20_000])) + b"}"
    return json.dumps({str(i): i for i in range(draw(st.integers(0, 2000)))}).encode()


@settings(PROFILE, max_examples=900 * SCALE)
@given(st.data())
def test_hostile_checkpoints(model, data):
    header, tensors = _split(model.read_bytes())
    meta = json.loads(header["__metadata__"]["fercli-model"])
    where = data.draw(st.sampled_from(["header", "entry", "metadata", "meta-field", "raw-header", "raw-meta"]))
    names = [k for k in header if k != "__metadata__"]
    if where == "header":
        header[data.draw(st.sampled_from(names))] = data.draw(JSON_ATOMS)
    elif where == "entry":
        entry = header[data.draw(st.sampled_from(names))]
        field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        entry[field] = data.draw(JSON_ATOMS | st.lists(st.integers(-(2**65), 2**65), max_size=3)
                                 | st.just([2**32, 2**32]) | st.just(["U8"]))  # fmt: skip
    elif where == "metadata":
        header["__metadata__"] = data.draw(JSON_ATOMS | st.dictionaries(st.text(max_size=5), JSON_ATOMS, max_size=3))
    elif where == "meta-field":
        key = data.draw(st.sampled_from(["arch", "arch_args", "classes", "normalize", "image_size", "recipe"]))
        meta[key] = data.draw(JSON_ATOMS | st.dictionaries(st.sampled_from(["width", "dropout", "fc", "convs",
                                                                               "mean", "std", "tta"]),
                                                              JSON_ATOMS, max_size=3)
                              | st.lists(st.sampled_from(["angry", "a,b", '"', "\x1b[0m", "x" * 50, "ok"]),
                                         min_size=1, max_size=8))  # fmt: skip
        header["__metadata__"]["fercli-model"] = json.dumps(meta)
    elif where == "raw-meta":
        header["__metadata__"]["fercli-model"] = data.draw(hostile_json()).decode()
    raw = _join(data.draw(hostile_json()) if where == "raw-header" else header, tensors)
    with case("checkpoint") as d:
        ck = d / "in" / "ck.safetensors"
        ck.parent.mkdir()
        ck.write_bytes(raw)
        src = d / "in" / "x.csv"
        src.write_text("pixels\n" + pixels_text(FACE) + "\n")
        out = d / "out"
        code, _, _ = run_checked(d, out, "predict", ck, src, "--probs", "--names", "-o", out / "p.csv")
        if code == 0:  # whatever loaded gives whole, parseable rows
            import csv

            rows = list(csv.reader((out / "p.csv").read_text().splitlines()))
            assert len(rows) == 2 and len(rows[0]) == len(rows[1])


@settings(PROFILE, max_examples=200 * SCALE)
@given(st.data())
def test_hostile_output_paths(model, data):
    with case("output") as d:
        inputs = d / "in"
        inputs.mkdir()
        src = inputs / "x.csv"
        src.write_text("pixels\n" + pixels_text(FACE) + "\n")
        (inputs / "link.csv").symlink_to(src)
        os.link(src, inputs / "hard.csv")
        out = d / "out"
        out.mkdir()
        (out / "dir.csv").mkdir()
        (out / "file").write_text("a file, not a folder")
        target = data.draw(st.sampled_from([src, inputs / "link.csv", inputs / "hard.csv", out / "dir.csv",
                                            out / "file" / "p.csv", inputs / "model.safetensors",
                                            out / "ok.csv"]))  # fmt: skip
        command = data.draw(st.sampled_from(["predict", "prep", "annotate-csv"]))
        model = Path(shutil.copy(model, inputs / "model.safetensors"))
        if command == "predict":
            code, _, _ = run_checked(d, out, "predict", model, src, "-o", target)
        elif command == "prep":
            code, _, _ = run_checked(d, out, "prep", src, "-o", target)
        else:
            png = inputs / "face.png"
            png.write_bytes(CONTENTS["png"])
            csv_out = png if target == out / "ok.csv" else target
            code, _, _ = run_checked(d, (out, csv_out), "annotate", png, "-o", out / "ann", "-m", model,
                                     "--csv", csv_out)  # fmt: skip
        csv_inputs = [src, inputs / "link.csv", inputs / "hard.csv"]
        given = {"predict": [*csv_inputs, model], "prep": csv_inputs, "annotate-csv": [out / "ok.csv", model]}
        if target in given[command]:
            assert code == 2  # an input is never an output
            assert src.read_text() == "pixels\n" + pixels_text(FACE) + "\n"
            assert command != "annotate-csv" or (inputs / "face.png").read_bytes() == CONTENTS["png"]
        if target == model:  # prep does not take it as input, but never replaces what is not a data file
            assert code == 2
