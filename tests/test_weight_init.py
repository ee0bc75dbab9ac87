"""Starting weights the recipe asks for (weight_init.py): dirac convolutions, a fixed whitening first layer."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F

from fercli import models
from fercli.engine import weight_init
from fercli.engine.recipe import NO_AUGMENT, build_recipe
from fercli.engine.train import RunSettings, train
from fercli.errors import USAGE, FerError

from conftest import interrupted_run


def test_dirac_convolutions_pass_their_input_channels_through():
    torch.manual_seed(0)
    net = models.create("vgg4s", 7)
    weight_init.dirac(net)
    square, wider = net.features[0][3], net.features[1][0]  # 16->16 at 48 px, 16->32 at 24 px
    x = torch.randn(3, 16, 12, 12)
    torch.testing.assert_close(square(x), x)
    out = wider(x)
    torch.testing.assert_close(out[:, :16], x)
    assert out[:, 16:].abs().mean() > 0.05  # the extra filters keep their random start


def test_patch_whitening_decorrelates_the_patches_of_the_faces_it_saw():
    torch.manual_seed(0)
    noise = torch.randn(64, 1, 52, 52)
    faces = F.avg_pool2d(noise, 5, stride=1)  # neighbouring pixels correlated, as in faces: [64,1,48,48]
    w = weight_init.patch_whitening(faces, 16)
    assert w.shape == (16, 1, 3, 3)
    torch.testing.assert_close(w[8:], -w[:8])  # each direction and its negative
    out = F.conv2d(faces, w[:8]).permute(1, 0, 2, 3).reshape(8, -1)
    cov = out @ out.T / out.shape[1]
    off_diagonal = cov - torch.diag(torch.diag(cov))
    assert off_diagonal.abs().max() < 1e-3
    assert ((torch.diag(cov) > 0.5) & (torch.diag(cov) <= 1.0 + 1e-4)).all()  # 1 but for the eps


def _run(data, project, resume=None, **recipe):
    r = build_recipe("default", {**dict(arch="vgg4s", width=0.25, epochs=1, batch=32, lr=0.01), **recipe,
                                 **NO_AUGMENT})  # fmt: skip
    return train(r, RunSettings(data=str(data), device="cpu", project=str(project), progress=False), resume=resume)


def test_whitened_first_layer_stays_fixed_and_a_stopped_run_resumes_exactly(synthetic_data, tmp_path):
    recipe = dict(arch="vgg4s", width=0.25, epochs=1, batch=32, lr=0.01, whiten=True, dirac=True)
    cut = interrupted_run(synthetic_data, tmp_path / "cut", stop_at_step=3, **recipe)
    start = load_file(cut / "last.safetensors")["features.0.0.weight"]
    torch.testing.assert_close(start[8:], -start[:8])
    _run(synthetic_data, tmp_path / "cut", resume=str(cut), **recipe)
    _run(synthetic_data, tmp_path / "full", **recipe)
    resumed, full = (load_file(p / "train" / "exp" / "last.safetensors") for p in (tmp_path / "cut", tmp_path / "full"))
    assert torch.equal(resumed["features.0.0.weight"], start)  # no step moved it
    assert torch.equal(full["features.0.0.weight"], start)  # and a new run computes the same filters
    weights = [n for n in full if not n.startswith(("resume.", "train_faces"))]
    assert all(torch.equal(full[n], resumed[n]) for n in weights)


def test_whiten_refuses_a_network_whose_first_layer_it_cannot_fill(synthetic_data, tmp_path):
    with pytest.raises(FerError, match="whiten needs") as e:
        _run(synthetic_data, tmp_path, arch="vgg4", width=0.5, whiten=True)  # 32 channels: 9 directions x 2 is 18
    assert e.value.code == USAGE
