"""Distillation (engine/distill.py): the teachers' predictions mixed into the train targets, recorded in the
run's checkpoints, checked on resume, and refused when they cannot teach this run honestly."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fercli.classes import CLASSES
from fercli.data.crowd import FERPLUS_CLASSES, training_targets
from fercli.data.leaks import face_thumbnails
from fercli.data.prepared import PreparedData
from fercli.engine.distill import file_sha256, teacher_targets
from fercli.engine.recipe import NO_AUGMENT, build_recipe, recipe_file, recipe_for
from fercli.engine.train import RunSettings, train
from fercli.errors import FerError
from fercli.files.checkpoint import read_meta
from fercli.infer.model import FerModel

from conftest import untrained_checkpoint

SMALL = dict(arch="vgg4s", width=0.125, epochs=2, batch=64, lr=0.05, **NO_AUGMENT)


def _train(data, project, name="exp", resume=None, stop_at_step=None, **recipe):
    r = build_recipe("default", {**SMALL, **recipe})
    # fp32 throughout: the precision probe may pick otherwise on a resume beside a busy test suite
    return train(r, RunSettings(data=str(data), device="cpu", project=str(project), name=name, progress=False,
                                stop_at_step=stop_at_step, precision="fp32"), resume=resume)  # fmt: skip


def test_the_targets_are_the_mix_of_the_labels_and_the_teachers_average(synthetic_data, tmp_path):
    a, b = (untrained_checkpoint(tmp_path / f"{n}.safetensors", CLASSES) for n in "ab")  # two inits: two teachers
    data = PreparedData.open(synthetic_data)
    targets = training_targets(data, "fer2013")
    faces = data.images[targets.train]
    mixed, record = teacher_targets((str(a), str(b)), 0.25, targets, data, faces, torch.device("cpu"))
    avg = (FerModel.load(a, "cpu").predict(faces) + FerModel.load(b, "cpu").predict(faces)) / 2
    want = 0.75 * np.eye(len(CLASSES))[targets.train_y] + 0.25 * avg
    np.testing.assert_allclose(mixed, want, atol=1e-6)
    assert mixed.shape == (len(targets.train), len(CLASSES)) and np.allclose(mixed.sum(1), 1, atol=1e-5)
    assert [t["sha256"] for t in record] == [file_sha256(a), file_sha256(b)]


def test_a_distilled_run_records_its_teachers_and_resumes_exactly(synthetic_data, tmp_path):
    teacher = Path(_train(synthetic_data, tmp_path / "t", epochs=1)["run_dir"])
    full = _train(synthetic_data, tmp_path, name="full", teachers=(str(teacher),), distill=0.5)
    cut = full["steps_per_epoch"] + 2
    with pytest.raises(FerError):
        _train(synthetic_data, tmp_path, name="cut", stop_at_step=cut, teachers=(str(teacher),), distill=0.5)
    _train(synthetic_data, tmp_path, resume=str(tmp_path / "train" / "cut"))
    a, b = (load_file(tmp_path / "train" / n / "last.safetensors") for n in ("full", "cut"))
    torch.testing.assert_close(a["head.1.weight"], b["head.1.weight"], rtol=0, atol=0)
    meta = read_meta(f"{full['run_dir']}/best.safetensors")
    assert meta["teachers"] == [{"path": f"{teacher}/best.safetensors",
                                 "sha256": file_sha256(teacher / "best.safetensors")}]  # fmt: skip
    assert meta["recipe"]["teachers"] == [str(teacher)] and meta["recipe"]["distill"] == 0.5
    # The same run without a teacher learns other weights: the teacher's targets reached the loss.
    plain = _train(synthetic_data, tmp_path, name="plain")
    c = load_file(f"{plain['run_dir']}/last.safetensors")
    assert not torch.equal(a["head.1.weight"], c["head.1.weight"])
    # A teacher file replaced under a run: resuming it refuses, naming the file.
    with pytest.raises(FerError):
        _train(synthetic_data, tmp_path, name="cut2", stop_at_step=cut, teachers=(str(teacher),))
    shutil.copy(f"{plain['run_dir']}/best.safetensors", teacher / "best.safetensors")
    with pytest.raises(FerError, match=f"{teacher}.*teachers changed"):
        _train(synthetic_data, tmp_path, resume=str(tmp_path / "train" / "cut2"))


def test_teachers_that_cannot_teach_the_run_are_refused_by_name(synthetic_data, tmp_path):
    data = PreparedData.open(synthetic_data)
    ferplus = untrained_checkpoint(tmp_path / "ferplus.safetensors", FERPLUS_CLASSES)
    with pytest.raises(FerError, match="ferplus.safetensors: the teacher predicts 8 classes"):
        _train(synthetic_data, tmp_path, teachers=(str(ferplus),))
    targets = training_targets(data, "fer2013")
    leaky = untrained_checkpoint(tmp_path / "leaky.safetensors", CLASSES, face_thumbnails(data.images[targets.val]))
    with pytest.raises(FerError, match="leaky.safetensors: the teacher trained on .* val faces"):
        _train(synthetic_data, tmp_path, teachers=(str(leaky),))
    with pytest.raises(FerError, match="missing.safetensors: no such checkpoint"):
        _train(synthetic_data, tmp_path, teachers=(str(tmp_path / "missing.safetensors"),))
    with pytest.raises(FerError, match="--distill must be in"):
        build_recipe("cpu", {"distill": 0.0})
    bad = tmp_path / "r.json"
    bad.write_text('{"base": "cpu", "teachers": "one.safetensors"}')
    with pytest.raises(FerError, match="'teachers' has a value of the wrong type"):
        recipe_file(str(bad))
    assert not (tmp_path / "train").exists() or not any((tmp_path / "train").iterdir())


def test_teachers_given_from_python_or_the_cli_become_a_tuple_of_paths(tmp_path):
    assert recipe_for("cpu", {"teachers": tmp_path / "a.safetensors"}).teachers == (str(tmp_path / "a.safetensors"),)
    assert recipe_for("cpu", {"teachers": ["a", Path("b")], "distill": 1.0}).teachers == ("a", "b")
    assert recipe_for("cpu", {}).teachers == ()
    with pytest.raises(FerError, match="--teacher: at most 16"):
        recipe_for("cpu", {"teachers": ["a"] * 17})
