"""The engine's device policy and resume state: derived random streams, optimizer buffer layout, the fp16
gradient scaler, torchrun device choice and fp32 inference. (No sync when nothing is shown: test_train.)"""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from fercli import models
from fercli.engine.recipe import NO_AUGMENT, build_recipe
from fercli.engine.train import RunSettings, derived_seed, train
from fercli.errors import USAGE, FerError

from conftest import interrupted_run


def _run(data, project, name="exp", resume=None, **recipe):
    r = build_recipe("default", {**dict(arch="vgg4s", width=0.125, epochs=2, batch=64, lr=0.05), **recipe})
    settings = RunSettings(data=str(data), device="cpu", project=str(project), name=name, progress=False)
    return train(r, settings, resume=resume)


def test_derived_seeds_are_stable_distinct_and_63_bit():
    seeds = {derived_seed(0, e, s) for e in range(1, 4) for s in range(-1, 200)}
    assert len(seeds) == 3 * 201 and all(0 <= x < 2**63 for x in seeds)
    assert derived_seed(7, 3, 5) == derived_seed(7, 3, 5) != derived_seed(8, 3, 5)


def test_resume_needs_no_generator_state_and_ignores_a_foreign_one(synthetic_data, tmp_path):
    """A run started on one device type resumes on another: simulated on the CPU by giving the checkpoint
    the 16-byte generator state a CUDA run used to save, which the old resume refused."""
    full = _run(synthetic_data, tmp_path, name="full")
    run = tmp_path / "train" / "cut"
    with pytest.raises(FerError):
        r = build_recipe("default", dict(arch="vgg4s", width=0.125, epochs=2, batch=64, lr=0.05))
        train(r, RunSettings(data=str(synthetic_data), device="cpu", project=str(tmp_path), name="cut",
                             progress=False, stop_at_step=full["steps_per_epoch"] + 3))  # fmt: skip
    last = run / "last.safetensors"
    tensors = load_file(last)
    assert not [k for k in tensors if k.startswith("resume.rng.")]  # nothing device-bound is saved
    from safetensors import safe_open

    with safe_open(str(last), "pt") as f:
        metadata = f.metadata()
    tensors["resume.rng.gen"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state
    tensors["resume.rng.cpu"] = torch.zeros(16, dtype=torch.uint8)
    save_file(tensors, str(last), metadata=metadata)
    resumed = _run(synthetic_data, tmp_path, resume=str(run))
    for a, b in zip(full["history"], resumed["history"], strict=True):
        assert a["valid_acc"] == b["valid_acc"] and a["train_acc"] == b["train_acc"]
    w_full, w_res = load_file(tmp_path / "train" / "full" / "last.safetensors"), load_file(last)
    torch.testing.assert_close(w_full["head.1.weight"], w_res["head.1.weight"], rtol=0, atol=0)


def test_resumed_optimizer_buffers_keep_the_parameters_layout(synthetic_data, tmp_path):
    from fercli.engine.setup import make_optimizer
    from fercli.engine.state import like_parameters
    from fercli.files.checkpoint import load_tensors, optimizer_from_flat, read_meta

    run = interrupted_run(synthetic_data, tmp_path, stop_at_step=5, arch="vgg4s", width=0.125, epochs=1, batch=32)
    last = run / "last.safetensors"
    meta = read_meta(last)
    net = models.create("vgg4s", width=0.125).to(memory_format=torch.channels_last)
    opt = make_optimizer(net, build_recipe("default", {}))
    optimizer_from_flat(opt, load_tensors(last, "resume."), meta["resume"]["optimizer"])
    convs = [p for p in net.parameters() if p.dim() == 4]
    assert any(opt.state[p]["momentum_buffer"].stride() != p.stride() for p in convs)  # as loaded: contiguous
    like_parameters(opt)
    for p in net.parameters():
        assert opt.state[p]["momentum_buffer"].stride() == p.stride()


def test_images_per_second_after_a_resume_counts_only_the_new_images(synthetic_data, tmp_path):
    run = interrupted_run(synthetic_data, tmp_path, stop_at_step=9, arch="vgg4s", width=0.125, epochs=1, batch=32)
    out = _run(synthetic_data, tmp_path, resume=str(run))
    row = out["history"][0]
    done_after_resume = (out["steps_per_epoch"] - 9) * 32
    assert row["images_per_s"] * row["seconds"] == pytest.approx(done_after_resume, rel=0.01)


def test_fp16_trains_with_a_gradient_scaler_and_resumes_it(synthetic_data, tmp_path):
    from fercli.files.checkpoint import read_meta

    r = build_recipe("default", dict(arch="vgg4s", width=0.125, epochs=1, batch=32, lr=0.05))
    with pytest.raises(FerError):
        train(r, RunSettings(data=str(synthetic_data), device="cpu", project=str(tmp_path), progress=False,
                             precision="fp16", stop_at_step=4))  # fmt: skip
    state = read_meta(tmp_path / "train" / "exp" / "last.safetensors")["resume"]
    assert state["scaler"]["scale"] > 1  # the loss scale travels with the run
    out = train(r, RunSettings(data=str(synthetic_data), device="cpu", project=str(tmp_path), progress=False,
                               precision="fp16"), resume=str(tmp_path / "train" / "exp"))  # fmt: skip
    assert math.isfinite(out["history"][0]["loss"]) and 0 <= out["best_valid_acc"] <= 1


def test_cuda_precision_follows_compute_capability(monkeypatch):
    from fercli.engine.device import needs_scaler, training_dtype

    dev = torch.device("cuda")
    for capability, want in (((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, c=capability: c)
        got = training_dtype(dev, "auto", lambda: None, "x", 64)
        assert got == want and needs_scaler(got) == (want == torch.float16)
    assert training_dtype(torch.device("mps"), "auto", lambda: None, "x", 64) is None
    with pytest.raises(FerError, match="--precision must be one of auto, fp32, bf16, fp16"):
        training_dtype(dev, "fp8", lambda: None, "x", 64)


def test_torchrun_rank_takes_its_local_gpu_and_an_explicit_index_is_refused():
    from fercli.engine.distributed import Group, join

    with pytest.raises(FerError) as e:
        join(Group(rank=1, world=2, local_rank=1), torch.device("cuda", 0))
    assert e.value.code == USAGE and "cuda:LOCAL_RANK" in str(e.value)


def test_inference_is_fp32_channels_last_and_matches_a_plain_forward(trained_synthetic):
    from fercli.data.prepared import PreparedData
    from fercli.files.checkpoint import load_model
    from fercli.infer.inference import normalize, predict_probs

    ckpt, data, _, _ = trained_synthetic
    model, meta = load_model(ckpt)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    faces = PreparedData.open(data).images[:64]
    got = predict_probs(model, faces, meta["normalize"]["mean"], meta["normalize"]["std"], torch.device("cpu"))
    assert got.dtype == torch.float32
    plain = models.create(meta["arch"], **meta["arch_args"]).eval()
    plain.load_state_dict(load_file(ckpt))
    with torch.no_grad():
        want = plain(normalize(torch.from_numpy(faces.copy()), meta["normalize"]["mean"], meta["normalize"]["std"]))
    torch.testing.assert_close(got, want.softmax(1), rtol=0, atol=1e-5)


def test_a_recipes_dropout_builds_the_network_and_its_checkpoint_records_it(synthetic_data, tmp_path):
    from fercli.files.checkpoint import read_meta
    from fercli.infer.model import FerModel

    heads = lambda net: [m.p for m in net.head.modules() if isinstance(m, torch.nn.Dropout)]  # noqa: E731
    assert heads(models.create("vgg4s")) == [0.5, 0.5]  # the network's own default when the recipe says none
    run_dir = _run(synthetic_data, tmp_path / "p", epochs=1, dropout=0.0)["run_dir"]
    ckpt = f"{run_dir}/best.safetensors"
    assert read_meta(ckpt)["arch_args"] == {"width": 0.125, "dropout": 0.0}
    assert heads(FerModel.load(ckpt, "cpu").net) == [0.0, 0.0]
    with pytest.raises(FerError, match="dropout must be in"):
        build_recipe("cpu", {"dropout": 1.0})
    with pytest.raises(FerError, match="'resnet18' does not take"):
        models.create("resnet18", dropout=0.1)


# ---- recipe paths no other test takes ------------------------------------------------------------


def test_ema_weights_are_saved_and_resume_exactly(synthetic_data, tmp_path):
    full = _run(synthetic_data, tmp_path, name="full", ema=0.9, **NO_AUGMENT)
    with pytest.raises(FerError):
        r = build_recipe("default", dict(arch="vgg4s", width=0.125, epochs=2, batch=64, lr=0.05, ema=0.9,
                                         **NO_AUGMENT))  # fmt: skip
        train(r, RunSettings(data=str(synthetic_data), device="cpu", project=str(tmp_path), name="cut",
                             progress=False, stop_at_step=full["steps_per_epoch"] + 2))  # fmt: skip
    _run(synthetic_data, tmp_path, resume=str(tmp_path / "train" / "cut"))
    a, b = (load_file(tmp_path / "train" / n / "last.safetensors") for n in ("full", "cut"))
    torch.testing.assert_close(a["head.1.weight"], b["head.1.weight"], rtol=0, atol=0)  # the EMA weights
    torch.testing.assert_close(a["resume.raw.head.1.weight"], b["resume.raw.head.1.weight"], rtol=0, atol=0)
    assert not torch.equal(a["head.1.weight"], a["resume.raw.head.1.weight"])  # EMA is not the raw network


def test_study_preset_trains_with_adam_at_a_constant_rate(synthetic_data, tmp_path):
    r = build_recipe("study", dict(arch="vgg4s", width=0.125, epochs=2, batch=128))
    out = train(r, RunSettings(data=str(synthetic_data), device="cpu", project=str(tmp_path), progress=False))
    assert [row["lr"] for row in out["history"]] == [0.002, 0.002]
    last = load_file(f"{out['run_dir']}/last.safetensors")
    assert any(k.endswith(".exp_avg_sq") for k in last)  # Adam's second moments, not SGD momentum


def test_cosine_schedule_decays_from_the_peak_without_warm_up():
    from fercli.engine.recipe import lr_at

    r = build_recipe("default", {"schedule": "cosine", "lr": 0.1})
    lrs = [lr_at(r, s, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[50] == pytest.approx(0.05, rel=0.05) and lrs[-1] < 1e-3
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_cpu_bf16_autocast_trains(synthetic_data, tmp_path, monkeypatch):
    """--precision bf16 on the CPU: the convolutions compute in bf16 while training (not in validation,
    which is fp32), the weights stay fp32, and the loss falls."""
    import json

    from fercli.engine import setup

    seen: list[tuple[bool, torch.dtype]] = []
    real_create = setup.models.create

    def create(*args, **kw):
        net = real_create(*args, **kw)
        conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda m, i, out: seen.append((m.training, out.dtype)))
        return net

    monkeypatch.setattr(setup.models, "create", create)
    r = build_recipe("default", dict(arch="vgg4s", width=0.125, epochs=2, batch=64, lr=0.05))
    out = train(r, RunSettings(data=str(synthetic_data), device="cpu", project=str(tmp_path), progress=False,
                               precision="bf16"))  # fmt: skip
    assert {d for training, d in seen if training} == {torch.bfloat16}
    assert {d for training, d in seen if not training} == {torch.float32}
    assert out["history"][1]["loss"] < out["history"][0]["loss"]
    weights = load_file(str(tmp_path / "train" / "exp" / "best.safetensors"))
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float32}
    assert json.loads((tmp_path / "train" / "exp" / "args.json").read_text())["precision"] == "bf16"


def test_no_weight_decay_on_batchnorm_or_biases():
    """What the optimizer does, not how its groups are built: with zero gradients, a step shrinks the
    conv and linear weights (decay) and leaves BatchNorm's scales and every bias as they were."""
    from fercli.engine.setup import make_optimizer

    net = models.create("vgg4s")
    opt = make_optimizer(net, build_recipe("default", {"weight_decay": 0.1, "lr": 0.5}))
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    kinds = {n: type(m).__name__ for n, m in net.named_modules()}
    checked = set()
    for name, p in net.named_parameters():
        module, leaf = name.rsplit(".", 1)
        moved = not torch.equal(p, before[name])
        if leaf == "weight" and kinds[module] in ("Conv2d", "Linear"):
            assert moved and p.norm() < before[name].norm(), name
        else:
            assert not moved, name  # BatchNorm weight, any bias
        checked.add((kinds[module], leaf))
    assert {("BatchNorm2d", "weight"), ("BatchNorm2d", "bias"), ("Linear", "bias"), ("Conv2d", "weight")} <= checked


def test_augmentation_really_transforms():
    from fercli.engine.augment import augment

    x = torch.randn(8, 1, 48, 48)
    flip_only = build_recipe("default", dict(rotate=0.0, scale=0.0, translate=0.0, flip=1.0, erase=0.0))
    torch.testing.assert_close(augment(x, flip_only, torch.Generator().manual_seed(0)), x.flip(3))
    faces = torch.rand(64, 1, 48, 48) + 1.0  # bright faces; the padding outside is 0
    rotate = build_recipe("default", dict(rotate=10.0, scale=0.0, translate=0.0, flip=0.0, erase=0.0))
    out = augment(faces, rotate, torch.Generator().manual_seed(0))
    assert not torch.allclose(out, faces)
    # a rotation of at most 10 degrees turns the corners out of the frame (7% of the square at 10 degrees)
    assert (out.mean((1, 2, 3)) / faces.mean((1, 2, 3))).min() > 0.9
    erase = build_recipe("default", dict(rotate=0.0, scale=0.0, translate=0.0, flip=0.0, erase=1.0))
    erased = augment(faces, erase, torch.Generator().manual_seed(0))
    assert ((erased == 0).flatten(1).sum(1) > 0).all()  # every face lost a rectangle


def test_alternate_flip_shows_each_face_both_ways_every_two_epochs(synthetic_data, tmp_path):
    from fercli.engine.augment import alternating, augment
    from fercli.engine.setup import first_flips

    r = build_recipe("default", dict(rotate=0.0, scale=0.0, translate=0.0, erase=0.0, alternate_flip=True))
    first = first_flips(r, 1000, torch.device("cpu"))
    assert 400 < int(first.sum()) < 600 and torch.equal(first, first_flips(r, 1000, torch.device("cpu")))
    assert not torch.equal(first, first_flips(build_recipe("default", dict(alternate_flip=True, seed=1)), 1000,
                                              torch.device("cpu")))  # fmt: skip
    assert torch.equal(alternating(first, 1), first) and torch.equal(alternating(first, 3), first)
    assert torch.equal(alternating(first, 2), ~first)
    x, mask = torch.randn(8, 1, 48, 48), first[:8]
    g, g_chance = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    out = augment(x, r, g, flips=mask)
    torch.testing.assert_close(out, torch.where(mask.view(8, 1, 1, 1), x.flip(3), x))
    augment(x, r, g_chance)
    assert torch.equal(g.get_state(), g_chance.get_state())  # the other draws are those of a run without it
    with pytest.raises(FerError, match="alternate_flip needs flip above 0"):
        build_recipe("default", dict(flip=0.0, alternate_flip=True))
    # a run stopped mid-epoch 2 and resumed ends where one never stopped does
    recipe = dict(alternate_flip=True, rotate=0.0, scale=0.0, erase=0.0)
    full = _run(synthetic_data, tmp_path, name="full", **recipe)
    with pytest.raises(FerError):
        r = build_recipe("default", dict(arch="vgg4s", width=0.125, epochs=2, batch=64, lr=0.05, **recipe))
        train(r, RunSettings(data=str(synthetic_data), device="cpu", project=str(tmp_path), name="cut",
                             progress=False, stop_at_step=full["steps_per_epoch"] + 3))  # fmt: skip
    resumed = _run(synthetic_data, tmp_path, resume=str(tmp_path / "train" / "cut"), **recipe)
    assert [h["train_acc"] for h in full["history"]] == [h["train_acc"] for h in resumed["history"]]
    w_full, w_res = (load_file(tmp_path / "train" / d / "last.safetensors") for d in ("full", "cut"))
    assert torch.equal(w_full["head.1.weight"], w_res["head.1.weight"])


def test_last_and_curves_are_written_on_a_cadence_and_at_the_end(synthetic_data, tmp_path, monkeypatch):
    """With a save as costly as the whole run (patched ratio), `last` is written after the first epoch and
    at the end only; so is curves.png. The run still resumes from what was saved."""
    from fercli.engine import state
    from fercli.engine import train as engine

    saves, draws = [], []
    real_save, real_draw = engine.save_checkpoint, engine.training_curves
    monkeypatch.setattr(engine, "LAST_COST_RATIO", 1e12)
    monkeypatch.setattr(engine, "CURVES_EVERY_S", 1e12)

    def save(path, *a, **k):
        saves.append(path.name)
        return real_save(path, *a, **k)

    def draw(*a, **k):
        draws.append(1)
        return real_draw(*a, **k)

    monkeypatch.setattr(engine, "save_checkpoint", save)  # best
    monkeypatch.setattr(state, "save_checkpoint", save)  # last
    monkeypatch.setattr(engine, "training_curves", draw)
    out = _run(synthetic_data, tmp_path, epochs=4, **NO_AUGMENT)
    assert out["epochs_run"] == 4
    assert saves.count("last.safetensors") == 2 and len(draws) == 2
    from fercli.files.checkpoint import read_meta

    assert read_meta(tmp_path / "train" / "exp" / "last.safetensors")["resume"]["epoch"] == 5  # the end state


def test_one_resolver_for_models_and_resume(tmp_path):
    from fercli.files.runs import resolve_checkpoint

    old, new = tmp_path / "train" / "exp", tmp_path / "train" / "exp2"
    for run, names in ((old, ("best", "last")), (new, ("last",))):
        run.mkdir(parents=True)
        for n in names:
            (run / f"{n}.safetensors").write_bytes(b"x")
    assert resolve_checkpoint(new) == new / "last.safetensors"  # a run folder without best: its last
    assert resolve_checkpoint(None, tmp_path) == old / "best.safetensors"  # the newest run with a best
    assert resolve_checkpoint("last", tmp_path, resume=True) == new / "last.safetensors"
    assert resolve_checkpoint(old, resume=True) == old / "last.safetensors"
    for ref, resume, says in ((tmp_path / "nope.safetensors", False, "no such checkpoint"),
                              (tmp_path / "nope", True, "nothing to resume"),
                              (tmp_path, False, "holds no best.safetensors")):  # fmt: skip
        with pytest.raises(FerError, match=says):
            resolve_checkpoint(ref, resume=resume)


def test_compile_trains_through_the_compiled_module_and_saves_plain_weights(synthetic_data, tmp_path, monkeypatch):
    """--compile: the steps run through torch.compile's module (here with the aot_eager backend, which traces
    forward and backward like inductor but skips its code generation: seconds, not a minute on a CPU), the
    numbers follow the eager run, and checkpoints keep the plain network's names (no `_orig_mod.`)."""
    from fercli.files.checkpoint import load_model

    real_compile, calls = torch.compile, []

    def compile_(module, **kw):
        calls.append(type(module).__name__)
        return real_compile(module, backend="aot_eager", **kw)

    monkeypatch.setattr(torch, "compile", compile_)
    base = dict(arch="vgg4s", width=0.125, epochs=1, batch=64, lr=0.05, **NO_AUGMENT)
    r = build_recipe("default", base)
    eager = train(r, RunSettings(data=str(synthetic_data), device="cpu", project=str(tmp_path), name="eager",
                                 progress=False, precision="fp32"))  # fmt: skip
    assert calls == []
    compiled = train(r, RunSettings(data=str(synthetic_data), device="cpu", project=str(tmp_path), name="compiled",
                                    progress=False, precision="fp32", compile=True))  # fmt: skip
    assert calls == ["Net"]
    assert compiled["history"][0]["loss"] == pytest.approx(eager["history"][0]["loss"], rel=1e-3)
    model, _ = load_model(tmp_path / "train" / "compiled" / "best.safetensors")
    assert not any("_orig_mod" in k for k in model.state_dict())


def test_fp32_training_enters_no_autocast(synthetic_data, tmp_path, monkeypatch):
    """torch before 2.5 raises on torch.autocast("mps", enabled=False); fp32 training must not ask for one."""

    def refuse(*args, **kw):
        raise RuntimeError("User specified an unsupported autocast device_type 'mps'")

    monkeypatch.setattr(torch, "autocast", refuse)
    r = build_recipe("default", dict(arch="vgg4s", width=0.125, epochs=1, batch=64, lr=0.05))
    out = train(r, RunSettings(data=str(synthetic_data), device="cpu", project=str(tmp_path), progress=False,
                               precision="fp32"))  # fmt: skip
    assert len(out["history"]) == 1 and math.isfinite(out["history"][0]["loss"])


def test_a_resume_on_another_device_takes_this_devices_optimizer_flags():
    """A checkpoint saved where the optimizer was fused (CUDA) resumes with the flags the optimizer built
    here has (the CPU's defaults), keeping what the optimizer learned."""
    from fercli.files.checkpoint import optimizer_from_flat, optimizer_to_flat

    w = torch.nn.Parameter(torch.ones(3))
    saved = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    w.grad = torch.full((3,), 2.0)
    saved.step()
    tensors, rest = optimizer_to_flat(saved)
    rest["param_groups"][0].update(fused=True, foreach=False)  # as a CUDA run saves them
    here = torch.optim.SGD([torch.nn.Parameter(torch.ones(3))], lr=0.1, momentum=0.9)
    fresh = {k: here.param_groups[0].get(k) for k in ("fused", "foreach")}
    assert fresh["fused"] is not True
    optimizer_from_flat(here, tensors, rest)
    assert {k: here.param_groups[0].get(k) for k in ("fused", "foreach")} == fresh
    buf = next(iter(here.state.values()))["momentum_buffer"]
    assert torch.equal(buf, torch.full((3,), 2.0))  # the learned state came through


def test_each_rank_draws_its_own_dropout_masks_and_rank_0_the_one_process_masks():
    from fercli.engine.train import dropout_seed

    drop = torch.nn.Dropout(0.5)
    x = torch.ones(4096)

    def mask(seed):
        torch.manual_seed(seed)
        return drop(x) > 0

    step_seed = derived_seed(0, 1, 7)
    masks = [mask(dropout_seed(step_seed, rank)) for rank in range(4)]
    assert torch.equal(masks[0], mask(step_seed))  # a single process is unchanged
    assert all(not torch.equal(a, b) for i, a in enumerate(masks) for b in masks[i + 1 :])
    assert torch.equal(masks[2], mask(dropout_seed(step_seed, 2)))  # reproducible: a resume draws them again
    assert (masks[0] == masks[1]).float().mean() < 0.6  # unrelated, not shifted copies (agreement ~0.5)


def _probe(monkeypatch, timings, others=False):
    """Run the CPU precision probe with patched step timings (seconds per step, in the probe's order:
    fp32, bf16, fp32, bf16) on a CPU said to have native bf16; returns (dtype, the cache file's entries)."""
    import json

    from fercli.engine import device

    it = iter(timings)
    monkeypatch.setattr(device, "_bf16_native", lambda: True)
    monkeypatch.setattr(device, "_time_steps", lambda model, batch, dtype: next(it))
    monkeypatch.setattr(device, "others_running", lambda: others)
    build = lambda: torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))  # noqa: E731
    dtype = device.cpu_training_dtype(build, "probe-test", 64)
    path = device.cache_dir() / "cpu-precision.json"
    cache = json.loads(path.read_text()) if path.exists() else {}
    return dtype, {k: v for k, v in cache.items() if "probe-test" in k}


def test_a_steady_probe_is_cached_and_a_busy_one_is_not(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a"))
    dtype, cached = _probe(monkeypatch, [0.10, 0.05, 0.10, 0.05])  # bf16 2x faster, both steady
    assert dtype == torch.bfloat16 and [v["pick"] for v in cached.values()] == ["bf16"]
    # Another process took the machine during the second round: fp32 looked faster. Used, not cached.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "b"))
    dtype, cached = _probe(monkeypatch, [0.10, 0.30, 0.11, 0.05])
    assert dtype == torch.bfloat16 and cached == {}  # the best of each's two timings still picks bf16
    dtype, cached = _probe(monkeypatch, [0.10, 0.05, 0.10, 0.05], others=True)  # steady, but others running
    assert dtype == torch.bfloat16 and cached == {}
    dtype, cached = _probe(monkeypatch, [0.10, 0.05, 0.10, 0.05])  # a later, steady probe is cached
    assert list(cached.values())[0]["pick"] == "bf16"


def test_a_run_much_faster_than_its_cached_probe_drops_it(monkeypatch, tmp_path):
    from fercli.engine import device

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    _, cached = _probe(monkeypatch, [0.20, 0.40, 0.20, 0.40])  # fp32 picked at 64 / 0.2 = 320 images/s
    assert list(cached.values())[0] == {"fp32": 320.0, "bf16": 160.0, "pick": "fp32"}
    device.check_probe("probe-test", 64, 400.0)  # within 1.3x: kept
    assert _probe(monkeypatch, [])[1]  # (answered from the cache: no timing asked for)
    device.check_probe("probe-test", 64, 900.0)  # the probe ran on a busy machine
    assert _probe(monkeypatch, [0.10, 0.05, 0.10, 0.05])[0] == torch.bfloat16  # probed again


def test_batchnorm_biases_move_bn_bias_lr_times_as_far_and_resume_exactly(synthetic_data, tmp_path):
    """One training step from the recipe's initial weights: with bn_bias_lr 64 each BatchNorm bias moves
    64 times as far as with 1, every other parameter and statistic exactly as far; a run stopped there
    and resumed ends with the weights of a run never stopped."""
    recipe = dict(arch="vgg4s", width=0.125, epochs=1, batch=32, lr=0.01)
    torch.manual_seed(0)  # how set-up builds the network
    start = models.create("vgg4s", 7, width=0.125).state_dict()
    bn_biases = {n for n in start if n.endswith(".bias") and n[: -len("bias")] + "running_mean" in start}
    moved = {}
    for k in (1.0, 64.0):
        run = interrupted_run(synthetic_data, tmp_path / str(k), stop_at_step=1, bn_bias_lr=k, **recipe)
        w = load_file(run / "last.safetensors")
        moved[k] = {n: w[n] - v for n, v in start.items() if v.is_floating_point()}
    assert bn_biases and all(moved[1.0][n].abs().max() > 0 for n in bn_biases)
    for n, d in moved[1.0].items():
        torch.testing.assert_close(moved[64.0][n], d * 64 if n in bn_biases else d, rtol=1e-4, atol=1e-7)
    resumed = _run(synthetic_data, tmp_path / "64.0", resume=str(tmp_path / "64.0" / "train" / "exp"),
                   bn_bias_lr=64.0, **recipe)  # fmt: skip
    full = _run(synthetic_data, tmp_path / "full", bn_bias_lr=64.0, **{**recipe, **NO_AUGMENT})
    for a, b in zip(full["history"], resumed["history"], strict=True):
        assert (a["valid_acc"], a["valid_loss"], a["train_acc"]) == (b["valid_acc"], b["valid_loss"], b["train_acc"])
    w_full, w_res = (load_file(tmp_path / d / "train" / "exp" / "last.safetensors") for d in ("full", "64.0"))
    assert all(torch.equal(w_full[n], w_res[n]) for n in start)
    with pytest.raises(FerError, match=r"bn_bias_lr must be in \(0, 1000\]"):
        build_recipe("cpu", {"bn_bias_lr": 0.0})
