"""`fer train`: the engine core (tested without the CLI), the run folder, resume, stop and the CLI views."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fercli import models
from fercli.engine.recipe import build_recipe, lr_at
from fercli.engine.train import RunSettings, train
from fercli.errors import INTERRUPTED, FerError
from fercli.files.checkpoint import load_model, read_meta

from conftest import fer_subprocess

TINY = dict(arch="vgg4s", width=0.125, epochs=3, batch=32, lr=0.05)


def _run(data, tmp_path, name="exp", resume=None, **kw):
    stop = kw.pop("stop_at_step", None)
    patience = kw.pop("patience", 0)
    r = build_recipe("default", {**TINY, **kw})
    s = RunSettings(data=str(data), device="cpu", project=str(tmp_path / "runs"), name=name, progress=False,
                    stop_at_step=stop, patience=patience)  # fmt: skip
    return train(r, s, resume=resume)


def test_run_folder_holds_everything_and_checkpoint_rebuilds_alone(synthetic_data, tmp_path):
    out = _run(synthetic_data, tmp_path, epochs=2)
    run = tmp_path / "runs" / "train" / "exp"
    assert out["run_dir"] == str(run)
    for f in ("best.safetensors", "last.safetensors", "metrics.csv", "curves.png", "args.json"):
        assert (run / f).stat().st_size > 0, f
    assert (run / "metrics.csv").read_text().splitlines()[0].startswith("epoch,loss,train_acc,valid_loss,valid_acc,lr")
    assert len((run / "metrics.csv").read_text().splitlines()) == 3
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The best checkpoint rebuilds with safetensors and the registry alone.
    meta = read_meta(run / "best.safetensors")
    net = models.create(meta["arch"], **meta["arch_args"])
    net.load_state_dict(load_file(run / "best.safetensors"))
    assert meta["normalize"]["std"] > 0 and meta["data"]["hash"] and meta["recipe"]["epochs"] == 2
    assert meta["metrics"]["epoch"] == out["best_epoch"]
    # A second run with the same name auto-increments.
    _run(synthetic_data, tmp_path, epochs=1)
    assert (tmp_path / "runs" / "train" / "exp2" / "best.safetensors").exists()


def test_same_seed_same_metrics_and_resume_equals_uninterrupted(synthetic_data, tmp_path):
    full = _run(synthetic_data, tmp_path, name="full")
    again = _run(synthetic_data, tmp_path, name="again")
    assert [h["valid_acc"] for h in full["history"]] == [h["valid_acc"] for h in again["history"]]
    assert [h["loss"] for h in full["history"]] == [h["loss"] for h in again["history"]]

    steps = full["steps_per_epoch"]
    with pytest.raises(FerError) as e:
        _run(synthetic_data, tmp_path, name="cut", stop_at_step=steps + 3)  # mid-epoch 2
    assert e.value.code == INTERRUPTED and "fer train --resume" in str(e.value)
    resumed = _run(synthetic_data, tmp_path, name="ignored", resume=str(tmp_path / "runs" / "train" / "cut"))
    assert resumed["run_dir"].endswith("cut")
    for a, b in zip(full["history"], resumed["history"], strict=True):
        assert a["valid_acc"] == b["valid_acc"] and a["train_acc"] == b["train_acc"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    w_full = load_file(tmp_path / "runs" / "train" / "full" / "last.safetensors")
    w_res = load_file(tmp_path / "runs" / "train" / "cut" / "last.safetensors")
    for k in ("features.0.0.weight", "head.1.weight"):
        torch.testing.assert_close(w_full[k], w_res[k], rtol=0, atol=0)


def test_early_stopping(synthetic_data, tmp_path):
    out = _run(synthetic_data, tmp_path, epochs=8, lr=1e-6, patience=1)  # too small an lr to keep improving
    assert out["stopped_early"] and out["epochs_run"] < 8


def test_small_net_learns_synthetic_faces_to_90_percent(trained_synthetic):
    out = trained_synthetic[3]  # vgg4s, 3 CPU epochs, 2,800 faces (conftest)
    assert out["epochs_run"] == 3
    assert out["best_valid_acc"] >= 0.90, out["history"]


def test_registry_lists_choices_and_rejects_unknown():
    assert {"vgg5", "vgg4", "vgg4s", "alexnet", "vgg", "resnet18"} <= set(models.names())
    with pytest.raises(FerError, match="unknown network 'nope' \\(choose from vgg5, "):
        models.create("nope")
    # vgg5 is the study's network: 5 stages of 3 x (Conv, ReLU, BN), MaxPool, Dropout(0.5).
    net = models.create("vgg5")
    stage = net.features[0]
    kinds = [type(m).__name__ for m in stage]
    assert kinds == ["Conv2d", "ReLU", "BatchNorm2d"] * 3 + ["MaxPool2d", "Dropout"]
    assert [s[0].out_channels for s in net.features] == [64, 128, 256, 512, 512]
    assert net(torch.zeros(2, 1, 48, 48)).shape == (2, 7)


@pytest.mark.parametrize("lr,warmup,total", [(0.1, 0.15, 1000), (0.05, 0.3, 77), (1.0, 0.0, 100)])
def test_onecycle_schedule_shape(lr, warmup, total):
    """Whatever the peak, warm-up share and length: it starts at a 25th of the peak, rises steadily to the
    peak at the end of the warm-up, then falls steadily to almost nothing at the last step."""
    r = build_recipe("default", {"lr": lr, "warmup": warmup})
    lrs = [lr_at(r, s, total) for s in range(total)]
    peak = lrs.index(max(lrs))
    assert peak == int(warmup * total) and max(lrs) == pytest.approx(lr, rel=1e-3)
    assert lrs[0] == pytest.approx(lr / 25 if warmup else lr, rel=1e-3)
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1 : peak + 1]))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1 :])) and lrs[-1] < 0.01 * lr


def test_cli_plain_lines_json_and_errors(synthetic_data, tmp_path):
    r = fer_subprocess("train", "--data", synthetic_data, "--arch", "vgg4s", "--width", "0.125", "--epochs", "2",
                       "--batch", "64", "--device", "cpu", "--project", tmp_path / "runs", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2] and {"loss", "train_acc", "valid_acc"} <= set(rows[0])
    err = r.stderr.decode()
    assert "epoch 1/2 loss" in err and "valid_acc" in err and "\x1b[" not in err  # plain, no escape codes
    r = fer_subprocess("train", "--data", synthetic_data, "--arch", "resnet99", "--project", tmp_path / "runs")
    assert r.returncode == 2 and b"unknown network 'resnet99' (choose from vgg5" in r.stderr
    assert b"Traceback" not in r.stderr and b"device:" not in r.stderr  # fails before any data or device
    r = fer_subprocess("train", "--data", tmp_path / "missing.safetensors", "--project", tmp_path / "runs")
    assert r.returncode == 3 and b"no such file" in r.stderr


def test_ctrl_c_saves_last_and_says_how_to_resume(synthetic_data, tmp_path):
    cmd = [sys.executable, "-m", "fercli", "train", "--data", str(synthetic_data), "--arch", "vgg4s", "--epochs", "50",
           "--batch", "16", "--device", "cpu", "--project", str(tmp_path / "runs"), "--save-every", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE)
    # `last` saved after step 2 means the loop runs, with its SIGINT handler installed: no race with it.
    deadline = time.time() + 120
    while not (tmp_path / "runs" / "train" / "exp" / "last.safetensors").exists() and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == INTERRUPTED, err
    assert b"Resume with: fer train --resume" in err and b"Traceback" not in err
    meta = read_meta(tmp_path / "runs" / "train" / "exp" / "last.safetensors")
    assert meta["resume"]["epoch"] >= 1
    model, _ = load_model(tmp_path / "runs" / "train" / "exp" / "last.safetensors")
    assert model(torch.zeros(1, 1, 48, 48)).shape == (1, 7)


def test_vgg5_line_users_type_runs_on_tiny_width(synthetic_data, tmp_path, fer):
    """`fer train --arch vgg5 --epochs 50`, shrunk to CPU size with --width and --epochs."""
    r = fer("train", "--data", synthetic_data, "--arch", "vgg5", "--width", "0.0625", "--epochs", "1",
            "--device", "cpu", "--project", tmp_path / "runs")  # fmt: skip
    assert r.code == 0, r.err
    meta = read_meta(tmp_path / "runs" / "train" / "exp" / "best.safetensors")
    assert meta["arch"] == "vgg5" and meta["arch_args"] == {"width": 0.0625}
    assert "using --arch" not in r.err and "device: cpu" in r.err


def test_vgg4c_shapes_parameters_and_a_training_step():
    net = models.create("vgg4c")
    assert [s[0].out_channels for s in net.features] == [16, 48, 128, 256]
    assert all(c % 16 == 0 for c in (16, 48, 128, 256))  # one AVX-512 register of fp32 per 16 channels
    n = sum(p.numel() for p in net.parameters())
    assert 1_700_000 < n < 1_900_000, n
    x, y = torch.randn(8, 1, 48, 48), torch.randint(0, 7, (8,))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = net.head[-1].weight.detach().clone()
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    opt.step()
    assert net(x).shape == (8, 7) and not torch.equal(before, net.head[-1].weight)


def test_models_width_option(fer):
    r = fer("models", "--width", "0.5", "--json")
    rows = {row["name"]: row for row in json.loads(r.out)}
    full = {row["name"]: row for row in json.loads(fer("models", "--json").out)}
    assert r.code == 0 and "resnet18" not in rows  # it takes no other width
    assert rows["vgg4"]["params"] < full["vgg4"]["params"] / 3
    assert fer("models", "--width", "0").code == 2


def test_no_device_sync_per_step_when_nothing_is_shown(synthetic_data, tmp_path, monkeypatch):
    """Progress numbers are read back (a CPU-GPU sync) only when the view shows them: with the view off,
    the running sums are drained once per epoch, not every few steps."""
    calls = {"n": 0}
    real_item = torch.Tensor.item

    def counting_item(self):
        calls["n"] += 1
        return real_item(self)

    monkeypatch.setattr(torch.Tensor, "item", counting_item)
    out = _run(synthetic_data, tmp_path, epochs=2)
    assert out["steps_per_epoch"] >= 30
    assert calls["n"] <= 2 * 2 + 2, calls  # two sums per epoch-end drain (and slack for set-up)


def test_recipe_says_where_its_network_comes_from(fer, synthetic_data, tmp_path):
    r = fer("train", "--data", synthetic_data, "--recipe", "cpu", "--epochs", "1", "--width", "0.125",
            "--device", "cpu", "--project", tmp_path / "runs")  # fmt: skip
    assert r.code == 0, r.err
    assert "using --arch vgg4s (from --recipe cpu)" in r.err and "(default)" not in r.err.split("run folder")[0]


def test_recipe_file_sets_fields_the_cli_has_no_option_for(tmp_path, fer, synthetic_data):
    from fercli.engine.recipe import PRESETS

    good = tmp_path / "light.json"
    good.write_text(json.dumps({"base": "cpu", "rotate": 5.0, "erase": 0.25}))
    r = build_recipe(str(good), {"lr": 0.02})
    assert (r.arch, r.rotate, r.erase, r.lr, r.time) == ("vgg4s", 5.0, 0.25, 0.02, PRESETS["cpu"].time)
    for text, code, message in [
        ('{"base": "gpu"}', 2, "unknown base 'gpu'"),
        ('{"rotat": 5}', 2, "unknown field 'rotat'"),
        ("[1, 2]", 2, "holds one JSON object"),
        ('{"rotate": "ten"}', 1, "recipe field 'rotate' has a value of the wrong type"),
        ('{"rotate": 500.0}', 1, "rotate must be in [0, 180] degrees"),
        ("{", 2, "not a JSON recipe file"),
    ]:
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(FerError) as e:
            build_recipe(str(bad), {})
        assert e.value.code == code and message in str(e.value), (text, str(e.value))
    shipped = sorted((Path(__file__).resolve().parents[1] / "bench" / "recipes").glob("*.json"))
    assert len(shipped) >= 4 and all(build_recipe(str(p), {}) for p in shipped)  # the bench's recipes load
    r2 = fer("train", "--data", synthetic_data, "--recipe", good, "--epochs", "1", "--width", "0.125",
             "--device", "cpu", "--project", tmp_path / "runs")  # fmt: skip
    assert r2.code == 0, r2.err
    assert read_meta(tmp_path / "runs" / "train" / "exp" / "best.safetensors")["recipe"]["rotate"] == 5.0
