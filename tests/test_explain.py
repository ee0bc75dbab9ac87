"""`fer saliency`, `fer ascent`, `fer audit`: figures, numerical properties and the sanity checks of
Adebayo et al., "Sanity Checks for Saliency Maps" (NeurIPS 2018)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import fercli
from fercli.data.prepared import PreparedData
from fercli.explain.audit import find_suspects
from fercli.explain.saliency import explain, grad_map, ig_map
from fercli.files.checkpoint import load_model
from fercli.infer.inference import normalize


@pytest.fixture(scope="module")
def trained(trained_synthetic):
    """vgg4s trained to >90% on synthetic faces (shared with test_train through conftest)."""
    return trained_synthetic[:3]


def _png_ok(path, min_w=300, min_h=150):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] >= min_w and im.size[1] >= min_h
        assert np.asarray(im.convert("L")).std() > 10  # not blank


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = a.ravel().argsort().argsort(), b.ravel().argsort().argsort()
    return float(np.corrcoef(ra, rb)[0, 1])


def test_saliency_cli_defaults_all_methods_per_class_and_npy(trained, tmp_path, fer, monkeypatch):
    ckpt, data, runs = trained
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").symlink_to(runs)
    (tmp_path / "fer-data.safetensors").symlink_to(data)
    r = fer("saliency", "--index", "3", "--out", "sal.png")  # no other flags, as after a `fer train`
    assert r.code == 0, r.err
    assert "using MODEL" in r.err and "using --data fer-data.safetensors (default)" in r.err
    _png_ok(tmp_path / "sal.png")
    r = fer("saliency", "-i", "0", "-i", "4", "--method", "all", "-o", "all.png", "--npy", "maps.npy")
    assert r.code == 0, r.err
    _png_ok(tmp_path / "all.png", min_w=1000)
    maps = np.load(tmp_path / "maps.npy")
    assert maps.shape == (2, 4, 48, 48) and np.isfinite(maps).all()
    r = fer("saliency", "--per-class", "2", "-o", "grid.png", "--method", "smoothgrad")
    assert r.code == 0, r.err
    _png_ok(tmp_path / "grid.png")
    r = fer("saliency", "--index", "99999")
    assert r.code == 2 and "--index 99999" in r.err


# Bounds on the share of attribution on the brows, eyes and mouth (chance: the regions' area, ~12%) and
# on the pointing game. The demo's model measured grad 48% / 98%, smoothgrad 32% / 99%, ig 43% / 94%,
# gradcam 34% / 86% on 280 test faces; before gradcam moved to a 12x12 layer in its HiResCAM form it
# scored 5% / 2% (below chance), with a third of its maps blank. On the 35 faces here gradcam pointed
# right on 69% to 91% of them, as the fixture's training varied with the torch threads of earlier tests,
# on an Intel Xeon; on an AMD EPYC (other oneDNN kernels, so another fixture model) 54%, with fp32 forced
# and with the probe's pick alike. Its map is 12x12 upsampled, so its peak falls off the small regions
# more often than a 48x48 map's: its bound is 40%, still over three times chance and far above the
# broken form's 2%.
MASS_AT_LEAST, POINTING_AT_LEAST, GRADCAM_POINTING_AT_LEAST = 0.25, 0.6, 0.4


def test_every_method_finds_the_features_the_synthetic_faces_were_drawn_from(trained):
    from fercli.explain.regions import synthetic_localisation
    from fercli.explain.saliency import METHODS, pick_faces

    ckpt, data, _ = trained
    d = PreparedData.open(data)
    idx, _ = pick_faces(d, "test", None, 5)
    # trained_synthetic's data: 2,800 faces, seed 1
    found, maps = synthetic_localisation(fercli.load(ckpt, "cpu"), d, idx, 2800, 1)
    assert 0.08 < found["chance"] < 0.16 and found["faces"] == 35
    for m in METHODS:
        assert found[m]["mass"] >= max(MASS_AT_LEAST, 2 * found["chance"]), (m, found)
        assert found[m]["pointing"] >= (GRADCAM_POINTING_AT_LEAST if m == "gradcam" else POINTING_AT_LEAST), (m, found)
    assert (np.abs(maps).reshape(35, len(METHODS), -1).max(2) > 0).all()  # no blank map


def test_localisation_scores_a_map_on_the_regions_and_one_off_them():
    from fercli.explain.regions import localisation

    regions = np.zeros((2, 48, 48), bool)
    regions[:, 10:20, 10:20] = True
    on, off = np.zeros((2, 48, 48)), np.zeros((2, 48, 48))
    on[:, 12, 12], on[:, 30, 30] = 3.0, 1.0  # three quarters inside, the peak inside
    off[:, 30, 30], off[:, 15, 15] = -3.0, 1.0  # signed: magnitude counts, the peak outside
    found = localisation(np.stack([on, off, np.zeros((2, 48, 48))], 1), regions, ["on", "off", "blank"])
    assert found["on"] == {"mass": 0.75, "pointing": 1.0} and found["off"] == {"mass": 0.25, "pointing": 0.0}
    assert found["blank"] == {"mass": 0.0, "pointing": 0.0} and found["chance"] == pytest.approx(100 / 2304)


def test_integrated_gradients_completeness(trained):
    ckpt, data, _ = trained
    net, meta = load_model(ckpt)
    net = net.double()
    d = PreparedData.open(data)
    x = normalize(torch.from_numpy(np.array(d.images[:4])), **meta["normalize"]).double()
    base = normalize(torch.zeros(4, 48, 48, dtype=torch.uint8), **meta["normalize"]).double()
    target = torch.tensor([0, 3, 5, 6])
    attr = ig_map(net, x, target, base, steps=256)
    with torch.no_grad():
        diff = (net(x) - net(base)).gather(1, target[:, None])[:, 0]
    # Completeness: sum of attributions = score difference, up to the trapezoid rule's error.
    torch.testing.assert_close(attr.sum((1, 2)), diff, rtol=0.02, atol=0.02 * diff.abs().max().item())


def test_maps_of_trained_model_differ_from_randomised_model(trained):
    """Model-randomisation test: gradient maps of the trained network and of the same architecture with
    re-initialised weights should be nearly unrelated. Threshold 0.5 on the mean Spearman rank
    correlation: Adebayo et al. report values near 0 for plain gradients after full randomisation,
    while a method that only echoes the input (edge detection) stays far above 0.5."""
    ckpt, data, _ = trained
    d = PreparedData.open(data)
    imgs, labels = np.array(d.images[:8]), np.array(d.labels[:8])
    torch.manual_seed(123)
    rand = fercli.load(ckpt, "cpu")
    for m in rand.net.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    a = explain(fercli.load(ckpt, "cpu"), imgs, labels, ["grad"], "label")["maps"][:, 0]
    b = explain(rand, imgs, labels, ["grad"], "label")["maps"][:, 0]
    rho = np.mean([_spearman(a[i], b[i]) for i in range(8)])
    assert rho < 0.5, rho


def test_grad_is_zero_where_the_model_provably_looks_away():
    class LeftHalfOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 48 * 48, 7))

        def forward(self, x):
            mask = torch.ones_like(x)
            mask[..., 24:] = 0  # columns 24..47 never reach the network
            return self.net(x * mask)

    torch.manual_seed(0)
    x = torch.randn(3, 1, 48, 48)
    g = grad_map(LeftHalfOnly(), x, torch.tensor([0, 1, 2]))
    assert (g[..., 24:] == 0).all() and (g[..., :24] > 0).any()


def test_ascent_and_layer_list(trained, tmp_path, fer):
    ckpt, _, _ = trained
    r = fer("ascent", "--model", ckpt, "--layer", "list")
    names = [line.split(",")[0] for line in r.out.splitlines()]
    assert r.code == 0 and len(names) == 8 and names[0].startswith("features.")
    r = fer(
        "ascent", "--model", ckpt, "--layer", names[-1], "--filters", "0:6", "--steps", "30", "-o", tmp_path / "a.png"
    )
    assert r.code == 0, r.err
    _png_ok(tmp_path / "a.png", min_w=300, min_h=100)
    r = fer("ascent", "--model", ckpt, "--class-vis", "--steps", "30", "-o", tmp_path / "c.png")
    assert r.code == 0, r.err
    r = fer("ascent", "--model", ckpt, "--layer", "nope")
    assert r.code == 2 and "unknown layer 'nope' (choose from features." in r.err


def test_ascent_raises_the_filter_activation(trained):
    """The optimised image excites its own filter more than the noise it started from, for every filter
    and class asked: a property of gradient ascent, not of one model's filters. (The figure's contrast
    stretch is display only: a stretched image can excite the unit less than noise does.)"""
    from fercli.explain.ascent import ascend, pick_layer

    model = fercli.load(trained[0], "cpu")
    net, meta = model.net, model.meta
    name, conv = pick_layer(net, "-1")
    acts = {}
    conv.register_forward_hook(lambda _m, _i, o: acts.__setitem__("a", o))
    filters = [0, 1, 2, 3]

    def forward(images: np.ndarray) -> torch.Tensor:  # logits; the hook keeps the layer's activations
        x = (torch.from_numpy(images)[:, None] - meta["normalize"]["mean"]) / meta["normalize"]["std"]
        with torch.no_grad():
            return net(x)

    def unit(images: np.ndarray) -> torch.Tensor:
        forward(images)
        return acts["a"][range(len(filters)), filters].mean((1, 2))

    start = ascend(model, name, filters, steps=0)
    grown = ascend(model, name, filters, steps=40)
    assert start.shape == grown.shape == (4, 48, 48) and grown.dtype == np.float32
    a0, a1 = unit(start), unit(grown)
    assert (a1 > a0).all(), (a0, a1)
    classes = [0, 3, 6]
    c0 = ascend(model, None, classes, steps=0, class_vis=True)
    c1 = ascend(model, None, classes, steps=40, class_vis=True)
    s0, s1 = forward(c0)[range(3), classes], forward(c1)[range(3), classes]
    assert (s1 > s0).all(), (s0, s1)


def test_audit_finds_flipped_labels(trained, tmp_path, fer):
    probs = np.full((20, 7), 0.01)
    labels = np.repeat(np.arange(7), 3)[:20]
    probs[np.arange(20), labels] = 0.94
    probs[5, :] = 0.01
    probs[5, 3] = 0.94  # face 5 is labelled 1 (disgust) but the model is sure it is happy
    rows = find_suspects(probs, labels, top=1)
    assert rows[1] == {"i": 5, "given": 1, "predicted": 3, "confidence": 0.94, "loss": pytest.approx(-np.log(0.01))}
    ckpt, data, _ = trained
    r = fer("audit", "--model", ckpt, "--data", data, "--top", "3", "-o", tmp_path / "audit.png")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == "index,source_row,source,given,predicted,confidence,loss" and len(lines) == 1 + 7 * 3
    assert all(line.split(",")[2] == "synthetic" for line in lines[1:])
    _png_ok(tmp_path / "audit.png")


def test_audit_figure_titles_name_the_classes(tmp_path, monkeypatch):
    """Titles read given -> predicted by class name, also when the predicted class is one no suspect was
    given (a local list of the given classes once shadowed the names and raised IndexError here)."""
    from fercli import plots
    from fercli.classes import CLASSES
    from fercli.explain.audit import audit_figure

    figs = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, **kw: figs.append(fig))
    rows = [{"i": 0, "given": 0, "predicted": 5, "confidence": 0.9, "loss": 2.0},
            {"i": 1, "given": 2, "predicted": 0, "confidence": 0.8, "loss": 1.5}]  # fmt: skip
    audit_figure(np.zeros((2, 48, 48), np.uint8), rows, 1, tmp_path / "a.png", CLASSES)
    titles = [ax.get_title() for ax in figs[0].axes if ax.get_title()]
    assert titles == [f"{CLASSES[0]} -> {CLASSES[5]}\n90%", f"{CLASSES[2]} -> {CLASSES[0]}\n80%"]


def test_figures_name_their_split_in_the_png_metadata(fer, trained_synthetic, tmp_path):
    ckpt, data, _, _ = trained_synthetic
    cases = [
        (["saliency", "-m", ckpt, "--index", "3", "--split", "test"], "test"),
        (["saliency", "-m", ckpt, "--per-class", "1", "--split", "val"], "val"),
        (["confmat", ckpt, "--split", "test"], "test"),
        (["audit", "-m", ckpt, "--split", "train"], "train"),
    ]
    for k, (args, split) in enumerate(cases):
        out = tmp_path / f"{k}.png"
        r = fer(*args, "--data", data, "-o", out)
        assert r.code == 0, r.err
        assert Image.open(out).info["Description"] == f"the {split} split of {data.name}", args
