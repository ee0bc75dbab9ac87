"""The README's measured figures stay true to the evidence: each is dated, and each figure appears, at the
README's precision, in a dated section of docs/ that names the row's command (docs/recipes.md is the log
of training runs and benchmarks; faces and the built-in model keep theirs in faces.md and builtin-model.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
# A figure: a decimal number, or a whole number followed by %; not the far end of a range ("1.37-1.86").
FIGURE = re.compile(r"(?<![\w.\-])(\d[\d,]*\.\d+|\d[\d,]*(?=%))")


def _measured_rows() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    table = text.split("\n## Measured\n", 1)[1].lstrip("\n").split("\n\n")[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.splitlines()]
    assert rows[0] == ["what", "figure", "hardware", "command"], rows[0]
    return rows[2:]


def _sections() -> list[str]:
    """Every docs/*.md cut at its headings, with the heading's own text."""
    out = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        out += re.split(r"\n(?=#)", page.read_text())
    return out


def _program(command: str) -> str:
    """What a section must name to be about a row's command: the bench script, else the fer command."""
    script = re.search(r"bench/\w+\.py", command)
    return script.group(0) if script else re.search(r"fer \w+", command).group(0)


def _values(text: str) -> list[float]:
    return [float(t.replace(",", "")) for t in FIGURE.findall(text)]


def _evidenced(figure: str, sections: list[str]) -> bool:
    places = len(figure.split(".")[1]) if "." in figure else 0
    value = float(figure.replace(",", ""))
    return any(round(v, places) == value for s in sections for v in _values(s))


ROWS = _measured_rows()


@pytest.mark.parametrize("row", ROWS, ids=[r[0][:40] for r in ROWS])
def test_every_readme_figure_is_dated_and_found_in_the_docs_evidence(row):
    what, figure, hardware, command = row
    assert DATE.search(hardware), f"README row {what!r}: no date in its hardware column"
    program = _program(command)
    evidence = [s for s in _sections() if DATE.search(s) and program in s]
    assert evidence, f"README row {what!r}: no dated section of docs/ names {program}"
    missing = [f for f in FIGURE.findall(figure) if not _evidenced(f, evidence)]
    assert not missing, f"README row {what!r}: {missing} not in a dated docs/ section naming {program}"


def test_the_check_catches_a_stale_figure():
    sections = ["## The cpu recipe by budget\n2026-11-28: `python bench/accuracy.py --time 5m`: 57.17%"]
    assert _evidenced("57.2", sections) and not _evidenced("61.6", sections)
    assert FIGURE.findall("5 min 57.2%, 1.37-1.86 s, 3 epochs, 90%") == ["57.2", "1.37", "90"]


def test_the_python_pages_examples_run(tmp_path, monkeypatch, capsys):
    """docs/python.md's ```python blocks, in order and in one namespace, in a folder holding photo.jpg."""
    skdata = pytest.importorskip("skimage.data")
    for module in ("cv2", "onnxruntime", "onnxscript"):
        pytest.importorskip(module)
    from PIL import Image

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "python.md").read_text(), re.S)
    assert len(blocks) >= 8
    Image.fromarray(skdata.astronaut()).save(tmp_path / "photo.jpg", quality=95)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/python.md block {i + 1}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "('neutral', 'happiness'," in out and "2 faces must be uint8 pixels (0-255), got float32" in out
    assert (tmp_path / "builtin.onnx").exists() and (tmp_path / "runs" / "train" / "exp" / "best.safetensors").exists()
