"""Lookahead's slow copy of the weights and BatchNorm's momentum (lookahead.py), alone and in a run."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from fercli.engine import lookahead
from fercli.engine.lookahead import Lookahead, decay_at, set_bn_momentum
from fercli.engine.recipe import NO_AUGMENT, build_recipe
from fercli.engine.train import RunSettings, train
from fercli.errors import USAGE, FerError

from conftest import interrupted_run


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def _move(net: nn.Module) -> None:
    """What an optimizer step and a training forward pass do: weights and running statistics change."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    net.train()(torch.randn(8, 4))


def test_the_weights_are_pulled_to_the_slow_copy_every_fifth_step_and_take_it_at_the_last():
    net = _net()
    look = Lookahead(net)
    slow = {k: v.clone() for k, v in net.state_dict().items()}
    for step in range(1, lookahead.EVERY):
        _move(net)
        look.after_step(step, 100)
    between = {k: v.clone() for k, v in net.state_dict().items()}
    assert not torch.equal(between["0.weight"], slow["0.weight"])  # no pull before the fifth step
    _move(net)
    fast = {k: v.clone() for k, v in net.state_dict().items()}
    look.after_step(lookahead.EVERY, 100)
    d = decay_at(lookahead.EVERY, 100)
    for name in ("0.weight", "0.bias", "1.weight", "1.running_mean", "1.running_var"):
        torch.testing.assert_close(net.state_dict()[name], d * slow[name] + (1 - d) * fast[name])
    assert net.state_dict()["1.num_batches_tracked"] == fast["1.num_batches_tracked"]  # counters are not averaged
    pulled = {k: v.clone() for k, v in net.state_dict().items()}
    _move(net)
    look.after_step(7, 7)  # the last step, though not a fifth: the slow copy outright
    assert all(torch.equal(net.state_dict()[k], pulled[k]) for k in ("0.weight", "1.running_var"))


def test_the_pull_grows_with_the_cube_of_progress_to_airbench_peak():
    assert decay_at(0, 1000) == 0.0
    assert decay_at(500, 1000) == pytest.approx(lookahead.PEAK / 8)
    assert decay_at(1000, 1000) == pytest.approx(0.95**5)
    assert decay_at(2000, 1000) == decay_at(1000, 1000)  # a re-planned budget that ended early


def test_bn_momentum_reaches_every_batchnorm():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.BatchNorm1d(8))
    set_bn_momentum(net, 0.4)
    assert [m.momentum for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] == [0.4, 0.4]


def _run(data, project, resume=None, **recipe):
    r = build_recipe("default", {**recipe, **NO_AUGMENT})
    return train(r, RunSettings(data=str(data), device="cpu", project=str(project), progress=False), resume=resume)


def test_a_lookahead_run_resumes_exactly_and_ends_on_its_slow_copy(synthetic_data, tmp_path):
    recipe = dict(arch="vgg4s", width=0.25, epochs=1, batch=32, lr=0.01, lookahead=True, bn_momentum=0.4)
    cut = interrupted_run(synthetic_data, tmp_path / "cut", stop_at_step=7, **recipe)  # 2 steps after a pull
    saved = load_file(cut / "last.safetensors")
    slow = {k: v for k, v in saved.items() if k.startswith("resume." + lookahead.PREFIX)}
    assert slow and not torch.equal(slow[f"resume.{lookahead.PREFIX}features.0.0.weight"], saved["features.0.0.weight"])
    _run(synthetic_data, tmp_path / "cut", resume=str(cut), **recipe)
    _run(synthetic_data, tmp_path / "full", **recipe)
    resumed, full = (load_file(p / "train" / "exp" / "last.safetensors") for p in (tmp_path / "cut", tmp_path / "full"))
    weights = [n for n in full if not n.startswith(("resume.", "train_faces"))]
    assert weights and all(torch.equal(full[n], resumed[n]) for n in weights)
    # the run's last step took the slow copy: the weights are the slow copy it saved
    assert all(torch.equal(full[n], full[f"resume.{lookahead.PREFIX}{n}"]) for n in weights if "num_batches" not in n)


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"lookahead": True, "ema": 0.999}, "choose one"), ({"bn_momentum": 0.0}, "bn_momentum"),
     ({"bn_momentum": 1.5}, "bn_momentum")],
)  # fmt: skip
def test_recipes_that_cannot_run_are_refused(fields, message):
    with pytest.raises(FerError, match=message) as e:
        build_recipe("cpu", fields)
    assert e.value.code == USAGE


def test_a_slow_copy_of_another_shape_is_refused_not_broadcast():
    look = Lookahead(_net())
    extra = {k: v.clone() for k, v in look.tensors().items()}
    extra[lookahead.PREFIX + "0.weight"] = torch.zeros(1)  # copy_ would broadcast it over [3, 4]
    with pytest.raises(RuntimeError, match=r"0\.weight has shape \(1,\), not \(3, 4\)"):
        look.load(extra)
    look.load({k: v.clone() for k, v in look.tensors().items()})  # the right shapes load
