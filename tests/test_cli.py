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


def test_help_shows_no_python_types_and_flags_take_no_value():
    for cmd in ("eval", "predict", "train"):
        r = fer_subprocess(cmd, "--help", env={"COLUMNS": "120"})
        text = r.stdout.decode()
        assert r.returncode == 0 and "<bool>" not in text and "<list" not in text and "{" not in text, text
    text = fer_subprocess("predict", "--help", env={"COLUMNS": "120"}).stdout.decode()
    assert "Usage: fer predict [OPTIONS] MODEL INPUTS..." in text and "71.97" not in text


def test_shell_completion_offers_option_values():
    env = {"_FER_COMPLETE": "complete_bash", "COMP_WORDS": "fer eval --split t", "COMP_CWORD": "3"}
    assert fer_subprocess(env=env).stdout.decode().split() == ["train", "test"]
    env = {"_FER_COMPLETE": "complete_bash", "COMP_WORDS": "fer train --arch vgg4", "COMP_CWORD": "3"}
    assert {"vgg4", "vgg4s"} <= set(fer_subprocess(env=env).stdout.decode().split())


def test_thread_policy_precedence(monkeypatch):
    import os
    import sys

    import torch

    from fercli.engine import threads
    from fercli.errors import FerError

    before = torch.get_num_threads()
    try:
        for k in ("FER_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS"):
            monkeypatch.delenv(k, raising=False)
        monkeypatch.setattr(threads, "usable_cpus", lambda: 3)
        monkeypatch.setattr(threads, "others_running", lambda: True)
        threads.configure()  # torch already loaded: its OpenMP has read the policy, so no sampling
        assert "OMP_WAIT_POLICY" not in os.environ
        assert torch.get_num_threads() == 3  # but the thread count is applied at once
        monkeypatch.delitem(sys.modules, "torch")  # as before torch is imported
        monkeypatch.setattr(threads, "others_running", lambda: False)
        assert threads.configure() == 3 and "OMP_WAIT_POLICY" not in os.environ  # idle: OpenMP's default
        monkeypatch.setattr(threads, "others_running", lambda: True)
        monkeypatch.setattr(threads, "load_sustained", lambda: False)
        assert threads.configure() == 3 and "OMP_WAIT_POLICY" not in os.environ  # busy only just now: spin
        monkeypatch.setattr(threads, "load_sustained", lambda: True)
        assert threads.configure() == 3 and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"  # busy a while: sleep
        monkeypatch.delenv("OMP_WAIT_POLICY")
        monkeypatch.setattr(threads, "others_running", lambda: False)
        assert threads.configure() == 3 and "OMP_WAIT_POLICY" not in os.environ  # loaded earlier, idle now
        monkeypatch.setattr(threads, "others_running", lambda: True)
        threads.configure()
        monkeypatch.setitem(sys.modules, "torch", torch)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert threads.configure() == 2  # the user's OpenMP setting is kept
        monkeypatch.setenv("FER_THREADS", "1")
        assert threads.configure() == 1 and threads.configure(4) == 4  # --threads beats FER_THREADS
        monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
        threads.configure()
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
        monkeypatch.setenv("FER_THREADS", "many")
        try:
            threads.configure()
            raise AssertionError("FER_THREADS=many accepted")
        except FerError as e:
            assert e.code == 2 and "FER_THREADS must be a whole number" in str(e)
    finally:
        torch.set_num_threads(before)


def test_usable_cpus_honours_a_cgroup_quota(monkeypatch):
    from fercli.engine import threads

    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 1.5)
    assert threads.usable_cpus() == 1
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert threads.usable_cpus() == 4


def test_threads_option_anywhere_and_validated(tmp_path):
    out = tmp_path / "d.safetensors"
    r = fer_subprocess("prep", "--synthetic", "70", "-o", out, "--threads", "1")
    assert r.returncode == 0, r.stderr
    r = fer_subprocess("prep", "--synthetic", "70", "-o", out, "--threads", "0")
    assert r.returncode == 2 and b"--threads must be at least 1" in r.stderr


def test_fer_data_names_the_folder_of_the_real_data(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).parent
    code = f"import sys; sys.path.insert(0, {str(tests)!r}); import conftest; print(conftest.SHARED)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**__import__("os").environ, "FER_DATA": str(tmp_path)})  # fmt: skip
    assert r.stdout.strip() == str(tmp_path), r.stderr


def test_a_lasting_job_is_told_from_one_that_just_began_or_sleeps(monkeypatch):
    """What makes fer's threads sleep (with others runnable): a process that has kept half a core busy
    for LASTING_S seconds (1 s here), not a sleeping one, nor one younger than that."""
    import os
    import subprocess
    import time

    from fercli.engine import threads

    monkeypatch.setattr(threads, "LASTING_S", 1.0)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    real_listdir = os.listdir
    try:
        only = lambda pid: (lambda path: [str(pid)] if path == "/proc" else real_listdir(path))  # noqa: E731
        monkeypatch.setattr(os, "listdir", only(busy.pid))
        assert not threads.load_sustained()  # just began
        time.sleep(1.5)
        assert threads.load_sustained()  # busy for over a second
        monkeypatch.setattr(os, "listdir", only(idle.pid))
        assert not threads.load_sustained()  # as old, but asleep
    finally:
        busy.kill()
        idle.kill()
        busy.wait()
        idle.wait()
