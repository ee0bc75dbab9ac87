"""Console conventions shared by every command."""

from __future__ import annotations

import subprocess
import sys

from fercli import __version__

from conftest import fer_subprocess


def test_help_does_not_import_torch():
    probe = "import sys; from fercli import cli; assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", probe]).returncode == 0


def test_version_and_python_dash_m():
    r = fer_subprocess("--version")
    assert r.returncode == 0 and r.stdout.decode().strip() == f"fercli {__version__}"
    r = fer_subprocess("--help")
    assert r.returncode == 0 and b"prep" in r.stdout and b"saliency" in r.stdout


def test_quiet_anywhere_and_no_color(tmp_path):
    out = tmp_path / "d.safetensors"
    r = fer_subprocess("prep", "--synthetic", "70", "-o", out, "-q")
    assert r.returncode == 0 and r.stderr == b"" and r.stdout == b""
    r = fer_subprocess("prep", "--synthetic", "70", "-o", out, env={"NO_COLOR": "1"})
    assert r.returncode == 0 and b"\x1b[" not in r.stderr and b"train" in r.stderr


def test_usage_error_is_exit_2_without_traceback():
    r = fer_subprocess("prep", "--no-such-option")
    assert r.returncode == 2 and b"No such option" in r.stderr and b"Traceback" not in r.stderr
