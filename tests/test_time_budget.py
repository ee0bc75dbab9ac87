"""`fer train --time`: durations, the timing of the first steps, a budget that ends on time, and a resumed
budgeted run that keeps its schedule."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from fercli.engine.pace import Pace, parse_duration, steps_in_budget
from fercli.engine.recipe import build_recipe, lr_at
from fercli.engine.train import RunSettings, train
from fercli.errors import USAGE, FerError

TINY = dict(arch="vgg4s", width=0.125, batch=32, lr=0.05)


@pytest.mark.parametrize(
    "text,seconds", [("90s", 90), ("20m", 1200), ("1.5h", 5400), ("1h30m", 5400), ("600", 600), (" 2m ", 120)]
)
def test_durations_as_users_write_them(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "20x", "m20", "0s", "31d", "1h 30"])
def test_bad_durations_are_usage_errors(text):
    with pytest.raises(FerError) as e:
        parse_duration(text)
    assert e.value.code == USAGE and "--time" in str(e.value)


def test_pace_skips_warm_up_steps_and_needs_enough_timing():
    pace = Pace(first_step=100)
    # 3 warm-up steps at 1 s each (kernel set-up), then 0.125 s per step.
    t, step = 0.0, 100
    for _ in range(3):
        t, step = t + 1.0, step + 1
        assert not pace.observe(step, t)
    fired = None
    for _ in range(100):
        t, step = t + 0.125, step + 1
        if pace.observe(step, t):
            fired = step
            break
    assert fired == 103 + 24  # 3 s of timing at 0.125 s per step; the slow warm-up steps are not counted
    assert pace.seconds_per_step == pytest.approx(0.125)
    # torchrun: by step count alone, so every rank plans at the same step.
    ranks = Pace(first_step=0, steps_only=True)
    assert [ranks.observe(s, 0.01 * s) for s in range(1, 14)].index(True) == 12


def test_pace_waits_for_the_device_while_it_times_and_never_after():
    """On CUDA the clock must see the GPU's time, not how fast steps are queued: the device is synced
    at each timed step (not the warm-up ones), and not at all once the pace is known."""
    synced = []
    pace = Pace(first_step=0, steps_only=True, sync=lambda: synced.append(1))
    fired = [s for s in range(1, 40) if pace.observe(s, 0.01 * s)]
    assert fired == [13] and len(synced) == 13 - 2  # steps 3..13: the mark and every timed step


def test_steps_in_budget_pays_for_validation():
    # 100 s left, 0.1 s per step, 50 steps per epoch and 5 s of validation per epoch: 0.2 s per step all told.
    assert steps_in_budget(110.0, 10.0, 0, 0.1, 50, 5.0) == int(95 / 0.2)  # 475: the last epoch has 25 steps
    assert steps_in_budget(108.0, 10.0, 0, 0.1, 50, 5.0) == 450  # 465 would leave a last epoch of 15 steps
    assert steps_in_budget(10.0, 30.0, 7, 0.1, 50, 5.0) == 8  # over budget already: one more step


def test_time_and_epochs_together_is_a_usage_error(fer, synthetic_data, tmp_path):
    r = fer("train", "--data", synthetic_data, "--time", "1m", "--epochs", "3", "--project", tmp_path)
    assert r.code == 2 and "give --time or --epochs, not both" in r.err
    r = fer("train", "--data", synthetic_data, "--time", "soon", "--project", tmp_path)
    assert r.code == 2 and "--time 'soon' is not a duration" in r.err
    assert not (tmp_path / "train").exists()


def _timed(data: Path, project: Path, budget: float, name: str, **kw) -> dict:
    r = build_recipe("default", {**TINY, "time": budget})
    s = RunSettings(data=str(data), device="cpu", project=str(project), name=name, progress=False,
                    precision="fp32", **kw)  # fmt: skip
    return train(r, s)


STEP_S = 0.1  # what each training step costs on the test's clock


@pytest.fixture
def step_clock(monkeypatch):
    """The engine's clock made to advance STEP_S per training step and by nothing else, so a --time run's
    planning is tested without depending on how busy the machine is. Returns the clock (a dict)."""
    from types import SimpleNamespace

    from fercli.engine import budget as budget_module
    from fercli.engine import pace as pace_module
    from fercli.engine import train as engine

    clock = {"now": 1000.0, "steps": 0, "slow_steps": 0, "slow_s": STEP_S}
    fake = SimpleNamespace(perf_counter=lambda: clock["now"], time=time.time, strftime=time.strftime,
                           localtime=time.localtime)  # fmt: skip
    monkeypatch.setattr(engine, "time", fake)
    monkeypatch.setattr(pace_module, "time", fake)
    monkeypatch.setattr(budget_module, "time", fake)
    real_set_up = engine.set_up

    def set_up(*args, **kw):
        s, st, perm = real_set_up(*args, **kw)
        step = s.step_fn

        def timed_step(x):
            clock["steps"] += 1
            clock["now"] += clock["slow_s"] if clock["steps"] <= clock["slow_steps"] else STEP_S
            return step(x)

        s.step_fn = timed_step
        return s, st, perm

    monkeypatch.setattr(engine, "set_up", set_up)
    return clock


def test_time_budget_ends_on_time_with_the_schedule_complete(synthetic_data, tmp_path, step_clock):
    budget = 20.0
    start = step_clock["now"]
    out = _timed(synthetic_data, tmp_path, budget, "t")
    took = step_clock["now"] - start
    args = json.loads((Path(out["run_dir"]) / "args.json").read_text())
    total = args["total_steps"]
    # On time, and without leaving the budget unused: what is not spent on steps is the per-epoch
    # allowance for saving (EPOCH_OVERHEAD_S), which costs nothing on this clock.
    assert total * STEP_S == pytest.approx(took) and 0.7 * budget <= took <= budget, (took, total)
    assert args["recipe"]["time"] == budget
    assert sum(1 for _ in out["history"]) == -(-total // out["steps_per_epoch"])
    r = build_recipe("default", {**TINY, "time": budget})
    assert out["history"][-1]["lr"] == pytest.approx(lr_at(r, total - 1, total))  # decayed to its end
    assert out["history"][-1]["lr"] < 0.01 * r.lr


def test_a_slow_start_does_not_cost_the_run_its_budget(synthetic_data, tmp_path, step_clock):
    """The first 50 steps take 4x as long, as on a machine busy for the run's first seconds: the step
    count the first timed steps give is too small, and the re-plan at each epoch's end makes up for it."""
    budget = 30.0
    step_clock.update(slow_steps=50, slow_s=4 * STEP_S)
    start = step_clock["now"]
    out = _timed(synthetic_data, tmp_path, budget, "slow")
    took = step_clock["now"] - start
    first_plan = 30 / (4 * STEP_S)  # about what a count fixed from the slow steps allows (75 steps)
    total = json.loads((Path(out["run_dir"]) / "args.json").read_text())["total_steps"]
    # A count fixed once ran 70 steps in 22 s (73% of the budget); 50 slow and 100 fast steps fill it.
    assert total > 1.5 * first_plan and 0.9 * budget <= took <= budget + STEP_S, (took, total)
    r = build_recipe("default", {**TINY, "time": budget})
    assert out["history"][-1]["lr"] == pytest.approx(lr_at(r, total - 1, total))  # the schedule still ends


def test_resumed_time_run_keeps_its_step_count(synthetic_data, tmp_path, monkeypatch):
    from fercli.engine import budget as engine
    from fercli.errors import INTERRUPTED
    from fercli.files.checkpoint import read_meta

    # The count the budget gives is fixed at 3 epochs' steps, so the test does not depend on how busy the
    # machine is (a slow machine fits fewer than the 60 steps it runs before the interruption).
    monkeypatch.setattr(engine, "steps_in_budget", lambda budget, spent, done, sps, per_epoch, extra: 3 * per_epoch)
    with pytest.raises(FerError) as e:
        # past the first epoch, so the step count has been fixed and saved
        _timed(synthetic_data, tmp_path, 6.0, "cut", stop_at_step=60)
    assert e.value.code == INTERRUPTED
    run = tmp_path / "train" / "cut"
    total = read_meta(run / "last.safetensors")["resume"]["total_steps"]
    assert total == json.loads((run / "args.json").read_text())["total_steps"] and total > 60
    r = build_recipe("default", {**TINY, "time": 6.0})
    s = RunSettings(device="cpu", project=str(tmp_path), progress=False, precision="fp32")
    out = train(r, s, resume=str(run))
    assert read_meta(run / "last.safetensors")["resume"]["global_step"] == total
    assert out["history"][-1]["lr"] == pytest.approx(lr_at(r, total - 1, total))


def test_a_long_run_says_how_long_unless_quiet(synthetic_data, tmp_path, capsys):
    from fercli import console
    from fercli.errors import INTERRUPTED

    r = build_recipe("default", {**TINY, "epochs": 100000})
    for quiet in (False, True):
        console.reset(quiet=quiet)
        s = RunSettings(data=str(synthetic_data), device="cpu", project=str(tmp_path), progress=False,
                        precision="fp32", stop_at_step=40)  # fmt: skip
        with pytest.raises(FerError) as e:
            train(r, s)  # the first epoch (35 steps) is timed, then the projection is made
        assert e.value.code == INTERRUPTED
        err = capsys.readouterr().err
        said = "this run will take about" in err and "`--recipe cpu` or `--time 20m`" in err
        assert said != quiet, err
    console.reset()
